import { parseInput } from '@nubes/core';
import { z } from 'zod';
import { type CheckResult, checkQcow2 } from '../qcow2/check.js';
import { Qcow2Image } from '../qcow2/image.js';
import type { ProgressListener } from '../types.js';
import { openImage } from './open.js';

const checkSchema = z.object({
  repair: z.enum(['none', 'leaks', 'all']).default('none'),
  format: z.enum(['qcow2', 'raw']).optional(),
});

/**
 * Checks an image like `qemu-img check` (and repairs with `repair: 'leaks' | 'all'`). The backing
 * chain is not opened: a check looks at this file only. Raw images have nothing to check.
 */
export async function checkImage(
  path: string,
  options: {
    repair?: 'none' | 'leaks' | 'all';
    format?: 'qcow2' | 'raw';
    onProgress?: ProgressListener;
  } = {},
): Promise<CheckResult> {
  const o = parseInput(checkSchema, { repair: options.repair, format: options.format }, 'options');
  const image = await openImage(path, { writable: o.repair !== 'none', backing: false, format: o.format });
  try {
    if (!(image instanceof Qcow2Image))
      return {
        filename: path,
        format: 'raw',
        corruptions: 0,
        leaks: 0,
        corruptionsFixed: 0,
        leaksFixed: 0,
        checkErrors: 0,
        imageEndOffset: image.virtualSize,
        totalClusters: 0,
        allocatedClusters: 0,
        fragmentedClusters: 0,
        compressedClusters: 0,
        messages: [],
      };
    return await checkQcow2(image, o.repair, options.onProgress);
  } finally {
    await image.close();
  }
}

/** The JSON object `qemu-img check --output=json` prints for a result. */
export function checkResultJson(r: CheckResult): Record<string, unknown> {
  const out: Record<string, unknown> = {
    'image-end-offset': r.imageEndOffset,
    'total-clusters': r.totalClusters,
    'check-errors': r.checkErrors,
  };
  if (r.allocatedClusters) {
    out['allocated-clusters'] = r.allocatedClusters;
    out['fragmented-clusters'] = r.fragmentedClusters;
    out['compressed-clusters'] = r.compressedClusters;
  }
  out.filename = r.filename;
  out.format = r.format;
  if (r.leaks) out.leaks = r.leaks;
  if (r.corruptions) out.corruptions = r.corruptions;
  if (r.leaksFixed) out['leaks-fixed'] = r.leaksFixed;
  if (r.corruptionsFixed) out['corruptions-fixed'] = r.corruptionsFixed;
  return out;
}

/** qemu-img check's exit status: 0 clean, 2 corruptions, 3 leaks only (1 is for a check that could not run). */
export function checkExitCode(r: CheckResult): number {
  if (r.checkErrors > 0) return 1;
  if (r.corruptions > 0) return 2;
  if (r.leaks > 0) return 3;
  return 0;
}
