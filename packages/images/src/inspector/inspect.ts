import { open } from 'node:fs/promises';
import { isNubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { InvalidImage, type InvalidImageReason } from '../errors.js';
import { hostError } from '../io/host-file.js';
import {
  entryOffset,
  geometry,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  parseHeader,
  QCOW2_MAGIC,
} from '../qcow2/format.js';

/** Formats the inspector recognizes. */
export type InspectedFormat = 'qcow2' | 'raw' | 'vmdk' | 'vhd' | 'vhdx' | 'iso';

/** What the inspector found in an image it accepted. */
export interface InspectResult {
  format: InspectedFormat;
  /** Guest-visible size in bytes. */
  virtualSize: number;
  /** Size of the file in bytes. */
  fileSize: number;
  /** Bytes the inspector read to decide. */
  bytesRead: number;
}

/** Random-access bytes of an untrusted image (a file, an upload buffer...). */
export interface ImageSource {
  readonly size: number;
  /** Reads up to `length` bytes at `offset` (fewer at the end). */
  read(offset: number, length: number): Promise<Buffer>;
}

const inspectSchema = z.object({
  maxVirtualSize: z
    .number()
    .int()
    .positive()
    .default(64 * 2 ** 40),
  maxTableBytes: z
    .number()
    .int()
    .positive()
    .default(32 * 2 ** 20),
  maxReadBytes: z
    .number()
    .int()
    .positive()
    .default(8 * 2 ** 20),
});

/** Bounds for {@link inspectImage}. */
export type InspectOptions = z.input<typeof inspectSchema>;

function reject(reason: InvalidImageReason, message: string): never {
  throw new InvalidImage(reason, message);
}

/** A source that counts bytes and refuses to read past its budget. */
class Budget {
  used = 0;
  constructor(
    private readonly source: ImageSource,
    private readonly limit: number,
  ) {}
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset >= this.source.size || length <= 0) return Buffer.alloc(0);
    const n = Math.min(length, this.source.size - offset);
    if (this.used + n > this.limit)
      reject('table-too-large', `inspection would read more than ${this.limit} bytes`);
    this.used += n;
    const data = await this.source.read(offset, n);
    return data.length > n ? data.subarray(0, n) : data;
  }
}

/**
 * Inspects an untrusted image from any byte source: detects the format from magic bytes (refusing
 * to guess when two match), reports the virtual size, and rejects what is dangerous to hand to
 * QEMU. Reads a bounded number of bytes and never opens a path named inside the image. Every
 * rejection is an {@link InvalidImage} with a reason code.
 */
export async function inspectSource(
  source: ImageSource,
  options: InspectOptions = {},
): Promise<InspectResult> {
  const o = parseInput(inspectSchema, options, 'options');
  const io = new Budget(source, o.maxReadBytes);
  const size = source.size;
  const head = await io.read(0, 512);
  const candidates: InspectedFormat[] = [];
  if (head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC) candidates.push('qcow2');
  if (
    head.subarray(0, 4).toString('latin1') === 'KDMV' ||
    head.subarray(0, 21).toString('latin1') === '# Disk DescriptorFile'
  )
    candidates.push('vmdk');
  if (head.subarray(0, 8).toString('latin1') === 'vhdxfile') candidates.push('vhdx');
  const footer = size >= 512 ? await io.read(size - 512, 512) : Buffer.alloc(0);
  if (
    footer.subarray(0, 8).toString('latin1') === 'conectix' ||
    head.subarray(0, 8).toString('latin1') === 'conectix'
  )
    candidates.push('vhd');
  if (size >= 0x8006) {
    const pvd = await io.read(0x8001, 5);
    if (pvd.toString('latin1') === 'CD001') candidates.push('iso');
  }
  if (candidates.length > 1)
    reject('ambiguous-format', `image matches several formats: ${candidates.join(', ')}`);
  const format = candidates[0] ?? 'raw';
  let virtualSize: number;
  try {
    virtualSize = await inspectFormat(format, io, size, head, footer, o);
  } catch (error) {
    if (error instanceof InvalidImage) throw error;
    // A parser that trips over hostile bytes is still a rejection, never a crash.
    throw new InvalidImage('bad-header', `malformed ${format} image: ${(error as Error).message}`);
  }
  if (!Number.isSafeInteger(virtualSize) || virtualSize < 0 || virtualSize > o.maxVirtualSize)
    reject('bad-virtual-size', `virtual size ${virtualSize} is above the limit of ${o.maxVirtualSize}`);
  return { format, virtualSize, fileSize: size, bytesRead: io.used };
}

async function inspectFormat(
  format: InspectedFormat,
  io: Budget,
  size: number,
  head: Buffer,
  footer: Buffer,
  o: z.output<typeof inspectSchema>,
): Promise<number> {
  let virtualSize: number;
  switch (format) {
    case 'qcow2':
      virtualSize = await inspectQcow2(io, size, o);
      break;
    case 'vmdk':
      virtualSize = await inspectVmdk(io, head);
      break;
    case 'vhd':
      virtualSize = inspectVhd(footer.subarray(0, 8).toString('latin1') === 'conectix' ? footer : head);
      break;
    case 'vhdx':
      virtualSize = await inspectVhdx(io, size);
      break;
    default:
      virtualSize = size;
  }
  return virtualSize;
}

async function inspectQcow2(io: Budget, size: number, o: z.output<typeof inspectSchema>): Promise<number> {
  const first = await io.read(0, 512);
  if (first.length < 72) reject('truncated', 'qcow2 header is truncated');
  const bits = first.readUInt32BE(20);
  if (bits < 9 || bits > 21) reject('bad-cluster-size', `cluster_bits ${bits} is outside 9..21`);
  const cs = 2 ** bits;
  const headBuf = cs > 512 ? Buffer.concat([first, await io.read(512, cs - 512)]) : first;
  let h: ReturnType<typeof parseHeader>;
  try {
    h = parseHeader(headBuf, 'image');
  } catch (error) {
    if (error instanceof InvalidImage) throw error;
    if (isNubesError(error, 'Unsupported'))
      reject(error.details.feature === 'encryption' ? 'encrypted' : 'unsupported-feature', error.message);
    throw error;
  }
  if (h.backingFile !== undefined || h.backingFileOffset !== 0)
    reject('backing-file', 'image names a backing file');
  if (h.dataFile !== undefined || (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n)
    reject('data-file', 'image uses an external data file');
  if ((h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) reject('corrupt', 'image is marked corrupt');
  if (h.size > o.maxVirtualSize) reject('bad-virtual-size', `virtual size ${h.size} is above the limit`);
  const g = geometry(h.clusterBits, h.refcountOrder, (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n);
  const l1Bytes = h.l1Size * 8;
  if (l1Bytes > o.maxTableBytes) reject('table-too-large', `L1 table of ${l1Bytes} bytes is above the limit`);
  if (h.l1Size < Math.ceil(h.size / cs / g.l2Entries))
    reject('bad-header', 'L1 table is too small for the virtual size');
  const rtBytes = h.refcountTableClusters * cs;
  if (rtBytes > o.maxTableBytes)
    reject('table-too-large', `refcount table of ${rtBytes} bytes is above the limit`);
  const regions: [string, number, number][] = [['header', 0, cs]];
  const region = (name: string, offset: number, length: number) => {
    if (offset % cs !== 0) reject('offset-out-of-range', `${name} at ${offset} is not cluster aligned`);
    if (offset + length > size)
      reject('offset-out-of-range', `${name} at ${offset} (+${length}) is past the end of the file`);
    regions.push([name, offset, Math.max(length, 1)]);
  };
  if (l1Bytes > 0) region('L1 table', h.l1TableOffset, l1Bytes);
  if (rtBytes === 0) reject('bad-header', 'refcount table is empty');
  region('refcount table', h.refcountTableOffset, rtBytes);
  if (h.nbSnapshots > 65536) reject('bad-snapshot-table', `${h.nbSnapshots} snapshots`);
  if (h.nbSnapshots > 0) region('snapshot table', h.snapshotsOffset, h.nbSnapshots * 40);
  regions.sort((a, b) => a[1] - b[1]);
  for (let i = 1; i < regions.length; i++) {
    const [pn, po, pl] = regions[i - 1] as [string, number, number];
    const [n, off] = regions[i] as [string, number, number];
    if (off < po + pl) reject('overlapping-metadata', `${n} overlaps ${pn}`);
  }
  // Every L2 table and refcount block must lie inside the file and clear of the fixed metadata.
  const checkPointers = async (name: string, offset: number, bytes: number) => {
    const table = await io.read(offset, bytes);
    for (let i = 0; i + 8 <= table.length; i += 8) {
      const hi = table.readUInt32BE(i);
      const lo = table.readUInt32BE(i + 4);
      const target = name === 'L1' ? entryOffset(hi, lo) : hi * 2 ** 32 + ((lo & ~511) >>> 0);
      if (target === 0) continue;
      if (target % cs !== 0 || target + cs > size)
        reject('offset-out-of-range', `${name} entry ${i / 8} points outside the file`);
      for (const [rn, ro, rl] of regions)
        if (target < ro + rl && target + cs > ro)
          reject('overlapping-metadata', `${name} entry ${i / 8} overlaps the ${rn}`);
    }
  };
  await checkPointers('L1', h.l1TableOffset, l1Bytes);
  await checkPointers('refcount table', h.refcountTableOffset, rtBytes);
  return h.size;
}

async function inspectVmdk(io: Budget, head: Buffer): Promise<number> {
  if (head.subarray(0, 4).toString('latin1') !== 'KDMV')
    reject('external-extent', 'a VMDK descriptor file describes extents in other files');
  if (head.length < 44) reject('truncated', 'VMDK header is truncated');
  const capacity = Number(head.readBigUInt64LE(12));
  const descOffset = Number(head.readBigUInt64LE(28));
  const descSize = Number(head.readBigUInt64LE(36));
  if (descOffset === 0 || descSize === 0) reject('bad-header', 'VMDK has no embedded descriptor');
  if (descSize * 512 > 64 * 1024) reject('table-too-large', 'VMDK descriptor is too large');
  const text = (await io.read(descOffset * 512, descSize * 512)).toString('latin1').replace(/\0.*$/s, '');
  const createType = /createType\s*=\s*"([^"]*)"/.exec(text)?.[1];
  if (createType !== 'monolithicSparse' && createType !== 'streamOptimized')
    reject('external-extent', `VMDK createType ${createType ?? '(none)'} may reference other files`);
  const extents = text.split('\n').filter((line) => /^\s*(RW|RDONLY|NOACCESS)\s/.test(line));
  if (extents.length !== 1) reject('external-extent', `VMDK lists ${extents.length} extents`);
  if (/parentFileNameHint/.test(text)) reject('backing-file', 'VMDK names a parent file');
  return capacity * 512;
}

function inspectVhd(footer: Buffer): number {
  if (footer.length < 512) reject('truncated', 'VHD footer is truncated');
  const diskType = footer.readUInt32BE(60);
  if (diskType === 4) reject('backing-file', 'differencing VHD names a parent file');
  if (diskType !== 2 && diskType !== 3) reject('bad-header', `VHD disk type ${diskType} is unknown`);
  return Number(footer.readBigUInt64BE(48));
}

const VHDX_METADATA_REGION = '06a27c8b-9047-9a4b-b8fe-575f050f886e';
const VHDX_VIRTUAL_SIZE = '2442a52f-1bcd-7648-b211-5dbed83bf4b8';
const VHDX_PARENT_LOCATOR = '2d5fd3a8-0bb3-4d45-abf7-d3d84834ab0c';

function guid(buf: Buffer, at: number): string {
  const hex = buf.subarray(at, at + 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function inspectVhdx(io: Budget, size: number): Promise<number> {
  const regions = await io.read(0x30000, 65536);
  if (regions.subarray(0, 4).toString('latin1') !== 'regi')
    reject('bad-header', 'VHDX region table is missing');
  const count = regions.readUInt32LE(8);
  if (count > 2047) reject('table-too-large', 'VHDX region table is too large');
  let metaOffset = -1;
  let metaLength = 0;
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    if (guid(regions, at) === VHDX_METADATA_REGION) {
      metaOffset = Number(regions.readBigUInt64LE(at + 16));
      metaLength = regions.readUInt32LE(at + 24);
    }
  }
  if (metaOffset < 0 || metaOffset + 32 > size)
    reject('offset-out-of-range', 'VHDX metadata region is missing or outside the file');
  const meta = await io.read(metaOffset, Math.min(metaLength, 65536));
  if (meta.subarray(0, 8).toString('latin1') !== 'metadata')
    reject('bad-header', 'VHDX metadata table is missing');
  const entries = meta.readUInt16LE(10);
  if (entries > 2047) reject('table-too-large', 'VHDX metadata table is too large');
  for (let i = 0; i < entries; i++) {
    const at = 32 + i * 32;
    if (at + 32 > meta.length) reject('truncated', 'VHDX metadata table is truncated');
    const id = guid(meta, at);
    if (id === VHDX_PARENT_LOCATOR) reject('backing-file', 'VHDX has a parent locator');
    if (id === VHDX_VIRTUAL_SIZE) {
      const off = meta.readUInt32LE(at + 16);
      const value = await io.read(metaOffset + off, 8);
      if (value.length < 8) reject('offset-out-of-range', 'VHDX virtual size is outside the file');
      return Number(value.readBigUInt64LE(0));
    }
  }
  return reject('bad-header', 'VHDX has no virtual size');
}

/** Inspects an image file (see {@link inspectSource}); a missing file is `NotFound`. */
export async function inspectImage(path: string, options: InspectOptions = {}): Promise<InspectResult> {
  const p = parseInput(z.string().min(1), path, 'path');
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(p, 'r');
  } catch (cause) {
    throw hostError(p, cause);
  }
  try {
    const { size } = await handle.stat();
    return await inspectSource(
      {
        size,
        read: async (offset, length) => {
          const buf = Buffer.alloc(length);
          const { bytesRead } = await handle.read(buf, 0, length, offset);
          return buf.subarray(0, bytesRead);
        },
      },
      options,
    );
  } finally {
    await handle.close();
  }
}

/** Inspects an in-memory image (an upload held in a buffer). */
export function inspectBuffer(data: Uint8Array, options: InspectOptions = {}): Promise<InspectResult> {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
  return inspectSource({ size: buf.length, read: async (o, l) => buf.subarray(o, o + l) }, options);
}
