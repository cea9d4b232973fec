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
 * Spread (kube's NodeResourcesFit `LeastAllocated`), a score 0..100:
 * `sum_r w_r * (alloc_r - requested_r) * 100 / alloc_r / sum_r w_r`, where `alloc` is the usable
 * capacity and `requested` is what is allocated with this request included. A resource the host has
 * none of, or would over-commit, scores 0.
 */
export function leastAllocatedWeigher(resources: ResourceWeights = DEFAULT_RESOURCE_WEIGHTS): Weigher {
  const entries = checkResourceWeights(resources, 'resources');
  const total = entries.reduce((s, [, w]) => s + w, 0);
  return withWeigherKernel(
    {
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
    },
    (context) => {
      const columns = allocationColumns(
        context,
        entries.map(([name]) => name),
      );
      if (!columns) return undefined;
      const { usable, allocated, requests, nonNegative } = columns;
      const weights = entries.map(([, w]) => w);
      // Per host, the score with nothing requested: no request scores higher (rounding is monotonic), so
      // it bounds every decision over these columns and is computed once per snapshot.
      const bounds = {
        lo: 0,
        hi: nonNegative ? SCORE_BOUNDS.hi : Number.POSITIVE_INFINITY,
        hiOf: context.columns.derive(entries, () =>
          leastAllocatedCeilings(usable, allocated, weights, total, context.columns.size),
        ),
      };
      if (entries.length === 2) {
        // The default pair (vcpus, memoryMiB) unrolled, host by host: the plugin's arithmetic, same order.
        const [u0, u1] = usable as [Float64Array, Float64Array];
        const [a0, a1] = allocated as [Float64Array, Float64Array];
        const [[, w0], [, w1]] = entries as [[string, number], [string, number]];
        const r0 = requests[0] as number;
        const r1 = requests[1] as number;
        return {
          bounds,
          run: (hosts, count, out, base) =>
            leastAllocatedPair(hosts, count, out, base, u0, u1, a0, a1, r0, r1, w0, w1, total),
        };
      }
      return {
        bounds,
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
              const requested = (had[i] as number) + add;
              const alloc = use[i] as number;
              if (alloc > 0 && requested <= alloc)
                out[base + j] = (out[base + j] as number) + (w * (alloc - requested) * 100) / alloc;
            }
          }
          for (let j = 0; j < count; j++) out[base + j] = (out[base + j] as number) / total;
        },
      };
    },
  );
}

/** Two resources unrolled; everything is an argument so it stays in registers (see `fitUpToFour`). */
function leastAllocatedPair(
  hosts: Int32Array,
  count: number,
  out: Float64Array,
  base: number,
  u0: Float64Array,
  u1: Float64Array,
  a0: Float64Array,
  a1: Float64Array,
  r0: number,
  r1: number,
  w0: number,
  w1: number,
  total: number,
): void {
  for (let j = 0; j < count; j++) {
    const i = hosts[j] as number;
    let score = 0;
    const alloc0 = u0[i] as number;
    const requested0 = (a0[i] as number) + r0;
    if (alloc0 > 0 && requested0 <= alloc0) score += (w0 * (alloc0 - requested0) * 100) / alloc0;
    const alloc1 = u1[i] as number;
    const requested1 = (a1[i] as number) + r1;
    if (alloc1 > 0 && requested1 <= alloc1) score += (w1 * (alloc1 - requested1) * 100) / alloc1;
    out[base + j] = score / total;
  }
}

/** Each host's least-allocated score for an empty request, the highest any request can get there. */
function leastAllocatedCeilings(
  usable: readonly Float64Array[],
  allocated: readonly Float64Array[],
  weights: readonly number[],
  total: number,
  n: number,
): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let score = 0;
    for (let e = 0; e < weights.length; e++) {
      const alloc = (usable[e] as Float64Array)[i] as number;
      const had = (allocated[e] as Float64Array)[i] as number;
      if (alloc > 0 && had <= alloc) score += ((weights[e] as number) * (alloc - had) * 100) / alloc;
    }
    out[i] = score / total;
  }
  return out;
}
