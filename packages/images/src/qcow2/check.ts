import type { ProgressListener } from '../types.js';
import { compressedRange, entryOffset, L2_COMPRESSED_HI, L2_COPIED_HI, readU64 } from './format.js';
import type { Qcow2Image } from './image.js';
import { readSnapshotTable } from './snapshots.js';

/** The outcome of a consistency check, with qemu-img's vocabulary (leaks versus corruptions). */
export interface CheckResult {
  filename: string;
  format: 'qcow2' | 'raw';
  /** Clusters that are referenced more often than their refcount says, or metadata that is invalid. */
  corruptions: number;
  /** Clusters whose refcount is higher than their references: wasted space, harmless. */
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  /** Errors that kept the check from completing (unreadable metadata). */
  checkErrors: number;
  /** One past the last host byte in use. */
  imageEndOffset: number;
  /** Guest clusters of the virtual disk. */
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  /** Human-readable findings, one per problem (as qemu-img prints them). */
  messages: string[];
}

/** Whether and what {@link checkQcow2} repairs: like `qemu-img check -r leaks|all`. */
export type RepairMode = 'none' | 'leaks' | 'all';

interface Walk {
  refs: Float64Array;
  result: CheckResult;
  copiedFixes: { table: 'l1' | 'l2'; tableOffset: number; index: number; set: boolean }[];
}

async function walk(img: Qcow2Image): Promise<Walk> {
  const cs = img.clusterSize;
  const g = img.g;
  const h = img.header;
  const file = img.file;
  const nClusters = Math.ceil(file.size / cs);
  const refs = new Float64Array(nClusters);
  const result: CheckResult = {
    filename: img.path,
    format: 'qcow2',
    corruptions: 0,
    leaks: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    checkErrors: 0,
    imageEndOffset: 0,
    totalClusters: Math.ceil(h.size / cs),
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
    messages: [],
  };
  const inc = (offset: number, length: number, what: string) => {
    if (length <= 0) return;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    for (let c = first; c <= last; c++) {
      if (c >= nClusters) {
        result.corruptions++;
        result.messages.push(`ERROR ${what} at offset ${offset} is beyond the end of the image file`);
        return;
      }
      refs[c] = (refs[c] as number) + 1;
    }
  };
  const l2Seen = new Set<number>();
  const walkL1 = async (l1: Buffer, l1Offset: number, active: boolean, what: string) => {
    inc(l1Offset, l1.length, `${what} L1 table`);
    let lastHost = -1;
    for (let i = 0; i < l1.length / 8; i++) {
      const hi = l1.readUInt32BE(i * 8);
      const l2 = entryOffset(hi, l1.readUInt32BE(i * 8 + 4));
      if (l2 === 0) continue;
      if (l2 % cs !== 0 || l2 + cs > file.size) {
        result.corruptions++;
        result.messages.push(`ERROR ${what} L2 table offset ${l2} is invalid`);
        continue;
      }
      inc(l2, cs, 'L2 table');
      let table: Buffer;
      try {
        table = await img.loadL2(l2);
      } catch {
        result.checkErrors++;
        continue;
      }
      if (active) l2Seen.add(l2);
      for (let j = 0; j < g.l2Entries; j++) {
        const at = j * g.l2EntrySize;
        const ehi = table.readUInt32BE(at);
        const elo = table.readUInt32BE(at + 4);
        if (ehi & L2_COMPRESSED_HI) {
          const r = compressedRange(ehi, elo, g);
          if (ehi & L2_COPIED_HI) {
            result.corruptions++;
            result.messages.push(`ERROR compressed cluster ${j} of L2 at ${l2} has the COPIED flag`);
          }
          inc(r.offset, r.length, 'compressed cluster');
          if (active) {
            result.allocatedClusters++;
            result.compressedClusters++;
          }
          continue;
        }
        const host = entryOffset(ehi, elo);
        if (host === 0) continue;
        if (host % cs !== 0) {
          result.corruptions++;
          result.messages.push(`ERROR data cluster ${host} in L2 at ${l2} is not cluster aligned`);
          continue;
        }
        inc(host, cs, 'data cluster');
        if (active) {
          const zeroFlag = !g.extendedL2 && h.version === 3 && (elo & 1) === 1;
          const allocated = g.extendedL2 ? table.readUInt32BE(at + 12) !== 0 : !zeroFlag;
          if (allocated) {
            result.allocatedClusters++;
            if (lastHost >= 0 && host !== lastHost + cs) result.fragmentedClusters++;
            lastHost = host;
          }
        }
      }
    }
  };
  inc(0, cs, 'header');
  await walkL1(img.l1Table, h.l1TableOffset, true, 'active');
  try {
    const snaps = await readSnapshotTable(file, h.snapshotsOffset, h.nbSnapshots, cs);
    inc(h.snapshotsOffset, snaps.byteLength, 'snapshot table');
    for (const s of snaps.entries) {
      const l1 = await file.readExact(s.l1TableOffset, s.l1Size * 8, 'snapshot L1 table');
      await walkL1(l1, s.l1TableOffset, false, `snapshot ${s.id}`);
    }
  } catch (error) {
    result.checkErrors++;
    result.messages.push(`ERROR reading snapshots: ${(error as Error).message}`);
  }
  if (h.bitmaps && h.bitmaps.directorySize > 0) await walkBitmaps(img, inc, result);
  const rt = img.refcountTable;
  inc(h.refcountTableOffset, h.refcountTableClusters * cs, 'refcount table');
  for (let i = 0; i < rt.length / 8; i++) {
    const block = readU64(rt, i * 8, img.path, 'refcount table entry') & ~511;
    if (block === 0) continue;
    if (block % cs !== 0 || block + cs > file.size) {
      result.corruptions++;
      result.messages.push(`ERROR refcount block ${i} at ${block} is invalid`);
      continue;
    }
    inc(block, cs, 'refcount block');
  }
  return { refs, result, copiedFixes: [] };
}

async function walkBitmaps(
  img: Qcow2Image,
  inc: (offset: number, length: number, what: string) => void,
  result: CheckResult,
): Promise<void> {
  const b = img.header.bitmaps;
  if (!b) return;
  try {
    const dir = await img.file.readExact(b.directoryOffset, b.directorySize, 'bitmap directory');
    inc(b.directoryOffset, b.directorySize, 'bitmap directory');
    let at = 0;
    for (let i = 0; i < b.count && at + 24 <= dir.length; i++) {
      const tableOffset = readU64(dir, at, img.path, 'bitmap table offset');
      const tableSize = dir.readUInt32BE(at + 8);
      const nameSize = dir.readUInt16BE(at + 18);
      const extra = dir.readUInt32BE(at + 20);
      const table = await img.file.readExact(tableOffset, tableSize * 8, 'bitmap table');
      inc(tableOffset, tableSize * 8, 'bitmap table');
      for (let j = 0; j < tableSize; j++) {
        const data = entryOffset(table.readUInt32BE(j * 8), table.readUInt32BE(j * 8 + 4));
        if (data !== 0) inc(data, img.clusterSize, 'bitmap data');
      }
      at += Math.ceil((24 + extra + nameSize) / 8) * 8;
    }
  } catch (error) {
    result.checkErrors++;
    result.messages.push(`ERROR reading bitmaps: ${(error as Error).message}`);
  }
}

/**
 * Checks a qcow2 image like `qemu-img check`: recomputes every cluster's references from the
 * L1/L2 tables (active and snapshots), refcount structures and bitmaps, compares them with the
 * stored refcounts and the COPIED flags, and optionally repairs.
 */
export async function checkQcow2(
  img: Qcow2Image,
  repair: RepairMode = 'none',
  onProgress?: ProgressListener,
): Promise<CheckResult> {
  const first = await compare(img, onProgress);
  if (repair === 'none' || (first.result.leaks === 0 && first.result.corruptions === 0)) return first.result;
  const fixed = await applyRepairs(img, first, repair);
  const after = await compare(img);
  after.result.leaksFixed = fixed.leaks;
  after.result.corruptionsFixed = fixed.corruptions;
  after.result.messages = [...first.result.messages, ...after.result.messages];
  return after.result;
}

async function compare(
  img: Qcow2Image,
  onProgress?: ProgressListener,
): Promise<Walk & { mismatches: [number, number, number][] }> {
  const w = await walk(img);
  const { refs, result } = w;
  const mismatches: [number, number, number][] = [];
  let end = 0;
  const total = Math.max(refs.length, img.endCluster);
  for (let c = 0; c < total; c++) {
    const computed = c < refs.length ? (refs[c] as number) : 0;
    let stored: number;
    try {
      stored = await img.refcount(c);
    } catch {
      result.checkErrors++;
      continue;
    }
    if (stored > 0 || computed > 0) end = c + 1;
    if (stored !== computed) {
      mismatches.push([c, stored, computed]);
      if (computed < stored) {
        result.leaks++;
        result.messages.push(`Leaked cluster ${c} refcount=${stored} reference=${computed}`);
      } else {
        result.corruptions++;
        result.messages.push(`ERROR cluster ${c} refcount=${stored} reference=${computed}`);
      }
    }
    if (onProgress && c % 65536 === 0) onProgress({ operation: 'check', done: c, total });
  }
  result.imageEndOffset = end * img.clusterSize;
  // COPIED must be set exactly where the refcount is one, in the active tables.
  const l1 = img.l1Table;
  const g = img.g;
  for (let i = 0; i < l1.length / 8; i++) {
    const hi = l1.readUInt32BE(i * 8);
    const l2 = entryOffset(hi, l1.readUInt32BE(i * 8 + 4));
    if (l2 === 0 || l2 % img.clusterSize !== 0 || l2 >= img.file.size) continue;
    const rc = await img.refcount(l2 / img.clusterSize);
    if ((rc === 1) !== ((hi & L2_COPIED_HI) !== 0)) {
      result.corruptions++;
      result.messages.push(`ERROR OFLAG_COPIED L2 cluster: l1_index=${i} refcount=${rc}`);
      w.copiedFixes.push({ table: 'l1', tableOffset: img.header.l1TableOffset, index: i, set: rc === 1 });
    }
    const table = await img.loadL2(l2);
    for (let j = 0; j < g.l2Entries; j++) {
      const ehi = table.readUInt32BE(j * g.l2EntrySize);
      if (ehi & L2_COMPRESSED_HI) continue;
      const host = entryOffset(ehi, table.readUInt32BE(j * g.l2EntrySize + 4));
      if (host === 0 || host % img.clusterSize !== 0) continue;
      const drc = await img.refcount(host / img.clusterSize);
      if ((drc === 1) !== ((ehi & L2_COPIED_HI) !== 0)) {
        result.corruptions++;
        result.messages.push(`ERROR OFLAG_COPIED data cluster: l2_entry=${host} refcount=${drc}`);
        w.copiedFixes.push({ table: 'l2', tableOffset: l2, index: j, set: drc === 1 });
      }
    }
  }
  return { ...w, mismatches };
}

async function applyRepairs(
  img: Qcow2Image,
  w: Walk & { mismatches: [number, number, number][] },
  mode: RepairMode,
): Promise<{ leaks: number; corruptions: number }> {
  let leaks = 0;
  let corruptions = 0;
  for (const [c, stored, computed] of w.mismatches) {
    if (computed < stored) {
      await img.setRefcountValue(c, computed);
      leaks++;
    } else if (mode === 'all') {
      await img.setRefcountValue(c, computed);
      corruptions++;
    }
  }
  if (mode === 'all') {
    corruptions += await fixCopiedFlags(img);
  }
  img.dropCaches();
  return { leaks, corruptions };
}

/** Sets COPIED on active L1/L2 entries exactly where the refcount is one. Returns entries changed. */
export async function fixCopiedFlags(img: Qcow2Image): Promise<number> {
  let changed = 0;
  const l1 = img.l1Table;
  const g = img.g;
  const cs = img.clusterSize;
  for (let i = 0; i < l1.length / 8; i++) {
    const hi = l1.readUInt32BE(i * 8);
    const l2 = entryOffset(hi, l1.readUInt32BE(i * 8 + 4));
    if (l2 === 0) continue;
    const rc = await img.refcount(l2 / cs);
    const want = rc === 1 ? (hi | L2_COPIED_HI) >>> 0 : (hi & ~L2_COPIED_HI) >>> 0;
    if (want !== hi) {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(want);
      await img.file.writeAt(img.header.l1TableOffset + i * 8, b);
      changed++;
    }
    const table = await img.loadL2(l2);
    for (let j = 0; j < g.l2Entries; j++) {
      const at = j * g.l2EntrySize;
      const ehi = table.readUInt32BE(at);
      if (ehi & L2_COMPRESSED_HI) continue;
      const host = entryOffset(ehi, table.readUInt32BE(at + 4));
      if (host === 0) continue;
      const drc = await img.refcount(host / cs);
      const ewant = drc === 1 ? (ehi | L2_COPIED_HI) >>> 0 : (ehi & ~L2_COPIED_HI) >>> 0;
      if (ewant !== ehi) {
        table.writeUInt32BE(ewant, at);
        await img.file.writeAt(l2 + at, table.subarray(at, at + 4));
        changed++;
      }
    }
  }
  await img.reloadL1();
  return changed;
}

/** Repairs an image in place (used when opening a dirty image for writing). */
export async function repairImage(img: Qcow2Image, mode: RepairMode): Promise<CheckResult> {
  return checkQcow2(img, mode);
}
