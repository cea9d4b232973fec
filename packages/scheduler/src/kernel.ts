import type { Candidate } from './candidate.js';
import type { HostColumns } from './columns.js';
import type { PlacementRequest } from './model.js';
import type { Cycle, Filter, Rejection, Weigher } from './plugin.js';

/** What a kernel sees of one pick. */
export interface KernelContext {
  readonly request: PlacementRequest;
  readonly columns: HostColumns;
  /** The same hosts as plugins see them, for kernels that hand a rare host to their plugin. */
  readonly candidates: readonly Candidate[];
  readonly cycle: Cycle;
}

/**
 * A filter run over many hosts at once. `run` checks `hosts[0..m)` (indices into the candidate list),
 * moves the hosts that pass to the front of `hosts` in their order and returns how many there are; for
 * each host `i` that fails it sets `codes[i]` to the 1-based index of its rejection in `rejections`
 * (one it pushes, or a shared one the kernel pushed when it was prepared). Compacting in the same loop
 * saves a pass over the hosts per filter.
 */
export interface FilterPass {
  run(hosts: Int32Array, m: number, codes: Int32Array): number;
}

/** A built-in filter's column version; `prepare` returns `undefined` to leave the request to the plugin. */
export type FilterKernel = (context: KernelContext, rejections: Rejection[]) => FilterPass | undefined;

/** A weigher run over many hosts at once: writes the raw weight of `hosts[j]` to `out[base + j]` for j < count. */
export interface WeighPass {
  run(hosts: Int32Array, count: number, out: Float64Array, base: number): void;
  /**
   * Values `run` can never leave (0, what a non-finite weight counts as, included). With them the
   * scheduler skips weighing hosts that could not reach the top whatever this weigher says.
   */
  readonly bounds?: WeighBounds;
}

/** The range of a weigher's values, for every host (`lo`, `hi`) and, sharper, per host (`hiOf`). */
export interface WeighBounds {
  readonly lo: number;
  readonly hi: number;
  /** By host index: a ceiling on that host's value at most `hi`, whatever the request. */
  readonly hiOf?: Float64Array;
}

/** A built-in weigher's column version; returns `undefined` to leave the request to the plugin. */
export type WeigherKernel = (context: KernelContext) => WeighPass | undefined;

interface Registered<K> {
  /** The method the kernel is equivalent to: if someone replaces it, the kernel no longer applies. */
  readonly method: unknown;
  readonly kernel: K;
}

const filterKernels = new WeakMap<Filter, Registered<FilterKernel>>();
const weigherKernels = new WeakMap<Weigher, Registered<WeigherKernel>>();

/**
 * Attaches a column kernel to a built-in filter. The plugin object itself is unchanged: users who wrap,
 * copy or write their own filters get the plugin path, which decides exactly the same.
 */
export function withFilterKernel<F extends Filter>(filter: F, kernel: FilterKernel): F {
  filterKernels.set(filter, { method: filter.filter, kernel });
  return filter;
}

/** Attaches a column kernel to a built-in weigher (see {@link withFilterKernel}). */
export function withWeigherKernel<W extends Weigher>(weigher: W, kernel: WeigherKernel): W {
  weigherKernels.set(weigher, { method: weigher.weigh, kernel });
  return weigher;
}

/** The kernel of a filter, if it is a built-in one whose `filter` method is still its own. */
export function filterKernelOf(filter: Filter): FilterKernel | undefined {
  const entry = filterKernels.get(filter);
  return entry && entry.method === filter.filter ? entry.kernel : undefined;
}

/** The kernel of a weigher, if it is a built-in one whose `weigh` method is still its own. */
export function weigherKernelOf(weigher: Weigher): WeigherKernel | undefined {
  const entry = weigherKernels.get(weigher);
  return entry && entry.method === weigher.weigh ? entry.kernel : undefined;
}

/** A pass for a filter that cannot reject any of these hosts: it costs nothing per host. */
export const KEEP_ALL: FilterPass = { run: (_hosts, m) => m };

/** The plugin path as a pass: one `filter` call per host, as the scheduler always did. */
export function pluginFilterPass(
  filter: Filter,
  context: KernelContext,
  rejections: Rejection[],
): FilterPass {
  const { candidates, request, cycle } = context;
  return {
    run(hosts, m, codes) {
      let kept = 0;
      for (let k = 0; k < m; k++) {
        const i = hosts[k] as number;
        const verdict = filter.filter(candidates[i] as Candidate, request, cycle);
        if (verdict === true) hosts[kept++] = i;
        else codes[i] = rejections.push(verdict);
      }
      return kept;
    },
  };
}

/** The plugin path as a pass: one `weigh` call per host. */
export function pluginWeighPass(weigher: Weigher, context: KernelContext): WeighPass {
  const { candidates, request, cycle } = context;
  return {
    run(hosts, count, out, base) {
      for (let j = 0; j < count; j++) {
        const value = weigher.weigh(candidates[hosts[j] as number] as Candidate, request, cycle);
        // Checked before a typed array coerces it: a weigher returning "5" counts as 0, as it always did.
        out[base + j] = Number.isFinite(value) ? value : 0;
      }
    },
  };
}
