/**
 * @nubes/images: a pure TypeScript qcow2 engine (read, write, create, check, convert, snapshots),
 * a qemu-img-compatible CLI (`nubes-img`) and a safe inspector for untrusted image uploads.
 *
 * @packageDocumentation
 */

export type { CliIo } from './cli/main.js';
export { parseSize, runCli } from './cli/main.js';
export type { InvalidImageReason } from './errors.js';
export { InvalidImage, isInvalidImage } from './errors.js';
export type { ImageSource, InspectedFormat, InspectOptions, InspectResult } from './inspector/inspect.js';
export { inspectBuffer, inspectImage, inspectSource } from './inspector/inspect.js';
export { checkExitCode, checkImage, checkResultJson } from './operations/check.js';
export type { CreatedImage, CreateImageOptions } from './operations/create.js';
export { createImage } from './operations/create.js';
export type { ImageInfo } from './operations/info.js';
export { imageInfo } from './operations/info.js';
export type { MapEntry } from './operations/map.js';
export { mapImage } from './operations/map.js';
export type { MeasureResult } from './operations/measure.js';
export { measureImage } from './operations/measure.js';
export type { OpenImageOptions } from './operations/open.js';
export { openImage } from './operations/open.js';
export { snapshotApply, snapshotCreate, snapshotDelete, snapshotList } from './operations/snapshot.js';
export type { CompareResult, ConvertOptions } from './operations/transfer.js';
export { commitImage, compareImages, convertImage, rebaseImage, resizeImage } from './operations/transfer.js';
export type { CheckResult, RepairMode } from './qcow2/check.js';
export type { Qcow2Header } from './qcow2/format.js';
export { Qcow2Image } from './qcow2/image.js';
export type { SnapshotEntry, SnapshotInfo } from './qcow2/snapshots.js';
export type { DiskImage, Extent, ExtentKind, ImageFormat, ProgressEvent, ProgressListener } from './types.js';
