import { parseInput } from '@nubes/core';
import { z } from 'zod';
import { geometry } from '../qcow2/format.js';
import { mapImage } from './map.js';

/** What `qemu-img measure --output=json` reports. */
export interface MeasureResult {
  /** Bytes the output needs for the given content. */
  required: number;
  /** Bytes the output needs when every cluster is allocated. */
  'fully-allocated': number;
  /** Bytes of persistent bitmaps (always 0: bitmaps are not copied). */
  bitmaps?: number;
}

function refcountMetadataBytes(clusters: number, cs: number, refcountOrder: number): number {
  const perBlock = (cs * 8) / 2 ** refcountOrder;
  const perTableCluster = cs / 8;
  let table = 0;
  let blocks = 0;
  for (;;) {
    const last = table;
    blocks = Math.ceil((clusters + table + blocks) / perBlock);
    table = Math.ceil(blocks / perTableCluster);
    if (table === last) break;
  }
  return (blocks + table) * cs;
}

/** Size of a qcow2 file with every cluster of `size` bytes allocated, computed like QEMU. */
export function fullyAllocatedQcow2(size: number, cs: number, refcountOrder = 4, extendedL2 = false): number {
  const g = geometry(Math.log2(cs), refcountOrder, extendedL2);
  const aligned = Math.ceil(size / cs) * cs;
  let meta = cs;
  const nl2e = Math.ceil(aligned / cs / g.l2Entries) * g.l2Entries;
  meta += nl2e * g.l2EntrySize;
  const nl1e = Math.ceil((nl2e * g.l2EntrySize) / cs / (cs / 8)) * (cs / 8);
  meta += nl1e * 8;
  meta += refcountMetadataBytes((meta + aligned) / cs, cs, refcountOrder);
  return meta + aligned;
}

const measureSchema = z
  .object({
    size: z.number().int().min(0).optional(),
    source: z.string().min(1).optional(),
    outputFormat: z.enum(['qcow2', 'raw']).default('qcow2'),
    clusterSize: z.number().int().min(512).max(2097152).default(65536),
    refcountBits: z.number().int().default(16),
    extendedL2: z.boolean().default(false),
  })
  .refine((o) => (o.size === undefined) !== (o.source === undefined), {
    message: 'give exactly one of size and source',
    path: ['size'],
  });

/**
 * How large an image would be (`qemu-img measure`): for a new one of `size` bytes, or for
 * converting `source` (its allocated data counted per output cluster).
 */
export async function measureImage(options: {
  size?: number;
  source?: string;
  outputFormat?: 'qcow2' | 'raw';
  clusterSize?: number;
  refcountBits?: number;
  extendedL2?: boolean;
}): Promise<MeasureResult> {
  const o = parseInput(measureSchema, options, 'options');
  let virtualSize = o.size ?? 0;
  let data = 0;
  if (o.source) {
    const map = await mapImage(o.source);
    virtualSize = map.reduce((end, e) => Math.max(end, e.start + e.length), 0);
    const cs = o.outputFormat === 'qcow2' ? o.clusterSize : 512;
    let lastCluster = -1;
    for (const e of map) {
      if (!e.data) continue;
      const first = Math.max(Math.floor(e.start / cs), lastCluster + 1);
      const last = Math.floor((e.start + e.length - 1) / cs);
      if (last >= first) data += (last - first + 1) * cs;
      lastCluster = Math.max(lastCluster, last);
    }
  }
  if (o.outputFormat === 'raw') {
    const size = Math.ceil(virtualSize / 512) * 512;
    return { required: o.source ? Math.min(data, size) : size, 'fully-allocated': size };
  }
  const full = fullyAllocatedQcow2(virtualSize, o.clusterSize, Math.log2(o.refcountBits), o.extendedL2);
  const aligned = Math.ceil(virtualSize / o.clusterSize) * o.clusterSize;
  const result: MeasureResult = { required: full - aligned + data, 'fully-allocated': full };
  if (o.source) result.bitmaps = 0;
  return result;
}
