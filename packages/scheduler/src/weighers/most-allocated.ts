import type { Weigher } from '../plugin.js';
import {
  checkResourceWeights,
  DEFAULT_RESOURCE_WEIGHTS,
  type ResourceWeights,
  requestedWith,
} from './allocation.js';

/**
 * Pack (kube's NodeResourcesFit `MostAllocated`), a score 0..100:
 * `sum_r w_r * requested_r * 100 / alloc_r / sum_r w_r`, with `requested` capped at `alloc`.
 */
export function mostAllocatedWeigher(resources: ResourceWeights = DEFAULT_RESOURCE_WEIGHTS): Weigher {
  const entries = checkResourceWeights(resources, 'resources');
  const total = entries.reduce((s, [, w]) => s + w, 0);
  return {
    name: 'MostAllocated',
    scale: 'score',
    weigh(c, r) {
      let score = 0;
      for (const [name, w] of entries) {
        const requested = requestedWith(c, r, name);
        const alloc = c.usable[name] ?? 0;
        if (alloc > 0) score += (w * Math.min(requested, alloc) * 100) / alloc;
      }
      return score / total;
    },
  };
}
