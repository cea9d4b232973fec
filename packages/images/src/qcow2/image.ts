import { inflateRawSync } from 'node:zlib';
import { NubesError } from '@nubes/core';
import { badImage, unsupported } from '../errors.js';
import type { HostFile } from '../io/host-file.js';
import type { DiskImage, Extent } from '../types.js';
import { repairImage } from './check.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  compressedEntry,
  compressedRange,
  entryOffset,
  type Geometry,
  geometry,
  getRefcount,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  L2_COMPRESSED_HI,
  L2_COPIED_HI,
  maxRefcount,
  parseHeader,
  peekClusterBits,
  type Qcow2Header,
  readU64,
  serializeHeader,
  setRefcount,
  writeU64,
} from './format.js';

/** Largest L1 table QEMU accepts (32 MiB), the bound that keeps a hostile header from exhausting memory. */
const MAX_L1_BYTES = 32 * 1024 * 1024;
/** Largest refcount table QEMU accepts (8 MiB). */
const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;

/** One run of guest bytes as this layer stores it. */
export interface Segment {
  guest: number;
  length: number;
  kind: 'data' | 'zero' | 'unallocated' | 'compressed';
  /** Host offset of `guest` for data; of the compressed stream for compressed. */
  host: number;
  /** Compressed stream length, for compressed segments. */
  compressedLength?: number;
  /** Guest offset of the cluster start, for compressed segments. */
  clusterGuest?: number;
}

/** One decoded L2 entry (with its subcluster bitmap when extended L2 entries are on). */
interface L2Slot {
  table: Buffer;
  tableOffset: number;
  index: number;
  hi: number;
  lo: number;
  alloc: number;
  zero: number;
}

const FULL_MASK = 0xffffffff;

/** A layer that can read straight into a caller's zeroed buffer (qcow2 and raw images). */
interface ReadsInto {
  readInto(out: Buffer, offset: number, zeroed?: boolean): Promise<void>;
}

function rangeMask(first: number, last: number): number {
  // Bits first..last inclusive, as an unsigned 32-bit mask.
  const width = last - first + 1;
  return width >= 32 ? FULL_MASK : (((1 << width) - 1) << first) >>> 0;
}

/**
 * An open qcow2 image. Reads walk L1/L2 and fall through to the backing image; writes allocate
 * with refcounts first, data second, L2 entry last, and free only after the last reference is
 * gone, so a process killed at any point leaves at worst leaked clusters, never a corruption.
 * Metadata is written through (there is no write-back cache to lose).
 */
export class Qcow2Image implements DiskImage {
  readonly format = 'qcow2' as const;
  /** The parsed header (kept in step with what is on disk). */
  header: Qcow2Header;
  /** Derived geometry. */
  readonly g: Geometry;
  /** The backing image, when one is attached. */
  backing: DiskImage | undefined;
  /** Listener called after the image is modified (used by operations for progress). */
  private l1: Buffer;
  private refTable: Buffer;
  /** L2 tables by host offset; `used` is a tick for least-recently-used eviction (a hit costs one Map.get). */
  private readonly l2Cache = new Map<number, { table: Buffer; used: number }>();
  private l2Tick = 0;
  private readonly refBlocks = new Map<number, Buffer>();
  private readonly l2CacheLimit: number;
  private highWater: number;
  private freeHint = 0;
  private compressCursor = 0;
  private lastCompressed: { host: number; data: Buffer } | undefined;
  private modified = false;

  private constructor(
    readonly file: HostFile,
    readonly dataFile: HostFile | undefined,
    header: Qcow2Header,
    l1: Buffer,
    refTable: Buffer,
    readonly readOnly: boolean,
    l2CacheTables: number,
  ) {
    this.header = header;
    this.g = geometry(
      header.clusterBits,
      header.refcountOrder,
      (header.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n,
    );
    this.l1 = l1;
    this.refTable = refTable;
    this.l2CacheLimit = l2CacheTables;
    this.highWater = Math.ceil(file.size / this.g.clusterSize);
  }

  /**
   * Opens a qcow2 file whose host file is already open. Validates the header and the L1 and
   * refcount tables against the file size before trusting any of them.
   */
  static async fromFile(
    file: HostFile,
    options: { readOnly: boolean; dataFile?: HostFile; l2CacheTables?: number },
  ): Promise<Qcow2Image> {
    const first = await file.readAt(0, Math.min(file.size, 512));
    const clusterBits = peekClusterBits(first, file.path);
    const headBuf = await file.readAt(0, Math.min(file.size, 2 ** clusterBits));
    const header = parseHeader(headBuf, file.path);
    const cs = 2 ** header.clusterBits;
    const g = geometry(
      header.clusterBits,
      header.refcountOrder,
      (header.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n,
    );
    if (header.l1Size * 8 > MAX_L1_BYTES)
      throw badImage(file.path, 'table-too-large', `L1 table of ${header.l1Size} entries is too large`);
    const needL1 = Math.ceil(header.size / cs / g.l2Entries);
    if (header.l1Size < needL1)
      throw badImage(
        file.path,
        'bad-header',
        `L1 table (${header.l1Size} entries) is too small for the virtual size`,
      );
    if (header.l1TableOffset % cs !== 0 || (header.l1Size > 0 && header.l1TableOffset === 0))
      throw badImage(file.path, 'offset-out-of-range', 'L1 table offset is not cluster aligned');
    if (header.refcountTableOffset % cs !== 0 || header.refcountTableOffset === 0)
      throw badImage(file.path, 'offset-out-of-range', 'refcount table offset is invalid');
    if (header.refcountTableClusters * cs > MAX_REFTABLE_BYTES)
      throw badImage(file.path, 'table-too-large', 'refcount table is too large');
    if ((header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n && !options.dataFile)
      throw unsupported(file.path, 'data-file', 'image needs its external data file, which was not opened');
    const l1 = await file.readExact(header.l1TableOffset, header.l1Size * 8, 'L1 table');
    const refTable = await file.readExact(
      header.refcountTableOffset,
      header.refcountTableClusters * cs,
      'refcount table',
    );
    let readOnly = options.readOnly;
    if (!readOnly && (header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n)
      throw new NubesError(
        'Conflict',
        `${file.path}: image is marked corrupt; open it read-only or repair it with check -r all`,
        {
          details: { file: file.path },
        },
      );
    if (!readOnly && options.dataFile)
      throw unsupported(file.path, 'data-file', 'writing images with an external data file is not supported');
    if (!readOnly && header.version === 2 && header.refcountOrder !== 4) readOnly = true;
    const image = new Qcow2Image(
      file,
      options.dataFile,
      header,
      l1,
      refTable,
      readOnly,
      options.l2CacheTables ?? 1024,
    );
    if (!readOnly) await image.prepareForWrite();
    return image;
  }

  /** The path of the host file. */
  get path(): string {
    return this.file.path;
  }

  /** Guest-visible size in bytes. */
  get virtualSize(): number {
    return this.header.size;
  }

  /** Cluster size in bytes. */
  get clusterSize(): number {
    return this.g.clusterSize;
  }

  /** A copy of the active L1 table. */
  get l1Table(): Buffer {
    return Buffer.from(this.l1);
  }

  /** A copy of the refcount table. */
  get refcountTable(): Buffer {
    return Buffer.from(this.refTable);
  }

  // ---------------------------------------------------------------- opening for write

  private async prepareForWrite(): Promise<void> {
    const h = this.header;
    if ((h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
      // Lazy refcounts left the refcounts stale; the check module rebuilds them (as QEMU does on open).
      await repairImage(this, 'all');
      h.incompatibleFeatures &= ~INCOMPAT_DIRTY;
      await this.writeFeatureBits();
    }
    // Autoclear bits promise metadata this engine does not maintain (bitmaps): clear them before
    // the first write, as the specification asks of writers that do not know or keep them.
    const keep = h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW;
    if (h.version === 3 && h.autoclearFeatures !== keep) {
      h.autoclearFeatures = keep;
      await this.writeFeatureBits();
    }
  }

  /** Rewrites the three feature bit fields of a v3 header in place (bytes 72..95, one write). */
  async writeFeatureBits(): Promise<void> {
    if (this.header.version !== 3) return;
    const buf = Buffer.alloc(24);
    buf.writeBigUInt64BE(this.header.incompatibleFeatures, 0);
    buf.writeBigUInt64BE(this.header.compatibleFeatures, 8);
    buf.writeBigUInt64BE(this.header.autoclearFeatures, 16);
    await this.file.writeAt(72, buf);
  }

  /** Rewrites the header cluster's header, extensions and backing name from {@link header}. */
  async rewriteHeader(): Promise<void> {
    const buf = serializeHeader(this.header);
    await this.file.writeAt(0, buf);
    this.header = parseHeader(await this.file.readAt(0, this.g.clusterSize), this.path);
  }

  // ---------------------------------------------------------------- reading

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      throw new NubesError('InvalidInput', `${this.path}: bad range ${offset}+${length}`, {
        details: { field: 'offset', file: this.path },
      });
    if (offset + length > this.header.size)
      throw new NubesError(
        'InvalidInput',
        `${this.path}: range ${offset}+${length} is past the virtual size ${this.header.size}`,
        {
          details: { field: 'offset', file: this.path },
        },
      );
  }

  private checkWritable(): void {
    if (this.readOnly)
      throw new NubesError('Conflict', `${this.path}: image is open read-only`, {
        details: { file: this.path },
      });
  }

  /** Loads (through the cache) the L2 table at `offset`, validating that it lies inside the file. */
  async loadL2(offset: number): Promise<Buffer> {
    const cached = this.cachedL2(offset);
    if (cached) return cached;
    if (offset % this.g.clusterSize !== 0)
      throw badImage(this.path, 'bad-l2-entry', `L2 table offset ${offset} is not cluster aligned`);
    if (offset + this.g.clusterSize > this.file.size)
      throw badImage(this.path, 'offset-out-of-range', `L2 table at ${offset} is past the end of the file`);
    const table = await this.file.readAt(offset, this.g.clusterSize);
    this.cacheL2(offset, table);
    return table;
  }

  /** The cached L2 table at `offset` (refreshing its recency), without I/O; undefined on a miss. */
  private cachedL2(offset: number): Buffer | undefined {
    const hit = this.l2Cache.get(offset);
    if (!hit) return undefined;
    hit.used = ++this.l2Tick;
    return hit.table;
  }

  private cacheL2(offset: number, table: Buffer): void {
    const hit = this.l2Cache.get(offset);
    if (hit) {
      hit.table = table;
      hit.used = ++this.l2Tick;
      return;
    }
    if (this.l2Cache.size >= this.l2CacheLimit) {
      // Evict the least recently used table: a scan, but only on a miss that also costs a read.
      let oldest = -1;
      let oldestUse = Number.POSITIVE_INFINITY;
      for (const [key, entry] of this.l2Cache) {
        if (entry.used < oldestUse) {
          oldestUse = entry.used;
          oldest = key;
        }
      }
      this.l2Cache.delete(oldest);
    }
    this.l2Cache.set(offset, { table, used: ++this.l2Tick });
  }

  /** The L2 table offset an L1 table entry points to (0 when none). */
  static l1EntryOffset(l1: Buffer, index: number): number {
    return entryOffset(l1.readUInt32BE(index * 8), l1.readUInt32BE(index * 8 + 4));
  }

  private async slot(guestCluster: number): Promise<L2Slot | undefined> {
    const l1Index = Math.floor(guestCluster / this.g.l2Entries);
    const l2Offset = Qcow2Image.l1EntryOffset(this.l1, l1Index);
    if (l2Offset === 0) return undefined;
    const table = await this.loadL2(l2Offset);
    return this.slotIn(table, l2Offset, guestCluster % this.g.l2Entries);
  }

  private slotIn(table: Buffer, tableOffset: number, index: number): L2Slot {
    const at = index * this.g.l2EntrySize;
    const hi = table.readUInt32BE(at);
    const lo = table.readUInt32BE(at + 4);
    const ext = this.g.extendedL2;
    return {
      table,
      tableOffset,
      index,
      hi,
      lo,
      alloc: ext ? table.readUInt32BE(at + 12) : 0,
      zero: ext ? table.readUInt32BE(at + 8) : 0,
    };
  }

  /** Classifies a (non-extended view of an) L2 entry. */
  private classify(hi: number, lo: number): 'data' | 'zero' | 'unallocated' | 'compressed' {
    if (hi & L2_COMPRESSED_HI) return 'compressed';
    if (!this.g.extendedL2 && this.header.version === 3 && lo & 1) return 'zero';
    const offset = entryOffset(hi, lo);
    if (offset === 0 && !(this.dataFile && hi & L2_COPIED_HI)) return 'unallocated';
    return 'data';
  }

  private validateDataOffset(host: number): void {
    if (host % this.g.clusterSize !== 0)
      throw badImage(this.path, 'bad-l2-entry', `data cluster offset ${host} is not cluster aligned`);
  }

  /**
   * The storage runs covering [offset, offset+length), merged where adjacent runs have the same
   * kind and contiguous host offsets. Stops early after `maxSegments` runs.
   */
  async segments(offset: number, length: number, maxSegments = Number.POSITIVE_INFINITY): Promise<Segment[]> {
    const out: Segment[] = [];
    const cs = this.g.clusterSize;
    const end = offset + length;
    let pos = offset;
    const push = (seg: Segment) => {
      const last = out[out.length - 1];
      if (
        last &&
        last.kind === seg.kind &&
        seg.kind !== 'compressed' &&
        last.guest + last.length === seg.guest &&
        (seg.kind !== 'data' || last.host + last.length === seg.host)
      ) {
        last.length += seg.length;
      } else out.push(seg);
    };
    while (pos < end && out.length <= maxSegments) {
      const cluster = Math.floor(pos / cs);
      const clusterStart = cluster * cs;
      const inCluster = pos - clusterStart;
      const n = Math.min(cs - inCluster, end - pos);
      const s = await this.slot(cluster);
      if (!s) {
        // A whole missing L2 table: skip to the end of its range in one step.
        const tableEnd = (Math.floor(cluster / this.g.l2Entries) + 1) * this.g.l2Entries * cs;
        const len = Math.min(tableEnd, end) - pos;
        push({ guest: pos, length: len, kind: 'unallocated', host: 0 });
        pos += len;
        continue;
      }
      const kind = this.classify(s.hi, s.lo);
      if (kind === 'compressed') {
        const r = compressedRange(s.hi, s.lo, this.g);
        push({
          guest: pos,
          length: n,
          kind,
          host: r.offset,
          compressedLength: r.length,
          clusterGuest: clusterStart,
        });
      } else if (!this.g.extendedL2) {
        const host = entryOffset(s.hi, s.lo);
        if (kind === 'data') this.validateDataOffset(host);
        push({ guest: pos, length: n, kind, host: kind === 'data' ? host + inCluster : 0 });
      } else {
        const host = entryOffset(s.hi, s.lo);
        if ((s.alloc & s.zero) !== 0)
          throw badImage(
            this.path,
            'bad-l2-entry',
            `subcluster both allocated and zero in cluster ${cluster}`,
          );
        if (s.alloc !== 0) {
          if (host === 0 && !this.dataFile)
            throw badImage(this.path, 'bad-l2-entry', `allocated subclusters without a host cluster`);
          this.validateDataOffset(host);
        }
        const sub = this.g.subclusterSize;
        let at = inCluster;
        const stop = inCluster + n;
        while (at < stop) {
          const sc = Math.floor(at / sub);
          const bit = 1 << sc;
          const subKind = s.alloc & bit ? 'data' : s.zero & bit ? 'zero' : 'unallocated';
          const len = Math.min((sc + 1) * sub, stop) - at;
          push({
            guest: clusterStart + at,
            length: len,
            kind: subKind,
            host: subKind === 'data' ? host + at : 0,
          });
          at += len;
        }
      }
      pos += n;
    }
    return out;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const out = Buffer.alloc(length);
    await this.readInto(out, offset);
    return out;
  }

  /**
   * Fills `out` with the guest bytes at `offset`, reading each layer straight into (a slice of) it:
   * no intermediate buffer per layer. With `zeroed` (the default) `out` must already be zeros,
   * and zero runs are left as they are; without it they are cleared here (for a reused buffer).
   * The range must lie inside the virtual size: {@link read} is the checked entry point, backing
   * layers are called with ranges clipped to their size.
   * @internal
   */
  async readInto(out: Buffer, offset: number, zeroed = true): Promise<void> {
    const cs = this.g.clusterSize;
    const inCluster = offset % cs;
    if (inCluster + out.length <= cs && !this.g.extendedL2) {
      // Fast path for a request inside one cluster (random 4 KiB I/O): one L1 and one L2 lookup,
      // no segment list, no await when the L2 table is cached.
      const cluster = (offset - inCluster) / cs;
      const l2Offset = Qcow2Image.l1EntryOffset(this.l1, Math.floor(cluster / this.g.l2Entries));
      if (l2Offset === 0) return this.readBackingInto(out, offset, zeroed);
      const table = this.cachedL2(l2Offset) ?? (await this.loadL2(l2Offset));
      const at = (cluster % this.g.l2Entries) * 8;
      const hi = table.readUInt32BE(at);
      const lo = table.readUInt32BE(at + 4);
      const kind = this.classify(hi, lo);
      if (kind === 'data') {
        const host = entryOffset(hi, lo);
        this.validateDataOffset(host);
        const n = await (this.dataFile ?? this.file).readInto(out, host + inCluster);
        if (!zeroed && n < out.length) out.fill(0, n);
        return;
      }
      if (kind === 'unallocated') return this.readBackingInto(out, offset, zeroed);
      if (kind === 'zero') {
        if (!zeroed) out.fill(0);
        return;
      }
      // Compressed: the general path below.
    }
    const segs = await this.segments(offset, out.length);
    const source = this.dataFile ?? this.file;
    for (const seg of segs) {
      const at = seg.guest - offset;
      if (seg.kind === 'data') {
        const n = await source.readInto(out.subarray(at, at + seg.length), seg.host);
        if (!zeroed && n < seg.length) out.fill(0, at + n, at + seg.length);
      } else if (seg.kind === 'unallocated') {
        await this.readBackingInto(out.subarray(at, at + seg.length), seg.guest, zeroed);
      } else if (seg.kind === 'zero') {
        if (!zeroed) out.fill(0, at, at + seg.length);
      } else if (seg.kind === 'compressed') {
        const cluster = await this.decompress(seg.host, seg.compressedLength as number);
        const from = seg.guest - (seg.clusterGuest as number);
        cluster.copy(out, at, from, from + seg.length);
      }
    }
  }

  /** Reads guest bytes for copy-on-write; what lies past the virtual size reads as zeros. */
  private async readClipped(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const n = Math.max(0, Math.min(length, this.header.size - offset));
    if (n > 0) await this.readInto(out.subarray(0, n), offset);
    return out;
  }

  /** Reads the backing chain's bytes for guest `guest` into `out` (zeros past its end or without one). */
  private async readBackingInto(out: Buffer, guest: number, zeroed: boolean): Promise<void> {
    const backing = this.backing;
    const n = backing ? Math.max(0, Math.min(out.length, backing.virtualSize - guest)) : 0;
    if (!zeroed && n < out.length) out.fill(0, n);
    if (!backing || n === 0) return;
    const into = (backing as Partial<ReadsInto>).readInto;
    if (into) await into.call(backing, n === out.length ? out : out.subarray(0, n), guest, zeroed);
    else (await backing.read(guest, n)).copy(out);
  }

  /** Inflates one compressed cluster (raw deflate, as QEMU writes it); the last one is cached. */
  private async decompress(host: number, length: number): Promise<Buffer> {
    if (this.lastCompressed?.host === host) return this.lastCompressed.data;
    if ((this.header.incompatibleFeatures & 8n) !== 0n && this.header.compressionType !== 0)
      throw unsupported(this.path, 'compression-type', 'zstd-compressed clusters are not supported');
    if (host + 1 > this.file.size)
      throw badImage(
        this.path,
        'bad-compressed-cluster',
        `compressed cluster at ${host} is past the end of the file`,
      );
    const raw = await this.file.readAt(host, Math.min(length, this.file.size - host));
    let data: Buffer;
    try {
      data = inflateRawSync(raw, {
        finishFlush: 2 /* Z_SYNC_FLUSH: the stream may stop mid-sector */,
        maxOutputLength: this.g.clusterSize,
      });
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        data = Buffer.alloc(0);
      } else {
        throw badImage(
          this.path,
          'bad-compressed-cluster',
          `compressed cluster at ${host} does not inflate`,
          { cause: String(cause) },
        );
      }
    }
    if (data.length < this.g.clusterSize) {
      if (data.length === 0)
        throw badImage(this.path, 'bad-compressed-cluster', `compressed cluster at ${host} is invalid`);
      const full = Buffer.alloc(this.g.clusterSize);
      data.copy(full);
      data = full;
    }
    this.lastCompressed = { host, data };
    return data;
  }

  async status(offset: number, length: number): Promise<Extent> {
    this.checkRange(offset, length);
    const [seg] = await this.segments(offset, length, 1);
    if (!seg) return { offset, length, kind: 'unallocated' };
    const len = Math.min(seg.length, offset + length - seg.guest);
    if (seg.kind === 'compressed') return { offset, length: len, kind: 'data', compressed: true };
    if (seg.kind === 'data') return { offset, length: len, kind: 'data', hostOffset: seg.host };
    return { offset, length: len, kind: seg.kind };
  }

  // ---------------------------------------------------------------- refcounts and allocation

  private refTableEntries(): number {
    return this.refTable.length / 8;
  }

  private async refBlock(tableIndex: number): Promise<{ block: Buffer; offset: number } | undefined> {
    if (tableIndex >= this.refTableEntries()) return undefined;
    const offset = readU64(this.refTable, tableIndex * 8, this.path, 'refcount table entry') & ~511;
    if (offset === 0) return undefined;
    let block = this.refBlocks.get(offset);
    if (!block) {
      if (offset % this.g.clusterSize !== 0 || offset + this.g.clusterSize > this.file.size)
        throw badImage(this.path, 'offset-out-of-range', `refcount block at ${offset} is invalid`);
      block = await this.file.readAt(offset, this.g.clusterSize);
      this.refBlocks.set(offset, block);
    }
    return { block, offset };
  }

  /** The refcount of host cluster `index`. */
  async refcount(index: number): Promise<number> {
    const rb = await this.refBlock(Math.floor(index / this.g.refblockEntries));
    if (!rb) return 0;
    return getRefcount(rb.block, index % this.g.refblockEntries, this.g.refcountOrder);
  }

  /** The refcount of host cluster `index` when its block is cached (no I/O), else undefined. */
  private cachedRefcount(index: number): number | undefined {
    const ti = Math.floor(index / this.g.refblockEntries);
    if (ti >= this.refTableEntries()) return 0;
    const offset = readU64(this.refTable, ti * 8, this.path, 'refcount table entry') & ~511;
    if (offset === 0) return 0;
    const block = this.refBlocks.get(offset);
    return block ? getRefcount(block, index % this.g.refblockEntries, this.g.refcountOrder) : undefined;
  }

  /** Writes the bytes of a refcount block holding entries first..last. */
  private async flushRefEntries(
    rb: { block: Buffer; offset: number },
    first: number,
    last: number,
  ): Promise<void> {
    const bits = this.g.refcountBits;
    const from = Math.floor((first * bits) / 8);
    const to = Math.ceil(((last + 1) * bits) / 8);
    await this.file.writeAt(rb.offset + from, rb.block.subarray(from, to));
  }

  /** Adds `delta` to the refcount of `count` host clusters starting at `index`; blocks must exist for increments. */
  async adjustRefcounts(index: number, count: number, delta: number): Promise<void> {
    const E = this.g.refblockEntries;
    let i = index;
    const end = index + count;
    while (i < end) {
      const ti = Math.floor(i / E);
      const runEnd = Math.min(end, (ti + 1) * E);
      if (delta > 0) await this.ensureRefBlock(i);
      const rb = await this.refBlock(ti);
      if (!rb) throw badImage(this.path, 'corrupt', `cluster ${i} has no refcount block`);
      for (let c = i; c < runEnd; c++) {
        const old = getRefcount(rb.block, c % E, this.g.refcountOrder);
        const next = old + delta;
        if (next < 0) throw badImage(this.path, 'corrupt', `refcount of cluster ${c} would drop below zero`);
        if (next > maxRefcount(this.g.refcountOrder))
          throw new NubesError(
            'Conflict',
            `${this.path}: refcount of cluster ${c} would overflow refcount_bits`,
          );
        setRefcount(rb.block, c % E, this.g.refcountOrder, next);
        if (next === 0 && c < this.freeHint) this.freeHint = c;
      }
      await this.flushRefEntries(rb, i % E, (runEnd - 1) % E);
      i = runEnd;
    }
  }

  /** Sets refcounts of clusters to exact values (used by repair). */
  async setRefcountValue(index: number, value: number): Promise<boolean> {
    const rb = await this.refBlock(Math.floor(index / this.g.refblockEntries));
    if (!rb) {
      if (value === 0) return true;
      await this.ensureRefBlock(index);
      return this.setRefcountValue(index, value);
    }
    const e = index % this.g.refblockEntries;
    setRefcount(rb.block, e, this.g.refcountOrder, value);
    await this.flushRefEntries(rb, e, e);
    if (value === 0 && index < this.freeHint) this.freeHint = index;
    return true;
  }

  /** Makes sure the refcount block covering host cluster `index` exists, allocating it at the end. */
  private async ensureRefBlock(index: number): Promise<void> {
    const E = this.g.refblockEntries;
    const cs = this.g.clusterSize;
    for (;;) {
      const ti = Math.floor(index / E);
      if (
        ti < this.refTableEntries() &&
        readU64(this.refTable, ti * 8, this.path, 'refcount table entry') !== 0
      )
        return;
      if (ti >= this.refTableEntries()) {
        await this.growRefTable(ti + 1);
        continue;
      }
      const b = this.highWater;
      const bt = Math.floor(b / E);
      const block = Buffer.alloc(cs);
      if (bt === ti) {
        // The new block describes itself.
        setRefcount(block, b % E, this.g.refcountOrder, 1);
        this.highWater = b + 1;
        await this.file.writeAt(b * cs, block);
      } else {
        const own =
          bt < this.refTableEntries() &&
          readU64(this.refTable, bt * 8, this.path, 'refcount table entry') !== 0;
        if (!own) {
          await this.ensureRefBlock(b);
          continue;
        }
        this.highWater = b + 1;
        await this.adjustRefcounts(b, 1, 1);
        await this.file.writeAt(b * cs, block);
      }
      this.refBlocks.set(b * cs, block);
      // The table entry goes last: until it is written the block is merely unused space.
      writeU64(this.refTable, ti * 8, b * cs);
      await this.file.writeAt(
        this.header.refcountTableOffset + ti * 8,
        this.refTable.subarray(ti * 8, ti * 8 + 8),
      );
      return;
    }
  }

  /** Moves the refcount table to a larger copy at the end of the file. */
  private async growRefTable(minEntries: number): Promise<void> {
    const cs = this.g.clusterSize;
    const E = this.g.refblockEntries;
    const perCluster = cs / 8;
    let entries = Math.max(minEntries, Math.ceil(this.refTableEntries() * 1.5));
    entries = Math.ceil(entries / perCluster) * perCluster;
    for (;;) {
      const tableClusters = entries / perCluster;
      const start = this.highWater;
      // Blocks needed for the new table and for themselves, placed right after the table.
      let newBlocks: number[] = [];
      for (let guess = 0; ; ) {
        const end = start + tableClusters + guess;
        newBlocks = [];
        for (let ti = Math.floor(start / E); ti <= Math.floor((end - 1) / E); ti++) {
          const exists =
            ti < this.refTableEntries() &&
            readU64(this.refTable, ti * 8, this.path, 'refcount table entry') !== 0;
          if (!exists) newBlocks.push(ti);
        }
        if (newBlocks.length <= guess) break;
        guess = newBlocks.length;
      }
      const total = tableClusters + newBlocks.length;
      if (newBlocks.some((ti) => ti >= entries) || Math.floor((start + total - 1) / E) >= entries) {
        entries += perCluster;
        continue;
      }
      const table = Buffer.alloc(entries * 8);
      this.refTable.copy(table);
      const blocks = new Map<number, Buffer>();
      newBlocks.forEach((ti, k) => {
        blocks.set(ti, Buffer.alloc(cs));
        writeU64(table, ti * 8, (start + tableClusters + k) * cs);
      });
      // Refcounts for the new table and blocks: in new blocks directly, in existing blocks via writes
      // that only create leaks if we die before the header points at the new table.
      for (let c = start; c < start + total; c++) {
        const ti = Math.floor(c / E);
        const fresh = blocks.get(ti);
        if (fresh) setRefcount(fresh, c % E, this.g.refcountOrder, 1);
        else {
          const rb = await this.refBlock(ti);
          if (!rb) throw new NubesError('Internal', 'refcount block vanished while growing the table');
          setRefcount(rb.block, c % E, this.g.refcountOrder, 1);
          await this.flushRefEntries(rb, c % E, c % E);
        }
      }
      this.highWater = start + total;
      for (const [k, ti] of newBlocks.entries()) {
        const off = (start + tableClusters + k) * cs;
        const block = blocks.get(ti) as Buffer;
        await this.file.writeAt(off, block);
        this.refBlocks.set(off, block);
      }
      await this.file.writeAt(start * cs, table);
      const oldOffset = this.header.refcountTableOffset;
      const oldClusters = this.header.refcountTableClusters;
      const fields = Buffer.alloc(12);
      writeU64(fields, 0, start * cs);
      fields.writeUInt32BE(tableClusters, 8);
      await this.file.writeAt(48, fields);
      this.header.refcountTableOffset = start * cs;
      this.header.refcountTableClusters = tableClusters;
      this.refTable = table;
      await this.adjustRefcounts(oldOffset / cs, oldClusters, -1);
      return;
    }
  }

  /**
   * Allocates `count` contiguous host clusters and sets their refcounts to 1 on disk before
   * returning, so nothing else can take them and a crash afterwards leaks them at worst.
   */
  async allocate(count: number): Promise<number> {
    for (;;) {
      let start = this.freeHint;
      let run = 0;
      // First free cluster seen: everything before it (from the hint on) is in use, so the hint can
      // move there even when the run found starts further on (else every allocation rescans from 0).
      let firstFree = -1;
      while (run < count && start + run < this.highWater) {
        const c = start + run;
        if ((this.cachedRefcount(c) ?? (await this.refcount(c))) === 0) {
          if (firstFree < 0) firstFree = c;
          run++;
        } else {
          start += run + 1;
          run = 0;
        }
      }
      const mark = this.highWater;
      for (let c = start; c < start + count; c++) await this.ensureRefBlockOnce(c);
      // New refcount structures went to the end of the file and may sit inside this run: rescan.
      if (this.highWater !== mark) continue;
      await this.adjustRefcounts(start, count, 1);
      if (start + count > this.highWater) this.highWater = start + count;
      this.freeHint = firstFree < 0 || firstFree === start ? start + count : firstFree;
      return start * this.g.clusterSize;
    }
  }

  private async ensureRefBlockOnce(c: number): Promise<void> {
    const ti = Math.floor(c / this.g.refblockEntries);
    if (
      ti < this.refTableEntries() &&
      readU64(this.refTable, ti * 8, this.path, 'refcount table entry') !== 0
    )
      return;
    await this.ensureRefBlock(c);
  }

  /** Drops one reference to each host cluster a compressed stream touches, or to one data cluster. */
  private async release(hi: number, lo: number): Promise<void> {
    const cs = this.g.clusterSize;
    if (hi & L2_COMPRESSED_HI) {
      const r = compressedRange(hi, lo, this.g);
      const first = Math.floor(r.offset / cs);
      const last = Math.floor((r.offset + r.length - 1) / cs);
      await this.adjustRefcounts(first, last - first + 1, -1);
      if (this.lastCompressed?.host === r.offset) this.lastCompressed = undefined;
      return;
    }
    const host = entryOffset(hi, lo);
    if (host !== 0) await this.adjustRefcounts(host / cs, 1, -1);
  }

  // ---------------------------------------------------------------- writing

  /** The L2 table for guest cluster `cluster`, allocated or copied (if shared) so that it can be written. */
  private async writableL2(cluster: number): Promise<{ table: Buffer; offset: number }> {
    const l1Index = Math.floor(cluster / this.g.l2Entries);
    const hi = this.l1.readUInt32BE(l1Index * 8);
    const offset = Qcow2Image.l1EntryOffset(this.l1, l1Index);
    if (offset !== 0 && hi & L2_COPIED_HI) return { table: await this.loadL2(offset), offset };
    const fresh = await this.allocate(1);
    let table: Buffer;
    if (offset === 0) table = Buffer.alloc(this.g.clusterSize);
    else {
      table = Buffer.from(await this.loadL2(offset));
      // Entries of a shared table are shared too, so none of them may keep the COPIED flag.
      for (let i = 0; i < this.g.l2Entries; i++) {
        const at = i * this.g.l2EntrySize;
        table.writeUInt32BE((table.readUInt32BE(at) & ~L2_COPIED_HI) >>> 0, at);
      }
    }
    await this.file.writeAt(fresh, table);
    this.cacheL2(fresh, table);
    await this.setL1Entry(l1Index, fresh);
    if (offset !== 0) {
      this.l2Cache.delete(offset);
      await this.adjustRefcounts(offset / this.g.clusterSize, 1, -1);
    }
    return { table, offset: fresh };
  }

  private async setL1Entry(index: number, l2Offset: number): Promise<void> {
    writeU64(this.l1, index * 8, l2Offset);
    if (l2Offset !== 0)
      this.l1.writeUInt32BE((this.l1.readUInt32BE(index * 8) | L2_COPIED_HI) >>> 0, index * 8);
    await this.file.writeAt(
      this.header.l1TableOffset + index * 8,
      this.l1.subarray(index * 8, index * 8 + 8),
    );
  }

  private async setL2Entry(
    table: Buffer,
    tableOffset: number,
    index: number,
    hi: number,
    lo: number,
    zero = 0,
    alloc = 0,
  ): Promise<void> {
    const at = index * this.g.l2EntrySize;
    table.writeUInt32BE(hi >>> 0, at);
    table.writeUInt32BE(lo >>> 0, at + 4);
    if (this.g.extendedL2) {
      table.writeUInt32BE(zero >>> 0, at + 8);
      table.writeUInt32BE(alloc >>> 0, at + 12);
    }
    await this.file.writeAt(tableOffset + at, table.subarray(at, at + this.g.l2EntrySize));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, data.length);
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
    const cs = this.g.clusterSize;
    const first = offset % cs;
    if (first + buf.length <= cs && buf.length > 0) {
      // Fast path: a write inside one cluster this image already owns (COPIED) is one data write in
      // place, decided synchronously from the cached L1 and L2 tables; no metadata changes.
      const host = this.ownedHost(offset - first);
      if (host >= 0) {
        this.modified = true;
        await this.file.writeAt(host + first, buf);
        return;
      }
    }
    let pos = offset;
    const end = offset + buf.length;
    this.modified = true;
    while (pos < end) {
      const cluster = Math.floor(pos / cs);
      const inCluster = pos - cluster * cs;
      const n = Math.min(cs - inCluster, end - pos);
      if (inCluster === 0 && n === cs) {
        const done = await this.writeFullClusters(cluster, buf.subarray(pos - offset, end - offset));
        if (done > 0) {
          pos += done * cs;
          continue;
        }
      }
      await this.writeInCluster(cluster, inCluster, buf.subarray(pos - offset, pos - offset + n));
      pos += n;
    }
  }

  /**
   * Host offset of the guest cluster at `clusterGuest` when it is a plain data cluster owned by this
   * image alone (L1 and L2 entries COPIED, L2 table cached, no extended L2), so that guest bytes
   * can be overwritten in place; -1 when the general path must decide.
   */
  private ownedHost(clusterGuest: number): number {
    if (this.g.extendedL2) return -1;
    const cluster = clusterGuest / this.g.clusterSize;
    const l1At = Math.floor(cluster / this.g.l2Entries) * 8;
    const l1Hi = this.l1.readUInt32BE(l1At);
    if (!(l1Hi & L2_COPIED_HI)) return -1;
    const l2Offset = entryOffset(l1Hi, this.l1.readUInt32BE(l1At + 4));
    if (l2Offset === 0) return -1;
    const table = this.cachedL2(l2Offset);
    if (!table) return -1;
    const at = (cluster % this.g.l2Entries) * 8;
    const hi = table.readUInt32BE(at);
    const lo = table.readUInt32BE(at + 4);
    if (!(hi & L2_COPIED_HI) || this.classify(hi, lo) !== 'data') return -1;
    const host = entryOffset(hi, lo);
    return host !== 0 && host % this.g.clusterSize === 0 ? host : -1;
  }

  /**
   * Fast path for whole clusters that need fresh allocation: one contiguous allocation, one data
   * write, one L2 write. Returns how many clusters it wrote (0 when the first needs the slow path).
   */
  private async writeFullClusters(cluster: number, data: Buffer): Promise<number> {
    const cs = this.g.clusterSize;
    const { table, offset: l2Offset } = await this.writableL2(cluster);
    const first = cluster % this.g.l2Entries;
    const maxN = Math.min(Math.floor(data.length / cs), this.g.l2Entries - first);
    const olds: [number, number][] = [];
    let n = 0;
    for (; n < maxN; n++) {
      const s = this.slotIn(table, l2Offset, first + n);
      const kind = this.classify(s.hi, s.lo);
      if (kind === 'data' && s.hi & L2_COPIED_HI) break;
      olds.push([s.hi, s.lo]);
    }
    if (n === 0) return 0;
    const host = await this.allocate(n);
    await this.file.writeAt(host, data.subarray(0, n * cs));
    const es = this.g.l2EntrySize;
    for (let k = 0; k < n; k++) {
      const at = (first + k) * es;
      writeU64(table, at, host + k * cs);
      table.writeUInt32BE((table.readUInt32BE(at) | L2_COPIED_HI) >>> 0, at);
      if (this.g.extendedL2) {
        table.writeUInt32BE(0, at + 8);
        table.writeUInt32BE(FULL_MASK, at + 12);
      }
    }
    await this.file.writeAt(l2Offset + first * es, table.subarray(first * es, (first + n) * es));
    for (const [hi, lo] of olds) await this.release(hi, lo);
    return n;
  }

  private async writeInCluster(cluster: number, inCluster: number, data: Buffer): Promise<void> {
    const cs = this.g.clusterSize;
    const clusterGuest = cluster * cs;
    const { table, offset: l2Offset } = await this.writableL2(cluster);
    const s = this.slotIn(table, l2Offset, cluster % this.g.l2Entries);
    const kind = this.classify(s.hi, s.lo);
    const host = entryOffset(s.hi, s.lo);
    if (kind === 'data' && s.hi & L2_COPIED_HI) {
      if (!this.g.extendedL2) {
        await this.file.writeAt(host + inCluster, data);
        return;
      }
      const sub = this.g.subclusterSize;
      const s0 = Math.floor(inCluster / sub);
      const s1 = Math.floor((inCluster + data.length - 1) / sub);
      const mask = rangeMask(s0, s1);
      if ((s.alloc & mask) >>> 0 === mask) {
        await this.file.writeAt(host + inCluster, data);
        return;
      }
      // Some touched subclusters are not allocated: fill them whole (COW at subcluster granularity).
      const from = s0 * sub;
      const span = await this.readClipped(clusterGuest + from, (s1 + 1) * sub - from);
      data.copy(span, inCluster - from);
      await this.file.writeAt(host + from, span);
      await this.setL2Entry(
        table,
        l2Offset,
        s.index,
        s.hi,
        s.lo,
        (s.zero & ~mask) >>> 0,
        (s.alloc | mask) >>> 0,
      );
      return;
    }
    if (!this.g.extendedL2) {
      // The copy-on-write read (from this image or its backing chain) and the allocation (whose
      // refcount write must land before the data) are independent: run them side by side. The
      // writes keep their order: refcount, then data, then the L2 entry.
      const [allocated, read] = await Promise.allSettled([
        this.allocate(1),
        data.length === cs ? Promise.resolve(data) : this.readClipped(clusterGuest, cs),
      ]);
      if (allocated.status === 'rejected') throw allocated.reason;
      if (read.status === 'rejected') throw read.reason;
      const fresh = allocated.value;
      const content = read.value;
      if (content !== data) data.copy(content, inCluster);
      await this.file.writeAt(fresh, content);
      await this.setL2Entry(
        table,
        l2Offset,
        s.index,
        L2_COPIED_HI | Math.floor(fresh / 2 ** 32),
        fresh % 2 ** 32,
      );
    } else {
      const fresh = await this.allocate(1);
      const sub = this.g.subclusterSize;
      const s0 = Math.floor(inCluster / sub);
      const s1 = Math.floor((inCluster + data.length - 1) / sub);
      const mask = rangeMask(s0, s1);
      let alloc: number;
      let from: number;
      let to: number;
      if (kind === 'compressed') {
        alloc = FULL_MASK;
        from = 0;
        to = cs;
      } else if (kind === 'data') {
        alloc = (s.alloc | mask) >>> 0;
        from = 0;
        to = cs;
      } else {
        alloc = mask;
        from = s0 * sub;
        to = (s1 + 1) * sub;
      }
      const span = await this.readClipped(clusterGuest + from, to - from);
      data.copy(span, inCluster - from);
      await this.file.writeAt(fresh + from, span);
      const zero = kind === 'compressed' ? 0 : (s.zero & ~alloc) >>> 0;
      await this.setL2Entry(
        table,
        l2Offset,
        s.index,
        L2_COPIED_HI | Math.floor(fresh / 2 ** 32),
        fresh % 2 ** 32,
        zero,
        alloc,
      );
    }
    if (kind === 'compressed' || host !== 0) await this.release(s.hi, s.lo);
  }

  /**
   * Writes one whole cluster compressed (raw deflate, 4 KiB window), packing streams back to back
   * like QEMU. Only for clusters that are unallocated; falls back to a plain write when deflate
   * does not save space.
   */
  async writeCompressed(cluster: number, compressed: Buffer, plain: Buffer): Promise<void> {
    this.checkWritable();
    const cs = this.g.clusterSize;
    this.checkRange(cluster * cs, cs);
    if (compressed.length >= cs - 512) {
      await this.write(cluster * cs, plain);
      return;
    }
    this.modified = true;
    const { table, offset: l2Offset } = await this.writableL2(cluster);
    const s = this.slotIn(table, l2Offset, cluster % this.g.l2Entries);
    const kind = this.classify(s.hi, s.lo);
    if (kind === 'data' || kind === 'compressed' || entryOffset(s.hi, s.lo) !== 0) {
      await this.write(cluster * cs, plain);
      return;
    }
    let at = this.compressCursor;
    const room = at === 0 ? 0 : cs - (at % cs);
    if (at !== 0 && room >= compressed.length) {
      await this.adjustRefcounts(Math.floor(at / cs), 1, 1);
    } else {
      const fresh = await this.allocate(1);
      if (at !== 0 && fresh === Math.floor(at / cs) * cs + cs && room > 0) {
        await this.adjustRefcounts(Math.floor(at / cs), 1, 1);
      } else at = fresh;
    }
    await this.file.writeAt(at, compressed);
    const [hi, lo] = compressedEntry(at, compressed.length, this.g);
    await this.setL2Entry(table, l2Offset, s.index, hi, lo, 0, 0);
    const next = at + compressed.length;
    this.compressCursor = next % cs === 0 ? 0 : next;
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    await this.zeroOrDiscard(offset, length, 'zero');
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    await this.zeroOrDiscard(offset, length, 'discard');
  }

  private async zeroOrDiscard(offset: number, length: number, mode: 'zero' | 'discard'): Promise<void> {
    const cs = this.g.clusterSize;
    const end = offset + length;
    this.modified = true;
    let pos = offset;
    while (pos < end) {
      const cluster = Math.floor(pos / cs);
      const inCluster = pos - cluster * cs;
      const n = Math.min(cs - inCluster, end - pos);
      const whole = inCluster === 0 && (n === cs || pos + n === this.header.size);
      if (whole) await this.zeroCluster(cluster, mode);
      else if (mode === 'zero') {
        if (this.g.extendedL2) await this.zeroSubclusters(cluster, inCluster, n);
        else await this.writeInCluster(cluster, inCluster, Buffer.alloc(n));
      }
      pos += n;
    }
  }

  private async zeroSubclusters(cluster: number, inCluster: number, n: number): Promise<void> {
    const sub = this.g.subclusterSize;
    const s0 = Math.ceil(inCluster / sub);
    const s1 = Math.floor((inCluster + n) / sub) - 1;
    const slot = await this.slot(cluster);
    const kind = slot ? this.classify(slot.hi, slot.lo) : 'unallocated';
    const zeroBytes = async (from: number, to: number) => {
      if (to > from) await this.writeInCluster(cluster, from, Buffer.alloc(to - from));
    };
    if (s1 < s0 || kind === 'compressed' || (kind === 'data' && slot && !(slot.hi & L2_COPIED_HI))) {
      await zeroBytes(inCluster, inCluster + n);
      return;
    }
    await zeroBytes(inCluster, Math.min(s0 * sub, inCluster + n));
    await zeroBytes((s1 + 1) * sub, inCluster + n);
    const { table, offset } = await this.writableL2(cluster);
    const s = this.slotIn(table, offset, cluster % this.g.l2Entries);
    const mask = rangeMask(s0, s1);
    await this.setL2Entry(table, offset, s.index, s.hi, s.lo, (s.zero | mask) >>> 0, (s.alloc & ~mask) >>> 0);
  }

  /** Turns a whole cluster into a zero cluster (v3), or unallocates it (discard, or v2 without backing). */
  private async zeroCluster(cluster: number, mode: 'zero' | 'discard'): Promise<void> {
    const cs = this.g.clusterSize;
    const v3 = this.header.version === 3;
    const slot = await this.slot(cluster);
    if (!v3 && mode === 'zero' && this.backing) {
      // v2 has no zero flag: zeros over a backing file must be stored.
      await this.writeInCluster(cluster, 0, Buffer.alloc(Math.min(cs, this.header.size - cluster * cs)));
      return;
    }
    // Over a backing file a v3 discard keeps reading zeros (as QEMU does); elsewhere it unallocates.
    const reads = v3 && (mode === 'zero' || this.backing) ? 'zero' : 'unallocated';
    if (!slot && (reads === 'unallocated' || !this.backing)) return;
    const { table, offset } = await this.writableL2(cluster);
    const s = this.slotIn(table, offset, cluster % this.g.l2Entries);
    if (this.g.extendedL2)
      await this.setL2Entry(table, offset, s.index, 0, 0, reads === 'zero' ? FULL_MASK : 0, 0);
    else await this.setL2Entry(table, offset, s.index, 0, reads === 'zero' ? 1 : 0);
    if (s.hi & L2_COMPRESSED_HI || entryOffset(s.hi, s.lo) !== 0) await this.release(s.hi, s.lo);
  }

  // ---------------------------------------------------------------- resize and misc

  /** Grows the virtual size (shrinking is refused, as qemu-img does without --shrink). */
  async grow(size: number): Promise<void> {
    this.checkWritable();
    if (size < this.header.size)
      throw new NubesError('Unsupported', `${this.path}: shrinking is not supported`);
    const need = Math.ceil(size / this.g.clusterSize / this.g.l2Entries);
    if (need > this.header.l1Size) {
      const bytes = need * 8;
      const clusters = Math.ceil(bytes / this.g.clusterSize);
      const fresh = await this.allocate(clusters);
      const l1 = Buffer.alloc(clusters * this.g.clusterSize);
      this.l1.copy(l1);
      await this.file.writeAt(fresh, l1);
      const oldOffset = this.header.l1TableOffset;
      const oldClusters = Math.ceil((this.header.l1Size * 8) / this.g.clusterSize);
      // L1 size and offset are adjacent (bytes 36..47): one write switches to the new table.
      const fields = Buffer.alloc(12);
      fields.writeUInt32BE(need, 0);
      writeU64(fields, 4, fresh);
      await this.file.writeAt(36, fields);
      this.header.l1Size = need;
      this.header.l1TableOffset = fresh;
      this.l1 = l1.subarray(0, bytes);
      if (oldOffset !== 0 && oldClusters > 0)
        await this.adjustRefcounts(oldOffset / this.g.clusterSize, oldClusters, -1);
    }
    const sizeField = Buffer.alloc(8);
    writeU64(sizeField, 0, size);
    await this.file.writeAt(24, sizeField);
    this.header.size = size;
  }

  /**
   * Makes every guest cluster unallocated (reads fall through to the backing file again), as
   * `qemu-img commit` leaves the overlay. Each L1 entry is cleared before what it pointed to is
   * freed, so a crash leaks and never corrupts.
   */
  async makeEmpty(): Promise<void> {
    this.checkWritable();
    for (let i = 0; i < this.header.l1Size; i++) {
      const l2 = Qcow2Image.l1EntryOffset(this.l1, i);
      if (l2 === 0) continue;
      const table = Buffer.from(await this.loadL2(l2));
      this.l1.fill(0, i * 8, i * 8 + 8);
      await this.file.writeAt(this.header.l1TableOffset + i * 8, this.l1.subarray(i * 8, i * 8 + 8));
      this.l2Cache.delete(l2);
      for (let j = 0; j < this.g.l2Entries; j++) {
        const at = j * this.g.l2EntrySize;
        const hi = table.readUInt32BE(at);
        const lo = table.readUInt32BE(at + 4);
        if (hi & L2_COMPRESSED_HI || entryOffset(hi, lo) !== 0) await this.release(hi, lo);
      }
      await this.adjustRefcounts(l2 / this.g.clusterSize, 1, -1);
    }
    this.modified = true;
  }

  /** Replaces the in-memory active L1 table after snapshot operations rewrote it on disk. */
  replaceL1(l1: Buffer, offset: number, size: number): void {
    this.l1 = l1;
    this.header.l1TableOffset = offset;
    this.header.l1Size = size;
    this.l2Cache.clear();
  }

  /** Re-reads the active L1 table from disk (after another module rewrote entries in place). */
  async reloadL1(): Promise<void> {
    this.l1 = await this.file.readExact(this.header.l1TableOffset, this.header.l1Size * 8, 'L1 table');
    this.l2Cache.clear();
  }

  /** Forgets cached L2 tables and refcount blocks (after another module rewrote them). */
  dropCaches(): void {
    this.l2Cache.clear();
    this.refBlocks.clear();
    this.lastCompressed = undefined;
  }

  /** One past the highest host cluster in use or allocated. */
  get endCluster(): number {
    return this.highWater;
  }

  /**
   * Makes what was written durable: pads the file to whole sectors and, unless `sync: false`,
   * fsyncs it. `sync: false` is what `qemu-img convert` does by default (cache mode `unsafe`):
   * the content is complete and consistent for every reader, but a power loss may lose it.
   */
  async flush(options: { sync?: boolean } = {}): Promise<void> {
    if (this.readOnly) return;
    // Compressed streams may end mid-sector; QEMU reads whole sectors, so pad the file to 512.
    if (this.file.size % 512 !== 0) await this.file.truncate(Math.ceil(this.file.size / 512) * 512);
    if (options.sync === false) return;
    if (this.modified) await this.file.sync();
    this.modified = false;
  }

  /** Flushes (see {@link flush}: fsync unless `sync: false`) and closes the image and its backing chain. */
  async close(options: { sync?: boolean } = {}): Promise<void> {
    try {
      await this.flush(options);
    } finally {
      await this.file.close();
      await this.dataFile?.close();
      await this.backing?.close();
    }
  }
}
