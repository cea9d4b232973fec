import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isNubesError, NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { badImage } from '../errors.js';
import { HostFile, hostError } from '../io/host-file.js';
import { RawImage } from '../io/raw-image.js';
import { QCOW2_MAGIC } from '../qcow2/format.js';
import { Qcow2Image } from '../qcow2/image.js';
import type { DiskImage, ImageFormat } from '../types.js';

/** Options for {@link openImage}. */
export interface OpenImageOptions {
  /** Open the top image for writing (backing images are always read-only). Default false. */
  writable?: boolean;
  /** The top image's format; probed from its magic when absent (anything not qcow2 is raw). */
  format?: ImageFormat;
  /** Open the backing chain too. Default true; false reads unallocated areas as zeros. */
  backing?: boolean;
  /** Longest backing chain accepted, the guard against absurdly deep chains. Default 64. */
  maxChainDepth?: number;
  /** L2 tables cached per qcow2 image. Default 1024. */
  l2CacheTables?: number;
}

const formatSchema = z.enum(['qcow2', 'raw']);
const openSchema = z.object({
  writable: z.boolean().default(false),
  format: formatSchema.optional(),
  backing: z.boolean().default(true),
  maxChainDepth: z.number().int().min(1).max(1024).default(64),
  l2CacheTables: z
    .number()
    .int()
    .min(1)
    .max(1 << 20)
    .default(1024),
});

/** Probes a file's format from its first bytes: qcow2 by magic, anything else raw (as qemu-img falls back). */
export async function probeFormat(file: HostFile): Promise<ImageFormat> {
  const head = await file.readAt(0, 4);
  return head.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
}

/** Resolves a backing file name the way QEMU does: relative names are relative to the overlay's directory. */
export function resolveBacking(overlayPath: string, backingName: string): string {
  return isAbsolute(backingName) ? backingName : resolve(dirname(overlayPath), backingName);
}

/**
 * Opens a disk image and (by default) its whole backing chain. Relative backing names resolve
 * against the overlay's directory; a missing backing file, a cycle or a chain deeper than
 * `maxChainDepth` is a typed error naming the file, and nothing stays open after a failure.
 *
 * @example
 * ```ts
 * const image = await openImage('/var/lib/images/vm1.qcow2', { writable: true });
 * await image.write(0, Buffer.from('hello'));
 * await image.close();
 * ```
 */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<DiskImage> {
  const p = parseInput(z.string().min(1), path, 'path');
  const o = parseInput(openSchema, options, 'options');
  return openLayer(p, o, new Set(), 0);
}

async function openLayer(
  path: string,
  o: z.output<typeof openSchema>,
  seen: Set<string>,
  depth: number,
): Promise<DiskImage> {
  let real: string;
  try {
    real = await realpath(path);
  } catch (cause) {
    throw hostError(path, cause);
  }
  if (seen.has(real)) throw badImage(path, 'backing-cycle', 'backing chain loops back to this image');
  if (depth >= o.maxChainDepth)
    throw badImage(path, 'backing-too-deep', `backing chain is deeper than ${o.maxChainDepth}`);
  seen.add(real);
  const writable = o.writable && depth === 0;
  const file = await HostFile.open(path, writable);
  let image: DiskImage | undefined;
  try {
    const format = (depth === 0 ? o.format : undefined) ?? (await probeFormat(file));
    if (format === 'raw') return new RawImage(file, !writable);
    let dataFile: HostFile | undefined;
    const peek = await file.readAt(0, Math.min(file.size, 65536));
    const dataName = dataFileName(peek);
    if (dataName !== undefined) dataFile = await HostFile.open(resolveBacking(path, dataName), false);
    const q = await Qcow2Image.fromFile(file, {
      readOnly: !writable,
      dataFile,
      l2CacheTables: o.l2CacheTables,
    });
    image = q;
    const name = q.header.backingFile;
    if (name && o.backing) {
      const backingPath = resolveBacking(path, name);
      const fmt =
        q.header.backingFormat === 'raw' || q.header.backingFormat === 'qcow2'
          ? q.header.backingFormat
          : undefined;
      try {
        q.backing = await openLayer(backingPath, { ...o, format: fmt }, seen, depth + 1);
      } catch (error) {
        if (isNubesError(error, 'NotFound'))
          throw new NubesError('NotFound', `${path}: backing file ${backingPath} does not exist`, {
            cause: error,
            details: { file: path, backingFile: backingPath },
          });
        throw error;
      }
      if (fmt === undefined && q.header.backingFormat) {
        await q.backing.close();
        throw new NubesError(
          'Unsupported',
          `${path}: backing format ${q.header.backingFormat} is not supported`,
          {
            details: { file: path },
          },
        );
      }
    }
    return q;
  } catch (error) {
    if (image) await image.close().catch(() => {});
    else await file.close().catch(() => {});
    throw error;
  }
}

/** The external data file name from a qcow2 header cluster, without a full parse (parseHeader validates later). */
function dataFileName(head: Buffer): string | undefined {
  if (head.length < 104 || head.readUInt32BE(0) !== QCOW2_MAGIC || head.readUInt32BE(4) !== 3)
    return undefined;
  if ((head.readUInt32BE(76) & 4) === 0) return undefined;
  let at = head.readUInt32BE(100);
  while (at + 8 <= head.length) {
    const type = head.readUInt32BE(at);
    const len = head.readUInt32BE(at + 4);
    if (type === 0) break;
    if (type === 0x44415441 && at + 8 + len <= head.length)
      return head.toString('utf8', at + 8, at + 8 + len);
    at += 8 + ((len + 7) & ~7);
  }
  return undefined;
}

/** Re-exported for callers that validate a format argument the same way. */
export const imageFormatSchema = formatSchema;
