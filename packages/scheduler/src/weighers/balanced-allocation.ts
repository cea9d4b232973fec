import { invalidInput } from '@nubes/core';
import { withWeigherKernel } from '../kernel.js';
import type { Weigher } from '../plugin.js';
import { allocationColumns, requestedWith } from './allocation.js';

/**
 * Exact: the standard deviation is a square root, never negative, so 1 - std <= 1 and the score <= 100;
 * no resources scores 0.
 */
const BALANCED_BOUNDS = { lo: 0, hi: 100 } as const;

/**
 * Balanced use of resources (kube's NodeResourcesBalancedAllocation), a score 0..100:
 * `(1 - std(requested_r / alloc_r)) * 100`, the population standard deviation of the fractions
 * (each capped at 1) over the resources the host has. A host that uses 25% of its CPU and 75% of
 * its memory scores 75; one at 50% / 50% scores 100.
 */
export function balancedAllocationWeigher(resources: readonly string[] = ['vcpus', 'memoryMiB']): Weigher {
  if (resources.length === 0) throw invalidInput('resources', 'must name at least one resource');
  return withWeigherKernel(
    {
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
    },
    (context) => {
      const columns = allocationColumns(context, resources);
      if (!columns) return undefined;
      const { usable, allocated, requests, nonNegative } = columns;
      const R = resources.length;
      if (R === 2) {
        // The default pair (vcpus, memoryMiB) unrolled: the statistic over two fractions, same arithmetic.
        const [u0, u1] = usable as [Float64Array, Float64Array];
        const [a0, a1] = allocated as [Float64Array, Float64Array];
        const r0 = requests[0] as number;
        const r1 = requests[1] as number;
        return {
          ...(nonNegative ? { bounds: BALANCED_BOUNDS } : {}),
          run(hosts, count, out, base) {
            for (let j = 0; j < count; j++) {
              const i = hosts[j] as number;
              let n = 0;
              let sum = 0;
              let sumSq = 0;
              const alloc0 = u0[i] as number;
              if (alloc0 > 0) {
                const f = Math.min(1, ((a0[i] as number) + r0) / alloc0);
                n++;
                sum += f;
                sumSq += f * f;
              }
              const alloc1 = u1[i] as number;
              if (alloc1 > 0) {
                const f = Math.min(1, ((a1[i] as number) + r1) / alloc1);
                n++;
                sum += f;
                sumSq += f * f;
              }
              if (n === 0) {
                out[base + j] = 0;
                continue;
              }
              const mean = sum / n;
              out[base + j] = (1 - Math.sqrt(Math.max(0, sumSq / n - mean * mean))) * 100;
            }
          },
        };
      }
      return {
        ...(nonNegative ? { bounds: BALANCED_BOUNDS } : {}),
        run(hosts, count, out, base) {
          // Host by host: the statistic needs every resource of a host before it can be computed.
          for (let j = 0; j < count; j++) {
            const i = hosts[j] as number;
            let n = 0;
            let sum = 0;
            let sumSq = 0;
            for (let e = 0; e < R; e++) {
              const alloc = (usable[e] as Float64Array)[i] as number;
              if (alloc <= 0) continue;
              const requested = ((allocated[e] as Float64Array)[i] as number) + (requests[e] as number);
              const f = Math.min(1, requested / alloc);
              n++;
              sum += f;
              sumSq += f * f;
            }
            if (n === 0) {
              out[base + j] = 0;
              continue;
            }
            const mean = sum / n;
            out[base + j] = (1 - Math.sqrt(Math.max(0, sumSq / n - mean * mean))) * 100;
          }
        },
      };
    },
  );
}
