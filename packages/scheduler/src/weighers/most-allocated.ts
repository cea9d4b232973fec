import { withWeigherKernel } from '../kernel.js';
import type { Weigher } from '../plugin.js';
import {
  allocationColumns,
  checkResourceWeights,
  DEFAULT_RESOURCE_WEIGHTS,
  type ResourceWeights,
  requestedWith,
  SCORE_BOUNDS,
} from './allocation.js';

/**
 * Pack (kube's NodeResourcesFit `MostAllocated`), a score 0..100:
 * `sum_r w_r * requested_r * 100 / alloc_r / sum_r w_r`, with `requested` capped at `alloc`.
 */
export function mostAllocatedWeigher(resources: ResourceWeights = DEFAULT_RESOURCE_WEIGHTS): Weigher {
  const entries = checkResourceWeights(resources, 'resources');
  const total = entries.reduce((s, [, w]) => s + w, 0);
  return withWeigherKernel(
    {
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
    },
    (context) => {
      const columns = allocationColumns(
        context,
        entries.map(([name]) => name),
      );
      if (!columns) return undefined;
      const { usable, allocated, requests, nonNegative } = columns;
      if (entries.length === 2) {
        // The default pair (vcpus, memoryMiB) unrolled, host by host: the plugin's arithmetic, same order.
        const [u0, u1] = usable as [Float64Array, Float64Array];
        const [a0, a1] = allocated as [Float64Array, Float64Array];
        const [[, w0], [, w1]] = entries as [[string, number], [string, number]];
        const r0 = requests[0] as number;
        const r1 = requests[1] as number;
        return {
          ...(nonNegative ? { bounds: SCORE_BOUNDS } : {}),
          run(hosts, count, out, base) {
            for (let j = 0; j < count; j++) {
              const i = hosts[j] as number;
              let score = 0;
              const alloc0 = u0[i] as number;
              if (alloc0 > 0) score += (w0 * Math.min((a0[i] as number) + r0, alloc0) * 100) / alloc0;
              const alloc1 = u1[i] as number;
              if (alloc1 > 0) score += (w1 * Math.min((a1[i] as number) + r1, alloc1) * 100) / alloc1;
              out[base + j] = score / total;
            }
          },
        };
      }
      return {
        ...(nonNegative ? { bounds: SCORE_BOUNDS } : {}),
        run(hosts, count, out, base) {
          // Resource by resource over all hosts: the same additions in the same order as the plugin.
          out.fill(0, base, base + count);
          for (let e = 0; e < entries.length; e++) {
            const w = (entries[e] as [string, number])[1];
            const use = usable[e] as Float64Array;
            const had = allocated[e] as Float64Array;
            const add = requests[e] as number;
            for (let j = 0; j < count; j++) {
              const i = hosts[j] as number;
              const alloc = use[i] as number;
              if (alloc > 0)
                out[base + j] =
                  (out[base + j] as number) + (w * Math.min((had[i] as number) + add, alloc) * 100) / alloc;
            }
          }
          for (let j = 0; j < count; j++) out[base + j] = (out[base + j] as number) / total;
        },
      };
    },
  );
}
