import type { Candidate } from './candidate.js';
import type { HostRejection } from './explain.js';
import { type FilterPass, filterKernelOf, type KernelContext, pluginFilterPass } from './kernel.js';
import type { Filter, Rejection } from './plugin.js';
import type { Scratch } from './scratch.js';

/** Below this many hosts left to find, a sampled pick still filters blocks of this size. */
const MIN_BLOCK = 256;

/** What phase one found, in evaluation order. Arrays are scratch: valid until the next pick. */
export interface FilterResult {
  /** Hosts the filters ran on. */
  evaluated: number;
  /** Indices of feasible hosts, in evaluation order: `feasible[0..feasibleCount)`. */
  feasible: Int32Array;
  feasibleCount: number;
  /** Indices of rejected hosts, in evaluation order: `rejected[0..rejectedCount)`. */
  rejected: Int32Array;
  rejectedCount: number;
  /** Rejection reasons with the number of hosts each applied to, in order of first occurrence. */
  counts: Record<string, number>;
  /** Per rejected host (same positions as `rejected`): the rejecting filter and its rejection. */
  explain(j: number): HostRejection;
}

/**
 * Phase one over the hosts in round-robin order from `start`, stopping once `toFind` hosts pass.
 *
 * Filters run filter by filter over blocks of hosts (a kernel's tight loop over columns, or one plugin
 * call per host), each on the hosts every earlier filter kept, so the first filter that rejects a host
 * is the one named, as when filters ran host by host. Without sampling the block is every host; with
 * sampling blocks are sized to what is still to find, and hosts after the `toFind`-th feasible one in
 * the last block are dropped as if never evaluated: results are those of a host-by-host loop.
 */
export function runFilters(
  context: KernelContext,
  filters: readonly Filter[],
  start: number,
  toFind: number,
  scratch: Scratch,
): FilterResult {
  const { candidates, request, cycle } = context;
  const n = candidates.length;
  const rejections: Rejection[] = [];
  // The filter each rejection belongs to, by code: rejections are pushed filter by filter.
  const filterOfCode: number[] = [0];
  const owned = (f: number) => {
    while (filterOfCode.length <= rejections.length) filterOfCode.push(f);
  };
  const kernelRan: boolean[] = [];
  const passes: FilterPass[] = filters.map((filter, f) => {
    const pass = filterKernelOf(filter)?.(context, rejections);
    kernelRan.push(pass !== undefined);
    owned(f);
    return pass ?? pluginFilterPass(filter, context, rejections);
  });

  const alive = scratch.ints('alive', n);
  const codes = scratch.ints('codes', n);
  const rejected = scratch.ints('rejected', n);
  const rejectedCode = scratch.ints('rejectedCode', n);
  const sampled = toFind < n;
  // Without sampling there is one block, whose survivors are the feasible hosts: no copy needed.
  const feasible = sampled ? scratch.ints('feasible', toFind) : alive;
  let feasibleCount = 0;
  let rejectedCount = 0;
  let evaluated = 0;
  let taken = 0;
  while (taken < n && feasibleCount < toFind) {
    const remaining = toFind - feasibleCount;
    const size = sampled ? Math.min(n - taken, Math.max(MIN_BLOCK, remaining + (remaining >> 2))) : n - taken;
    const first = start + taken;
    for (let k = 0; k < size; k++) {
      const at = first + k;
      alive[k] = at < n ? at : at - n;
    }
    taken += size;
    let m = size;
    for (let f = 0; f < passes.length && m > 0; f++) {
      m = (passes[f] as FilterPass).run(alive, m, codes);
      owned(f);
    }
    // Passes keep hosts in order, so the survivors are a subsequence of the block: walking both at once
    // tells each host's fate in evaluation order (a pass wrote the code of every host it rejected).
    let p = 0;
    for (let k = 0; k < size; k++) {
      const at = first + k;
      const index = at < n ? at : at - n;
      evaluated++;
      if (p < m && alive[p] === index) {
        p++;
        if (sampled) feasible[feasibleCount] = index;
        if (++feasibleCount === toFind) break;
      } else {
        rejected[rejectedCount] = index;
        rejectedCode[rejectedCount] = codes[index] as number;
        rejectedCount++;
      }
    }
  }

  return {
    evaluated,
    feasible,
    feasibleCount,
    rejected,
    rejectedCount,
    counts: countReasons(rejections, rejectedCode, rejectedCount),
    explain(j) {
      const index = rejected[j] as number;
      const f = filterOfCode[rejectedCode[j] as number] as number;
      const filter = filters[f] as Filter;
      const c = candidates[index] as Candidate;
      // A kernel's shared rejection has the reasons but not the per-host detail: the plugin, which
      // decides the same, says it in its own words.
      const again = kernelRan[f] ? filter.filter(c, request, cycle) : true;
      const r = again === true ? (rejections[(rejectedCode[j] as number) - 1] as Rejection) : again;
      return {
        hostId: c.host.id,
        hostName: c.host.name,
        filter: filter.name,
        reasons: r.reasons,
        ...(r.detail === undefined ? {} : { detail: r.detail }),
      };
    },
  };
}

/**
 * Reason counts, with keys in the order a host-by-host tally would first meet them. Hosts sharing a
 * rejection (a kernel's) are counted together, so a pick where most hosts fail one filter does not
 * touch the counts object once per host.
 */
function countReasons(
  rejections: readonly Rejection[],
  codes: Int32Array,
  count: number,
): Record<string, number> {
  const perCode = new Int32Array(rejections.length + 1);
  const firstSeen: number[] = [];
  for (let j = 0; j < count; j++) {
    const code = codes[j] as number;
    if (perCode[code] === 0) firstSeen.push(code);
    perCode[code] = (perCode[code] as number) + 1;
  }
  const counts: Record<string, number> = {};
  for (const code of firstSeen) {
    const hosts = perCode[code] as number;
    for (const reason of (rejections[code - 1] as Rejection).reasons)
      counts[reason] = (counts[reason] ?? 0) + hosts;
  }
  return counts;
}
