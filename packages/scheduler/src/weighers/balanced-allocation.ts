import { invalidInput } from '@nubes/core';
import type { Weigher } from '../plugin.js';
import { requestedWith } from './allocation.js';

/**
 * Balanced use of resources (kube's NodeResourcesBalancedAllocation), a score 0..100:
 * `(1 - std(requested_r / alloc_r)) * 100`, the population standard deviation of the fractions
 * (each capped at 1) over the resources the host has. A host that uses 25% of its CPU and 75% of
 * its memory scores 75; one at 50% / 50% scores 100.
 */
export function balancedAllocationWeigher(resources: readonly string[] = ['vcpus', 'memoryMiB']): Weigher {
  if (resources.length === 0) throw invalidInput('resources', 'must name at least one resource');
  return {
    name: 'BalancedAllocation',
    scale: 'score',
    weigh(c, r) {
      let n = 0;
      let sum = 0;
      let sumSq = 0;
      for (const name of resources) {
        const requested = requestedWith(c, r, name);
        const alloc = c.usable[name] ?? 0;
        if (alloc <= 0) continue;
        const f = Math.min(1, requested / alloc);
        n++;
        sum += f;
        sumSq += f * f;
      }
      if (n === 0) return 0;
      const mean = sum / n;
      const std = Math.sqrt(Math.max(0, sumSq / n - mean * mean));
      return (1 - std) * 100;
    },
  };
}
