import { parseInput } from '@nubes/core';
import { z } from 'zod';
import { RawImage } from '../io/raw-image.js';
import { COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, INCOMPAT_EXTL2 } from '../qcow2/format.js';
import type { Qcow2Image } from '../qcow2/image.js';
import { listSnapshots } from '../qcow2/snapshot-ops.js';
import type { DiskImage } from '../types.js';
import { openImage, resolveBacking } from './open.js';

/** `qemu-img info --output=json` for one image, with the same field names. */
export interface ImageInfo {
  'virtual-size': number;
  filename: string;
  format: 'qcow2' | 'raw';
  'actual-size': number;
  'dirty-flag': boolean;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: {
    id: string;
    name: string;
    'vm-state-size': number;
    'date-sec': number;
    'date-nsec': number;
    'vm-clock-sec': number;
    'vm-clock-nsec': number;
    icount?: number;
  }[];
  'format-specific'?: {
    type: 'qcow2';
    data: {
      compat: '0.10' | '1.1';
      'compression-type': 'zlib' | 'zstd';
      'lazy-refcounts'?: boolean;
      'refcount-bits': number;
      corrupt?: boolean;
      'extended-l2'?: boolean;
      'data-file'?: string;
      bitmaps?: { count: number };
    };
  };
}

const infoSchema = z.object({
  backingChain: z.boolean().default(false),
  format: z.enum(['qcow2', 'raw']).optional(),
});

/**
 * Describes an image like `qemu-img info --output=json` (an array for the whole chain with
 * `backingChain: true`, like `--backing-chain`). Only headers are read; nothing is written.
 */
export async function imageInfo(
  path: string,
  options: { backingChain?: boolean; format?: 'qcow2' | 'raw' } = {},
): Promise<ImageInfo[]> {
  const o = parseInput(infoSchema, options, 'options');
  const image = await openImage(path, { format: o.format, backing: o.backingChain });
  try {
    const out: ImageInfo[] = [];
    for (let layer: DiskImage | undefined = image; layer; layer = layer.backing) {
      out.push(await describe(layer));
      if (!o.backingChain) break;
    }
    return out;
  } finally {
    await image.close();
  }
}

/** Describes one open layer (not its backing). */
export async function describe(image: DiskImage): Promise<ImageInfo> {
  if (image instanceof RawImage) {
    return {
      'virtual-size': image.virtualSize,
      filename: image.path,
      format: 'raw',
      'actual-size': await image.host.allocatedBytes(),
      'dirty-flag': false,
    };
  }
  const q = image as Qcow2Image;
  const h = q.header;
  const info: ImageInfo = {
    'virtual-size': h.size,
    filename: q.path,
    format: 'qcow2',
    'actual-size': await q.file.allocatedBytes(),
    'dirty-flag': (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    'cluster-size': q.clusterSize,
  };
  if (h.backingFile) {
    info['backing-filename'] = h.backingFile;
    info['full-backing-filename'] = resolveBacking(q.path, h.backingFile);
    if (h.backingFormat) info['backing-filename-format'] = h.backingFormat;
  }
  const snaps = await listSnapshots(q);
  if (snaps.length > 0)
    info.snapshots = snaps.map((s) => ({
      icount: s.icount ?? 0,
      'vm-clock-nsec': s.vmClockNsec % 1e9,
      name: s.name,
      'date-sec': s.dateSec,
      'date-nsec': s.dateNsec,
      'vm-clock-sec': Math.floor(s.vmClockNsec / 1e9),
      id: s.id,
      'vm-state-size': s.vmStateSize,
    }));
  const data: NonNullable<ImageInfo['format-specific']>['data'] = {
    compat: h.version === 3 ? '1.1' : '0.10',
    'compression-type': h.compressionType === 1 ? 'zstd' : 'zlib',
    'refcount-bits': 2 ** h.refcountOrder,
  };
  if (h.version === 3) {
    data['lazy-refcounts'] = (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
    data.corrupt = (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
    data['extended-l2'] = (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  }
  if (h.dataFile) data['data-file'] = h.dataFile;
  if (h.bitmaps) data.bitmaps = { count: h.bitmaps.count };
  info['format-specific'] = { type: 'qcow2', data };
  return info;
}
