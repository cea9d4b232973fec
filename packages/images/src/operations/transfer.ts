import { deflateRawSync } from 'node:zlib';
import { NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { RawImage } from '../io/raw-image.js';
import { Qcow2Image } from '../qcow2/image.js';
import type { DiskImage, ProgressListener } from '../types.js';
import { createImage } from './create.js';
import { openImage, resolveBacking } from './open.js';

/** Bytes moved per step of compare/commit: large enough for sequential throughput. */
const CHUNK = 2 * 1024 * 1024;
/**
 * Bytes read per step of convert: 2 MiB like qemu-img's buffers, small enough that a chunk is
 * still in the CPU cache when it is scanned for zeros and written (8 MiB measured slower).
 */
const CONVERT_CHUNK = 2 * 1024 * 1024;
/**
 * Chunks in flight in convert: reads run ahead of the (ordered) writes, as qemu-img keeps several
 * requests in flight (`-m`, 8 by default), so one request's wake-up latency hides behind another's.
 */
const CONVERT_DEPTH = 4;
/** Granule of zero detection: 64 KiB compares are memcmp-fast and match the default cluster size. */
const ZERO_GRAIN = 64 * 1024;

/** True when buf[from, to) is all zeros (`zero` is at least `to - from` zero bytes); no allocation. */
function isZero(buf: Buffer, zero: Buffer, from: number, to: number): boolean {
  return zero.compare(buf, from, to, 0, to - from) === 0;
}

/** A layer that can read into a caller's buffer (qcow2 and raw images do). */
interface ReadsInto {
  readInto(out: Buffer, offset: number, zeroed?: boolean): Promise<void>;
}

/** Reads guest bytes into a reused buffer (cleared where the image reads as zeros). */
async function readChunk(image: DiskImage, out: Buffer, offset: number): Promise<void> {
  const into = (image as Partial<ReadsInto>).readInto;
  if (into) await into.call(image, out, offset, false);
  else (await image.read(offset, out.length)).copy(out);
}

/** True when the top of the chain says the run reads as zeros without reading it. */
async function knownZero(image: DiskImage, offset: number, length: number): Promise<number> {
  let len = length;
  for (let layer: DiskImage | undefined = image; layer; layer = layer.backing) {
    if (offset >= layer.virtualSize) return len;
    const ext = await layer.status(offset, Math.min(len, layer.virtualSize - offset));
    len = ext.length;
    if (ext.kind === 'data') return 0;
    if (ext.kind === 'zero') return len;
  }
  return len;
}

const convertSchema = z.object({
  outputFormat: z.enum(['qcow2', 'raw']).default('qcow2'),
  sourceFormat: z.enum(['qcow2', 'raw']).optional(),
  compress: z.boolean().default(false),
  clusterSize: z.number().int().optional(),
  version: z.union([z.literal(2), z.literal(3)]).optional(),
  overwrite: z.boolean().default(false),
  sync: z.boolean().default(false),
});

/** Options for {@link convertImage}. */
export interface ConvertOptions {
  /** Output format (`-O`). Default qcow2. */
  outputFormat?: 'qcow2' | 'raw';
  /** Source format (`-f`); probed when absent. */
  sourceFormat?: 'qcow2' | 'raw';
  /** Compress every cluster of a qcow2 output (`-c`). */
  compress?: boolean;
  /** Cluster size of a qcow2 output. Default 64 KiB. */
  clusterSize?: number;
  /** qcow2 version of the output. Default 3. */
  version?: 2 | 3;
  /** Replace an existing destination (qemu-img does). Default false. */
  overwrite?: boolean;
  /**
   * fsync the output before returning. Default false, like `qemu-img convert`, whose default cache
   * mode for the target (`-t unsafe`) never flushes: the output is complete for every reader once
   * the promise resolves, but not yet durable against power loss. Set it (the CLI's `-t writeback`,
   * `-t none`...) when the file must survive a crash as soon as the conversion returns.
   */
  sync?: boolean;
  /** Called after every chunk. */
  onProgress?: ProgressListener;
}

/**
 * Copies the guest content of `source` (through its backing chain) into a new image at `target`,
 * like `qemu-img convert`: zeros are detected and left unallocated so the output stays sparse;
 * `compress` deflates every cluster. The target is removed again if the conversion fails.
 */
export async function convertImage(
  source: string,
  target: string,
  options: ConvertOptions = {},
): Promise<void> {
  const o = parseInput(convertSchema, { ...options, onProgress: undefined }, 'options');
  if (o.compress && o.outputFormat !== 'qcow2')
    throw new NubesError('InvalidInput', 'options.compress: compression needs qcow2 output', {
      details: { field: 'options.compress' },
    });
  const src = await openImage(source, { format: o.sourceFormat });
  let dst: DiskImage | undefined;
  let created = false;
  try {
    await createImage(target, {
      format: o.outputFormat,
      size: src.virtualSize,
      overwrite: o.overwrite,
      ...(o.clusterSize ? { clusterSize: o.clusterSize } : {}),
      ...(o.version ? { version: o.version } : {}),
    });
    created = true;
    dst = await openImage(target, { writable: true, format: o.outputFormat });
    await copyContent(src, dst, { compress: o.compress, onProgress: options.onProgress, skipZeros: true });
    const out = dst;
    dst = undefined;
    if (out instanceof Qcow2Image) await out.close({ sync: o.sync });
    else {
      try {
        if (o.sync) await out.flush();
      } finally {
        await out.close();
      }
    }
  } catch (error) {
    await dst?.close().catch(() => {});
    if (created) await import('node:fs/promises').then((fs) => fs.rm(target, { force: true }));
    throw error;
  } finally {
    await src.close();
  }
}

/** Copies guest bytes from `src` to a fresh `dst`, skipping zero runs (which `dst` already reads as zero). */
async function copyContent(
  src: DiskImage,
  dst: DiskImage,
  o: { compress: boolean; skipZeros: boolean; onProgress?: ProgressListener | undefined },
): Promise<void> {
  const size = src.virtualSize;
  // Zeros are detected per output cluster (what can stay unallocated), per 4 KiB for raw output
  // (qemu-img's default sparse granularity); zero 64 KiB spans are recognized in one compare.
  const grain = dst instanceof Qcow2Image ? dst.clusterSize : 4096;
  const step = Math.max(CONVERT_CHUNK, grain);
  const zero = Buffer.alloc(Math.max(grain, ZERO_GRAIN));
  const chunks = Math.ceil(size / step);
  const buffers = Array.from({ length: Math.min(CONVERT_DEPTH, chunks) }, () =>
    Buffer.allocUnsafe(Math.min(step, size)),
  );
  // Reads chunk `index` into its ring buffer; undefined when the source's metadata says it is all
  // zeros. Chunk i uses buffer i % depth, which is free again once chunk i - depth is written.
  const fetch = async (index: number): Promise<Buffer | undefined> => {
    const pos = index * step;
    const len = Math.min(step, size - pos);
    if ((await knownZero(src, pos, len)) >= len) return undefined;
    const buf = (buffers[index % buffers.length] as Buffer).subarray(0, len);
    await readChunk(src, buf, pos);
    return buf;
  };
  // Read-ahead ring: up to `depth` chunks are being read while the oldest is scanned and written.
  const pending: Promise<Buffer | undefined>[] = [];
  const readAhead = (index: number) => {
    if (index >= chunks) return;
    const p = fetch(index);
    // A failed write must not leave a read-ahead's rejection unobserved.
    p.catch(() => {});
    pending.push(p);
  };
  for (let i = 0; i < buffers.length; i++) readAhead(i);
  try {
    await copyChunks();
  } catch (error) {
    // Let the read-ahead finish before the caller closes the source under it.
    await Promise.allSettled(pending);
    throw error;
  }

  async function copyChunks(): Promise<void> {
    for (let index = 0; index < chunks; index++) {
      const pos = index * step;
      const len = Math.min(step, size - pos);
      const buf = await (pending.shift() as Promise<Buffer | undefined>);
      if (!buf) {
        readAhead(index + buffers.length);
        o.onProgress?.({ operation: 'convert', done: pos + len, total: size });
        continue;
      }
      if (o.compress && dst instanceof Qcow2Image) {
        for (let at = 0; at < len; at += grain) {
          const end = Math.min(at + grain, len);
          if (isZero(buf, zero, at, end)) continue;
          const plain =
            end - at === grain
              ? buf.subarray(at, end)
              : Buffer.concat([buf.subarray(at, end), Buffer.alloc(grain - (end - at))]);
          if (end - at < grain) {
            await dst.write(pos + at, buf.subarray(at, end));
            continue;
          }
          const packed = deflateRawSync(plain, { windowBits: 12, memLevel: 9 });
          // `plain` may be a view of the reused read buffer: writeCompressed falls back to a plain
          // write of it, which completes before the buffer is reused.
          await dst.writeCompressed((pos + at) / grain, packed, plain);
        }
      } else {
        // Runs of non-zero grains are written with one call each; zero grains are skipped.
        let runStart = -1;
        for (let at = 0; at < len; ) {
          let span = Math.min(grain, len - at);
          let zeroSpan: boolean;
          if (
            grain < ZERO_GRAIN &&
            at % ZERO_GRAIN === 0 &&
            at + ZERO_GRAIN <= len &&
            isZero(buf, zero, at, at + ZERO_GRAIN)
          ) {
            span = ZERO_GRAIN;
            zeroSpan = true;
          } else zeroSpan = isZero(buf, zero, at, at + span);
          if (!zeroSpan && runStart < 0) runStart = at;
          else if (zeroSpan && runStart >= 0) {
            await dst.write(pos + runStart, buf.subarray(runStart, at));
            runStart = -1;
          }
          at += span;
        }
        if (runStart >= 0) await dst.write(pos + runStart, buf.subarray(runStart, len));
      }
      readAhead(index + buffers.length);
      o.onProgress?.({ operation: 'convert', done: pos + len, total: size });
    }
  }
}

/** The outcome of {@link compareImages}. */
export interface CompareResult {
  identical: boolean;
  /** First differing guest offset, when not identical. */
  offset?: number;
  /** Why they differ beyond content (`size` in strict mode). */
  reason?: 'content' | 'size';
}

/**
 * Compares the guest content of two images like `qemu-img compare`: with different sizes the
 * extra part of the larger must read as zeros, unless `strict`.
 */
export async function compareImages(
  a: string,
  b: string,
  options: { strict?: boolean; onProgress?: ProgressListener } = {},
): Promise<CompareResult> {
  const left = await openImage(a);
  try {
    const right = await openImage(b);
    try {
      if (options.strict && left.virtualSize !== right.virtualSize)
        return { identical: false, reason: 'size', offset: Math.min(left.virtualSize, right.virtualSize) };
      const size = Math.max(left.virtualSize, right.virtualSize);
      for (let pos = 0; pos < size; pos += CHUNK) {
        const len = Math.min(CHUNK, size - pos);
        const [x, y] = await Promise.all([readPadded(left, pos, len), readPadded(right, pos, len)]);
        if (!x.equals(y)) {
          let i = 0;
          while (x[i] === y[i]) i++;
          return { identical: false, offset: pos + Math.floor(i / 512) * 512, reason: 'content' };
        }
        options.onProgress?.({ operation: 'compare', done: pos + len, total: size });
      }
      return { identical: true };
    } finally {
      await right.close();
    }
  } finally {
    await left.close();
  }
}

async function readPadded(image: DiskImage, offset: number, length: number): Promise<Buffer> {
  if (offset >= image.virtualSize) return Buffer.alloc(length);
  const n = Math.min(length, image.virtualSize - offset);
  const data = await image.read(offset, n);
  return n === length ? data : Buffer.concat([data, Buffer.alloc(length - n)]);
}

/**
 * Merges an overlay into its backing image (`qemu-img commit`): every cluster the overlay
 * defines is written into the backing file, then the overlay is emptied unless `keep`.
 */
export async function commitImage(
  path: string,
  options: { keep?: boolean; onProgress?: ProgressListener } = {},
): Promise<void> {
  const top = await openImage(path, { writable: !options.keep, backing: false });
  try {
    if (!(top instanceof Qcow2Image) || !top.header.backingFile)
      throw new NubesError('InvalidInput', `${path}: image has no backing file to commit into`, {
        details: { file: path, field: 'path' },
      });
    const backingPath = resolveBacking(path, top.header.backingFile);
    const fmt =
      top.header.backingFormat === 'raw' || top.header.backingFormat === 'qcow2'
        ? top.header.backingFormat
        : undefined;
    const base = await openImage(backingPath, { writable: true, format: fmt });
    try {
      const size = Math.min(top.virtualSize, base.virtualSize);
      let pos = 0;
      while (pos < size) {
        const ext = await top.status(pos, Math.min(CHUNK, size - pos));
        if (ext.kind === 'data') await base.write(pos, await top.read(pos, ext.length));
        else if (ext.kind === 'zero') await base.writeZeroes(pos, ext.length);
        pos += ext.length;
        options.onProgress?.({ operation: 'commit', done: pos, total: size });
      }
      await base.flush();
    } finally {
      await base.close();
    }
    if (!options.keep) await top.makeEmpty();
  } finally {
    await top.close();
  }
}

/**
 * Changes an overlay's backing file (`qemu-img rebase`). Safe mode first copies into the overlay
 * every cluster where the old and the new backing differ, so the guest content is unchanged;
 * `unsafe` (`-u`) only rewrites the header. An empty `backingFile` removes the backing file.
 */
export async function rebaseImage(
  path: string,
  backingFile: string,
  options: { backingFormat?: 'qcow2' | 'raw'; unsafe?: boolean; onProgress?: ProgressListener } = {},
): Promise<void> {
  const name = parseInput(z.string().max(1023), backingFile, 'backingFile');
  const top = await openImage(path, { writable: true, backing: !options.unsafe });
  try {
    if (!(top instanceof Qcow2Image))
      throw new NubesError('InvalidInput', `${path}: only qcow2 images have a backing file`, {
        details: { field: 'path' },
      });
    let format = options.backingFormat;
    if (name) {
      const fresh = await openImage(resolveBacking(path, name), { format });
      format ??= fresh.format;
      try {
        if (!options.unsafe) {
          const size = top.virtualSize;
          const cs = top.clusterSize;
          for (let pos = 0; pos < size; ) {
            const ext = await top.status(pos, Math.min(CHUNK, size - pos));
            if (ext.kind === 'unallocated') {
              for (let at = ext.offset; at < ext.offset + ext.length; at += cs) {
                const len = Math.min(cs, ext.offset + ext.length - at);
                const old = await top.read(at, len);
                const now = await readPadded(fresh, at, len);
                if (!old.equals(now)) await top.write(at, old);
              }
            }
            pos += ext.length;
            options.onProgress?.({ operation: 'rebase', done: pos, total: size });
          }
        }
      } finally {
        await fresh.close();
      }
    } else if (!options.unsafe) {
      // No new backing: everything the old chain provides moves into the overlay.
      for (let pos = 0; pos < top.virtualSize; ) {
        const ext = await top.status(pos, Math.min(CHUNK, top.virtualSize - pos));
        if (ext.kind === 'unallocated') {
          const data = await top.read(pos, ext.length);
          if (!data.equals(Buffer.alloc(ext.length))) await top.write(pos, data);
        }
        pos += ext.length;
      }
    }
    await top.flush();
    top.header.backingFile = name || undefined;
    top.header.backingFormat = name ? format : undefined;
    await top.rewriteHeader();
  } finally {
    await top.close();
  }
}

/** Grows an image to `size` bytes (`qemu-img resize`); shrinking is refused unless `shrink` on raw. */
export async function resizeImage(
  path: string,
  size: number,
  options: { shrink?: boolean } = {},
): Promise<void> {
  const bytes = parseInput(
    z
      .number()
      .int()
      .min(0)
      .max(2 ** 50),
    size,
    'size',
  );
  const image = await openImage(path, { writable: true, backing: false });
  try {
    const target = Math.ceil(bytes / 512) * 512;
    if (image instanceof RawImage) {
      if (target < image.virtualSize && !options.shrink)
        throw new NubesError('InvalidInput', `size: shrinking ${path} needs shrink: true`, {
          details: { field: 'size' },
        });
      await image.resize(target);
    } else if (image instanceof Qcow2Image) {
      if (target < image.virtualSize)
        throw new NubesError('Unsupported', `${path}: shrinking qcow2 images is not supported`);
      await image.grow(target);
    }
  } finally {
    await image.close();
  }
}
