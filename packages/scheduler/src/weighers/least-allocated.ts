import type { Weigher } from '../plugin.js';
import {
  checkResourceWeights,
  DEFAULT_RESOURCE_WEIGHTS,
  type ResourceWeights,
  requestedWith,
} from './allocation.js';

/**
 * Spread (kube's NodeResourcesFit `LeastAllocated`), a score 0..100:
 * `sum_r w_r * (alloc_r - requested_r) * 100 / alloc_r / sum_r w_r`, where `alloc` is the usable
 * capacity and `requested` is what is allocated with this request included. A resource the host has
 * none of, or would over-commit, scores 0.
 */
export function leastAllocatedWeigher(resources: ResourceWeights = DEFAULT_RESOURCE_WEIGHTS): Weigher {
  const entries = checkResourceWeights(resources, 'resources');
  const total = entries.reduce((s, [, w]) => s + w, 0);
  return {
    name: 'LeastAllocated',
    scale: 'score',
    weigh(c, r) {
      let score = 0;
      for (const [name, w] of entries) {
        const requested = requestedWith(c, r, name);
        const alloc = c.usable[name] ?? 0;
        if (alloc > 0 && requested <= alloc) score += (w * (alloc - requested) * 100) / alloc;
      }
      return score / total;
    },
  };
}
