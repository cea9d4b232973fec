import { NubesError } from '@nubes/core';
import { HostFile } from '../io/host-file.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  geometry,
  INCOMPAT_EXTL2,
  L2_COPIED_HI,
  l1EntriesFor,
  type Qcow2Header,
  serializeHeader,
  setRefcount,
  writeU64,
} from './format.js';

/** Everything that shapes a new qcow2 file (validated by the public `createImage`). */
export interface Qcow2CreateSpec {
  size: number;
  clusterSize: number;
  version: 2 | 3;
  refcountBits: number;
  extendedL2: boolean;
  lazyRefcounts: boolean;
  preallocation: 'off' | 'metadata';
  backingFile?: string;
  backingFormat?: string;
}

/** Where each structure of a new image goes, in clusters. Pure, so it can be tested and measured. */
export interface Qcow2Layout {
  refTableCluster: number;
  refTableClusters: number;
  refBlockCluster: number;
  refBlocks: number;
  l1Cluster: number;
  l1Clusters: number;
  l1Size: number;
  l2Cluster: number;
  l2Tables: number;
  dataCluster: number;
  dataClusters: number;
  totalClusters: number;
}

/** Lays out a new image: header, refcount table, refcount blocks, L1, then (preallocated) L2s and data. */
export function planLayout(spec: Qcow2CreateSpec): Qcow2Layout {
  const g = geometry(Math.log2(spec.clusterSize), Math.log2(spec.refcountBits), spec.extendedL2);
  const cs = g.clusterSize;
  const l1Size = l1EntriesFor(spec.size, g);
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  const meta = spec.preallocation === 'metadata';
  const l2Tables = meta ? l1Size : 0;
  const dataClusters = meta ? Math.ceil(spec.size / cs) : 0;
  const fixed = 1 + l1Clusters + l2Tables + dataClusters;
  let refTableClusters = 1;
  let refBlocks = 1;
  for (;;) {
    const total = fixed + refTableClusters + refBlocks;
    const blocks = Math.ceil(total / g.refblockEntries);
    const tableClusters = Math.ceil((blocks * 8) / cs);
    if (blocks === refBlocks && tableClusters === refTableClusters) break;
    refBlocks = Math.max(refBlocks, blocks);
    refTableClusters = Math.max(refTableClusters, tableClusters);
  }
  const refTableCluster = 1;
  const refBlockCluster = refTableCluster + refTableClusters;
  const l1Cluster = refBlockCluster + refBlocks;
  const l2Cluster = l1Cluster + l1Clusters;
  const dataCluster = l2Cluster + l2Tables;
  return {
    refTableCluster,
    refTableClusters,
    refBlockCluster,
    refBlocks,
    l1Cluster,
    l1Clusters,
    l1Size,
    l2Cluster,
    l2Tables,
    dataCluster,
    dataClusters,
    totalClusters: dataCluster + dataClusters,
  };
}

/** The header a new image starts with. */
export function newHeader(spec: Qcow2CreateSpec, layout: Qcow2Layout): Qcow2Header {
  const cs = spec.clusterSize;
  const h: Qcow2Header = {
    version: spec.version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: Math.log2(cs),
    size: spec.size,
    cryptMethod: 0,
    l1Size: layout.l1Size,
    l1TableOffset: layout.l1Cluster * cs,
    refcountTableOffset: layout.refTableCluster * cs,
    refcountTableClusters: layout.refTableClusters,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: spec.extendedL2 ? INCOMPAT_EXTL2 : 0n,
    compatibleFeatures: spec.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: 0n,
    refcountOrder: Math.log2(spec.refcountBits),
    headerLength: spec.version === 3 ? 112 : 72,
    compressionType: 0,
    featureNames: [],
    hasCryptoHeader: false,
    otherExtensions: [],
  };
  if (spec.backingFile) {
    h.backingFile = spec.backingFile;
    if (spec.backingFormat) h.backingFormat = spec.backingFormat;
  }
  return h;
}

/**
 * Writes a new qcow2 file at `path` (which must not exist: a failed create never clobbers a file).
 * Structures are written before the header, so a crash mid-way leaves a file without a valid magic.
 */
export async function writeNewQcow2(path: string, spec: Qcow2CreateSpec): Promise<void> {
  const layout = planLayout(spec);
  const header = newHeader(spec, layout);
  const headerBytes = serializeHeader(header);
  if (headerBytes.length > spec.clusterSize)
    throw new NubesError('InvalidInput', 'backing file name does not fit in the header cluster', {
      details: { field: 'backingFile' },
    });
  const g = geometry(header.clusterBits, header.refcountOrder, spec.extendedL2);
  const cs = spec.clusterSize;
  const file = await HostFile.create(path, true);
  try {
    const table = Buffer.alloc(layout.refTableClusters * cs);
    for (let b = 0; b < layout.refBlocks; b++) writeU64(table, b * 8, (layout.refBlockCluster + b) * cs);
    // Refcount blocks in chunks: every cluster below totalClusters is in use exactly once.
    for (let b = 0; b < layout.refBlocks; b++) {
      const block = Buffer.alloc(cs);
      const first = b * g.refblockEntries;
      const last = Math.min(layout.totalClusters, first + g.refblockEntries);
      for (let c = first; c < last; c++) setRefcount(block, c - first, g.refcountOrder, 1);
      await file.writeAt((layout.refBlockCluster + b) * cs, block);
    }
    await file.writeAt(layout.refTableCluster * cs, table);
    const l1 = Buffer.alloc(layout.l1Clusters * cs);
    if (spec.preallocation === 'metadata') {
      const perTable = g.l2Entries;
      for (let t = 0; t < layout.l2Tables; t++) {
        const l2Off = (layout.l2Cluster + t) * cs;
        writeU64(l1, t * 8, l2Off);
        l1.writeUInt32BE((l1.readUInt32BE(t * 8) | L2_COPIED_HI) >>> 0, t * 8);
        const l2 = Buffer.alloc(cs);
        for (let i = 0; i < perTable; i++) {
          const guest = t * perTable + i;
          if (guest >= layout.dataClusters) break;
          const at = i * g.l2EntrySize;
          writeU64(l2, at, (layout.dataCluster + guest) * cs);
          l2.writeUInt32BE((l2.readUInt32BE(at) | L2_COPIED_HI) >>> 0, at);
          // Preallocated clusters hold zeros on a sparse file; mark them as data, as QEMU does.
          if (spec.extendedL2) l2.writeUInt32BE(0xffffffff, at + 12);
        }
        await file.writeAt(l2Off, l2);
      }
    }
    await file.writeAt(layout.l1Cluster * cs, l1);
    await file.truncate(layout.totalClusters * cs);
    const first = Buffer.alloc(cs);
    headerBytes.copy(first);
    await file.writeAt(0, first);
    await file.sync();
  } finally {
    await file.close();
  }
}
