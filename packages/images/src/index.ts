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
export type { ApplyOptions, ApplyResult } from './oci/apply.js';
export { applyLayer, writableDir } from './oci/apply.js';
export type { ParsedDigest } from './oci/digest.js';
export { chainIds, parseDigest } from './oci/digest.js';
export type { Descriptor, ImageConfig, ImageLayer, LoadImageOptions, OciImage } from './oci/layout.js';
export { blobFile, loadOciImage, openLayer } from './oci/layout.js';
export type { Mount } from './oci/lowerdir.js';
export { commonDir, compactOverlayOptions, MOUNT_OPTIONS_LIMIT } from './oci/lowerdir.js';
export type { MountOptions } from './oci/mount.js';
export { mountAll, unmount } from './oci/mount.js';
export type { LayerRefusal } from './oci/paths.js';
export { entryPath, layerRefused, symlinkStaysInside } from './oci/paths.js';
export type {
  OverlaySnapshotterOptions,
  SnapshotDetails,
  SnapshotKind,
  Snapshotter,
  SnapshotUsage,
} from './oci/snapshotter.js';
export { OverlaySnapshotter } from './oci/snapshotter.js';
export type { UnpackedImage, UnpackedLayer, UnpackOptions } from './oci/unpack.js';
export { unpackOciImage } from './oci/unpack.js';
export type { EntryMeaning, WhiteoutStep } from './oci/whiteouts.js';
export { classifyEntry, planWhiteouts } from './oci/whiteouts.js';
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
export type { ByteRange, StagedBlob, StageOptions } from './store/blob-store.js';
export { LocalBlobStore } from './store/blob-store.js';
export type {
  DownloadRange,
  ImageDownload,
  ImageStoreOptions,
  InstanceDisk,
  PrepareDiskOptions,
  SweepReport,
  UploadOptions,
  WebImportOptions,
} from './store/image-store.js';
export { ImageStore } from './store/image-store.js';
export type {
  ContainerFormat,
  CreateImageRecordInput,
  DiskFormat,
  ImagePage,
  ImageRecord,
  ListImagesOptions,
  MemberRecord,
  MemberStatus,
  UpdateImageRecordInput,
  Visibility,
} from './store/records.js';
export {
  CONTAINER_FORMATS,
  DISK_FORMATS,
  inspectedFormatOf,
  selectImages,
  VISIBILITIES,
} from './store/records.js';
export type { ImageStatus } from './store/status.js';
export { assertTransition, canTransition, IMAGE_STATUSES, IMAGE_TRANSITIONS } from './store/status.js';
export type { DiskImage, Extent, ExtentKind, ImageFormat, ProgressEvent, ProgressListener } from './types.js';
