import type { DiskImage } from '../types.js';
import { openImage } from './open.js';

/** One run of `qemu-img map --output=json`. */
export interface MapEntry {
  start: number;
  length: number;
  /** How many layers down the chain the bytes come from (0 = the top image). */
  depth: number;
  /** True when some layer of the chain defines the bytes (data or zero). */
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Host offset in the layer that holds the data (uncompressed data only). */
  offset?: number;
  compressed?: boolean;
}

/** Status of one run through the chain: the first layer that allocates it decides. */
async function chainStatus(
  image: DiskImage,
  offset: number,
  length: number,
): Promise<Omit<MapEntry, 'start'>> {
  let depth = 0;
  let len = length;
  for (let layer: DiskImage | undefined = image; layer; layer = layer.backing, depth++) {
    if (offset >= layer.virtualSize) return { length: len, depth, present: false, zero: true, data: false };
    const ext = await layer.status(offset, Math.min(len, layer.virtualSize - offset));
    len = ext.length;
    if (ext.kind === 'data')
      return {
        length: len,
        depth,
        present: true,
        zero: false,
        data: true,
        ...(ext.hostOffset !== undefined ? { offset: ext.hostOffset } : {}),
        ...(ext.compressed ? { compressed: true } : {}),
      };
    if (ext.kind === 'zero') return { length: len, depth, present: true, zero: true, data: false };
    if (!layer.backing) return { length: len, depth, present: false, zero: true, data: false };
  }
  return { length: len, depth: depth - 1, present: false, zero: true, data: false };
}

/** The allocation map of an open image and its chain, merged like qemu-img's. */
export async function mapOpenImage(image: DiskImage): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  let pos = 0;
  while (pos < image.virtualSize) {
    const s = await chainStatus(image, pos, image.virtualSize - pos);
    const last = out[out.length - 1];
    const contiguous =
      last &&
      last.depth === s.depth &&
      last.present === s.present &&
      last.zero === s.zero &&
      last.data === s.data &&
      last.compressed === s.compressed &&
      (last.offset === undefined ? s.offset === undefined : s.offset === last.offset + last.length);
    if (contiguous) last.length += s.length;
    else out.push({ start: pos, ...s });
    pos += s.length;
  }
  return out;
}

/** `qemu-img map --output=json`: the allocation map of an image through its backing chain. */
export async function mapImage(
  path: string,
  options: { format?: 'qcow2' | 'raw' } = {},
): Promise<MapEntry[]> {
  const image = await openImage(path, { format: options.format });
  try {
    return await mapOpenImage(image);
  } finally {
    await image.close();
  }
}
