/**
 * The qcow2 on-disk format as pure functions over buffers: header and header extensions, L1/L2
 * entries, refcount entries. No file I/O here, so the inspector and the engine share one parser.
 */
import { badImage, unsupported } from '../errors.js';

/** "QFI\xfb", the first four bytes of every qcow2 file. */
export const QCOW2_MAGIC = 0x514649fb;
/** Smallest and largest cluster size the specification (and QEMU) allow, as log2. */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Length of a version 3 header as QEMU writes it (104 bytes plus compression type and padding). */
export const V3_HEADER_LENGTH = 112;
/** QEMU refuses backing file names longer than this. */
export const MAX_BACKING_NAME = 1023;

/** Header extension types. */
export const EXT_END = 0;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

/** Incompatible feature bits. */
export const INCOMPAT_DIRTY = 1n;
export const INCOMPAT_CORRUPT = 2n;
export const INCOMPAT_DATA_FILE = 4n;
export const INCOMPAT_COMPRESSION = 8n;
export const INCOMPAT_EXTL2 = 16n;
/** Every incompatible bit this engine understands; any other one makes it refuse the image. */
export const KNOWN_INCOMPAT =
  INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/** Compatible feature bits. */
export const COMPAT_LAZY_REFCOUNTS = 1n;
/** Autoclear feature bits. */
export const AUTOCLEAR_BITMAPS = 1n;
export const AUTOCLEAR_DATA_FILE_RAW = 2n;

/** One entry of the feature name table extension. */
export interface FeatureName {
  type: 'incompatible' | 'compatible' | 'autoclear';
  bit: number;
  name: string;
}

/** The bitmaps extension: where the bitmap directory is (bitmaps are listed, never modified). */
export interface BitmapsExtension {
  count: number;
  directorySize: number;
  directoryOffset: number;
}

/** A parsed qcow2 header with its extensions. Offsets and sizes are plain numbers (below 2^53). */
export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  featureNames: FeatureName[];
  bitmaps?: BitmapsExtension;
  hasCryptoHeader: boolean;
  /** Extensions this engine does not interpret, kept so that rewriting the header preserves them. */
  otherExtensions: { type: number; data: Buffer }[];
}

/** Reads a big-endian u64 as a number, or throws when it does not fit in 53 bits. */
export function readU64(buf: Buffer, at: number, file: string, what: string): number {
  const hi = buf.readUInt32BE(at);
  const lo = buf.readUInt32BE(at + 4);
  if (hi >= 0x200000)
    throw badImage(file, 'offset-out-of-range', `${what} is too large (${hi * 2 ** 32 + lo})`);
  return hi * 2 ** 32 + lo;
}

/** Writes a number (below 2^53) as a big-endian u64. */
export function writeU64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Cluster bits from the first 24 bytes, for sizing the read of the whole header cluster. */
export function peekClusterBits(buf: Buffer, file: string): number {
  if (buf.length < 24) throw badImage(file, 'truncated', 'file is too short for a qcow2 header');
  if (buf.readUInt32BE(0) !== QCOW2_MAGIC)
    throw badImage(file, 'unknown-format', 'not a qcow2 image (bad magic)');
  const bits = buf.readUInt32BE(20);
  if (bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS)
    throw badImage(file, 'bad-cluster-size', `cluster_bits ${bits} is outside 9..21`);
  return bits;
}

/**
 * Parses the header cluster (or as much of it as the file has). Validates what can be validated
 * without the rest of the file; refuses encryption and unknown incompatible features as QEMU does.
 */
export function parseHeader(buf: Buffer, file: string): Qcow2Header {
  const clusterBits = peekClusterBits(buf, file);
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3)
    throw badImage(file, 'bad-version', `unsupported qcow2 version ${version}`);
  if (buf.length < 72) throw badImage(file, 'truncated', 'header is truncated');
  const clusterSize = 2 ** clusterBits;
  const h: Qcow2Header = {
    version,
    backingFileOffset: readU64(buf, 8, file, 'backing_file_offset'),
    backingFileSize: buf.readUInt32BE(16),
    clusterBits,
    size: readU64(buf, 24, file, 'size'),
    cryptMethod: buf.readUInt32BE(32),
    l1Size: buf.readUInt32BE(36),
    l1TableOffset: readU64(buf, 40, file, 'l1_table_offset'),
    refcountTableOffset: readU64(buf, 48, file, 'refcount_table_offset'),
    refcountTableClusters: buf.readUInt32BE(56),
    nbSnapshots: buf.readUInt32BE(60),
    snapshotsOffset: readU64(buf, 64, file, 'snapshots_offset'),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: 72,
    compressionType: 0,
    featureNames: [],
    hasCryptoHeader: false,
    otherExtensions: [],
  };
  if (version === 3) {
    if (buf.length < 104) throw badImage(file, 'truncated', 'version 3 header is truncated');
    h.incompatibleFeatures = buf.readBigUInt64BE(72);
    h.compatibleFeatures = buf.readBigUInt64BE(80);
    h.autoclearFeatures = buf.readBigUInt64BE(88);
    h.refcountOrder = buf.readUInt32BE(96);
    h.headerLength = buf.readUInt32BE(100);
    if (h.headerLength < 104 || h.headerLength > Math.min(buf.length, clusterSize))
      throw badImage(file, 'bad-header', `header_length ${h.headerLength} is invalid`);
    if (h.headerLength > 104) h.compressionType = buf.readUInt8(104);
  }
  if (h.refcountOrder > 6)
    throw badImage(file, 'bad-refcount-order', `refcount_order ${h.refcountOrder} > 6`);
  if (h.cryptMethod !== 0) throw unsupported(file, 'encryption', 'encrypted qcow2 images are not supported');
  const unknown = h.incompatibleFeatures & ~KNOWN_INCOMPAT;
  if (unknown !== 0n) {
    throw unsupported(
      file,
      'incompatible-features',
      `unsupported incompatible features 0x${unknown.toString(16)}`,
    );
  }
  if ((h.incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n && h.compressionType > 1)
    throw unsupported(file, 'compression-type', `unknown compression type ${h.compressionType}`);
  if ((h.incompatibleFeatures & INCOMPAT_COMPRESSION) === 0n && h.compressionType !== 0)
    throw badImage(file, 'bad-header', 'compression type set without the compression-type feature bit');
  parseExtensions(buf, h, file, clusterSize);
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > MAX_BACKING_NAME || h.backingFileSize === 0)
      throw badImage(file, 'bad-header', `backing file name length ${h.backingFileSize} is invalid`);
    if (h.backingFileOffset + h.backingFileSize > Math.min(buf.length, clusterSize))
      throw badImage(file, 'offset-out-of-range', 'backing file name lies outside the header cluster');
    h.backingFile = buf.toString('utf8', h.backingFileOffset, h.backingFileOffset + h.backingFileSize);
  }
  if (h.hasCryptoHeader) throw unsupported(file, 'encryption', 'encrypted qcow2 images are not supported');
  return h;
}

function parseExtensions(buf: Buffer, h: Qcow2Header, file: string, clusterSize: number): void {
  const end = Math.min(buf.length, clusterSize);
  let at = h.version === 2 ? 72 : h.headerLength;
  // QEMU stops at the backing name if it comes first; extensions never overlap it.
  const limit = h.backingFileOffset > 0 ? Math.min(end, h.backingFileOffset) : end;
  for (let count = 0; at + 8 <= limit; count++) {
    if (count > 4096) throw badImage(file, 'bad-extension', 'too many header extensions');
    const type = buf.readUInt32BE(at);
    const length = buf.readUInt32BE(at + 4);
    at += 8;
    if (type === EXT_END) return;
    if (at + length > limit)
      throw badImage(file, 'bad-extension', `header extension 0x${type.toString(16)} overflows`);
    const data = buf.subarray(at, at + length);
    switch (type) {
      case EXT_BACKING_FORMAT:
        h.backingFormat = data.toString('utf8').replace(/\0+$/, '');
        break;
      case EXT_DATA_FILE:
        h.dataFile = data.toString('utf8').replace(/\0+$/, '');
        break;
      case EXT_FEATURE_TABLE:
        for (let i = 0; i + 48 <= length; i += 48) {
          const kind = data[i] ?? 0;
          const name = data.toString('utf8', i + 2, i + 48).replace(/\0.*$/s, '');
          const type = kind === 0 ? 'incompatible' : kind === 1 ? 'compatible' : 'autoclear';
          h.featureNames.push({ type, bit: data[i + 1] ?? 0, name });
        }
        break;
      case EXT_BITMAPS:
        if (length < 24) throw badImage(file, 'bad-extension', 'bitmaps extension is too short');
        h.bitmaps = {
          count: data.readUInt32BE(0),
          directorySize: readU64(data, 8, file, 'bitmap_directory_size'),
          directoryOffset: readU64(data, 16, file, 'bitmap_directory_offset'),
        };
        break;
      case EXT_CRYPTO:
        h.hasCryptoHeader = true;
        break;
      default:
        h.otherExtensions.push({ type, data: Buffer.from(data) });
    }
    at += (length + 7) & ~7;
  }
  // Running off the end of the header cluster without an end marker is tolerated, as QEMU does.
}

/**
 * Serializes a header with its extensions and backing file name into one buffer (which must fit
 * in the first cluster). `backingFileOffset`/`backingFileSize`/`headerLength` are recomputed.
 */
export function serializeHeader(h: Qcow2Header): Buffer {
  const clusterSize = 2 ** h.clusterBits;
  const exts: Buffer[] = [];
  const ext = (type: number, data: Buffer) => {
    const padded = Buffer.alloc(8 + ((data.length + 7) & ~7));
    padded.writeUInt32BE(type, 0);
    padded.writeUInt32BE(data.length, 4);
    data.copy(padded, 8);
    exts.push(padded);
  };
  if (h.backingFormat && h.backingFile) ext(EXT_BACKING_FORMAT, Buffer.from(h.backingFormat));
  if (h.dataFile) ext(EXT_DATA_FILE, Buffer.from(h.dataFile));
  if (h.bitmaps) {
    const b = Buffer.alloc(24);
    b.writeUInt32BE(h.bitmaps.count, 0);
    writeU64(b, 8, h.bitmaps.directorySize);
    writeU64(b, 16, h.bitmaps.directoryOffset);
    ext(EXT_BITMAPS, b);
  }
  for (const other of h.otherExtensions) ext(other.type, other.data);
  if (h.version === 3) ext(EXT_FEATURE_TABLE, featureTable());
  ext(EXT_END, Buffer.alloc(0));
  const headerLength = h.version === 3 ? V3_HEADER_LENGTH : 72;
  const fixed = Buffer.alloc(headerLength);
  const body = Buffer.concat([fixed, ...exts]);
  const name = h.backingFile ? Buffer.from(h.backingFile) : Buffer.alloc(0);
  const out = Buffer.concat([body, name]);
  if (out.length > clusterSize) throw new RangeError('header and extensions do not fit in the first cluster');
  out.writeUInt32BE(QCOW2_MAGIC, 0);
  out.writeUInt32BE(h.version, 4);
  writeU64(out, 8, name.length ? body.length : 0);
  out.writeUInt32BE(name.length, 16);
  out.writeUInt32BE(h.clusterBits, 20);
  writeU64(out, 24, h.size);
  out.writeUInt32BE(h.cryptMethod, 32);
  out.writeUInt32BE(h.l1Size, 36);
  writeU64(out, 40, h.l1TableOffset);
  writeU64(out, 48, h.refcountTableOffset);
  out.writeUInt32BE(h.refcountTableClusters, 56);
  out.writeUInt32BE(h.nbSnapshots, 60);
  writeU64(out, 64, h.snapshotsOffset);
  if (h.version === 3) {
    out.writeBigUInt64BE(h.incompatibleFeatures, 72);
    out.writeBigUInt64BE(h.compatibleFeatures, 80);
    out.writeBigUInt64BE(h.autoclearFeatures, 88);
    out.writeUInt32BE(h.refcountOrder, 96);
    out.writeUInt32BE(headerLength, 100);
    out.writeUInt8(h.compressionType, 104);
  }
  return out;
}

/** The feature name table QEMU writes, so `qemu-img info` and older tools can name our bits. */
function featureTable(): Buffer {
  const names: [number, number, string][] = [
    [0, 0, 'dirty bit'],
    [0, 1, 'corrupt bit'],
    [0, 2, 'external data file'],
    [0, 3, 'compression type'],
    [0, 4, 'extended L2 entries'],
    [1, 0, 'lazy refcounts'],
    [2, 0, 'bitmaps'],
    [2, 1, 'raw external data'],
  ];
  const buf = Buffer.alloc(names.length * 48);
  names.forEach(([type, bit, name], i) => {
    buf[i * 48] = type;
    buf[i * 48 + 1] = bit;
    buf.write(name, i * 48 + 2, 46, 'utf8');
  });
  return buf;
}

/** Derived geometry of an image, computed once from its header. */
export interface Geometry {
  clusterBits: number;
  clusterSize: number;
  /** Bytes per L2 entry: 8, or 16 with extended L2 entries. */
  l2EntrySize: number;
  l2Entries: number;
  l2Bits: number;
  extendedL2: boolean;
  subclusterSize: number;
  refcountOrder: number;
  refcountBits: number;
  refblockEntries: number;
  refblockBits: number;
  /** First bit of the sector count in a compressed descriptor (x = 62 - (cluster_bits - 8)). */
  csizeShift: number;
}

/** Computes {@link Geometry} from cluster bits, refcount order and the extended-L2 flag. */
export function geometry(clusterBits: number, refcountOrder: number, extendedL2: boolean): Geometry {
  const clusterSize = 2 ** clusterBits;
  const l2EntrySize = extendedL2 ? 16 : 8;
  const l2Entries = clusterSize / l2EntrySize;
  const refcountBits = 2 ** refcountOrder;
  const refblockEntries = (clusterSize * 8) / refcountBits;
  return {
    clusterBits,
    clusterSize,
    l2EntrySize,
    l2Entries,
    l2Bits: Math.log2(l2Entries),
    extendedL2,
    subclusterSize: extendedL2 ? clusterSize / 32 : clusterSize,
    refcountOrder,
    refcountBits,
    refblockEntries,
    refblockBits: Math.log2(refblockEntries),
    csizeShift: 62 - (clusterBits - 8),
  };
}

/** L1 entries needed to map `size` bytes. */
export function l1EntriesFor(size: number, g: Geometry): number {
  return Math.ceil(size / g.clusterSize / g.l2Entries);
}

/** Reads entry `index` of a refcount block (sub-byte widths put entry 0 in the low bits). */
export function getRefcount(block: Buffer, index: number, order: number): number {
  switch (order) {
    case 0:
      return ((block[index >> 3] as number) >> (index & 7)) & 1;
    case 1:
      return ((block[index >> 2] as number) >> (2 * (index & 3))) & 3;
    case 2:
      return ((block[index >> 1] as number) >> (4 * (index & 1))) & 15;
    case 3:
      return block[index] as number;
    case 4:
      return block.readUInt16BE(index * 2);
    case 5:
      return block.readUInt32BE(index * 4);
    default: {
      const hi = block.readUInt32BE(index * 8);
      return hi * 2 ** 32 + block.readUInt32BE(index * 8 + 4);
    }
  }
}

/** Largest refcount an entry of this order can hold (capped at 2^53 - 1 for order 6). */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (2 ** order) - 1;
}

/** Writes entry `index` of a refcount block. */
export function setRefcount(block: Buffer, index: number, order: number, value: number): void {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 2 ** order;
      const perByte = 8 / bits;
      const byte = Math.floor(index / perByte);
      const shift = (index % perByte) * bits;
      const mask = ((1 << bits) - 1) << shift;
      block[byte] = ((block[byte] as number) & ~mask) | ((value << shift) & mask);
      return;
    }
    case 3:
      block[index] = value;
      return;
    case 4:
      block.writeUInt16BE(value, index * 2);
      return;
    case 5:
      block.writeUInt32BE(value, index * 4);
      return;
    default:
      writeU64(block, index * 8, value);
  }
}

/** L2 entry flag bits, in the high 32-bit word. */
export const L2_COPIED_HI = 0x80000000;
export const L2_COMPRESSED_HI = 0x40000000;

/** The host offset of a standard L1/L2 entry (bits 9-55), from its two 32-bit halves. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 2 ** 32 + ((lo & 0xfffffe00) >>> 0);
}

/** Host offset and byte length of a compressed cluster descriptor. */
export function compressedRange(hi: number, lo: number, g: Geometry): { offset: number; length: number } {
  const entry = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
  const shift = BigInt(g.csizeShift);
  const offset = Number(entry & ((1n << shift) - 1n));
  const sectors = Number((entry >> shift) & ((1n << (62n - shift)) - 1n)) + 1;
  return { offset, length: sectors * 512 - (offset & 511) };
}

/** Encodes a compressed descriptor (with the compressed flag) as [hi, lo]. */
export function compressedEntry(offset: number, length: number, g: Geometry): [number, number] {
  const sectors = Math.ceil(((offset & 511) + length) / 512) - 1;
  const entry = (1n << 62n) | (BigInt(sectors) << BigInt(g.csizeShift)) | BigInt(offset);
  return [Number(entry >> 32n) >>> 0, Number(entry & 0xffffffffn) >>> 0];
}
