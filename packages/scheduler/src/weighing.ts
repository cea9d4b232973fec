import {
  type KernelContext,
  pluginWeighPass,
  type WeighBounds,
  type WeighPass,
  weigherKernelOf,
} from './kernel.js';
import type { WeigherEntry } from './plugin.js';
import type { Scratch } from './scratch.js';

/** Phase two's numbers, weigher-major (`w * count + j` for the j-th feasible host). Scratch: valid until the next pick. */
export interface Weights {
  /** What each weigher returned (non-finite values already replaced by 0). */
  raw: Float64Array;
  /** Sum of normalized x weight per host: `totals[0..count)`. */
  totals: Float64Array;
  /** Weigher `w`'s normalized value for the j-th host (computed on demand: only top hosts are explained). */
  normalized(w: number, j: number): number;
}

/** A host in the ranking: its position among the feasible hosts, its total and its random tie-break key. */
export interface Ranked {
  index: number;
  total: number;
  key: number;
}

/**
 * Weighs `hosts[0..count)`: raw weights (a kernel over columns for built-in weighers, one plugin call per
 * host otherwise), then normalization and weighted totals, in the order and with the arithmetic the
 * scheduler has always used, so totals are bit for bit those of the plugin path.
 */
export function weighHosts(
  context: KernelContext,
  hosts: Int32Array,
  count: number,
  weighers: readonly Required<WeigherEntry>[],
  nova: boolean,
  scratch: Scratch,
  passes: readonly WeighPass[] = weighers.map(
    ({ weigher }) => weigherKernelOf(weigher)?.(context) ?? pluginWeighPass(weigher, context),
  ),
): Weights {
  const W = weighers.length;
  const raw = scratch.floats('raw', W * count);
  const totals = scratch.floats('totals', count);
  totals.fill(0, 0, count);
  const mins = new Float64Array(W);
  const spans = new Float64Array(W);
  const rescaled: boolean[] = [];
  const top = nova ? 1 : 100;
  for (let w = 0; w < W; w++) {
    const { weigher, weight } = weighers[w] as Required<WeigherEntry>;
    const base = w * count;
    (passes[w] as WeighPass).run(hosts, count, raw, base);
    // Nova: every weigher to 0..1 by (w - min) / (max - min). Kubernetes: scores as they are, raw weights to 0..100 the same way.
    const rescale = nova || weigher.scale !== 'score';
    rescaled.push(rescale);
    if (!rescale) {
      // A score is used as it is: one pass, no range needed.
      for (let j = 0; j < count; j++) {
        let v = raw[base + j] as number;
        if (!Number.isFinite(v)) {
          v = 0;
          raw[base + j] = 0;
        }
        totals[j] = (totals[j] as number) + v * weight;
      }
      continue;
    }
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = base; j < base + count; j++) {
      let v = raw[j] as number;
      if (!Number.isFinite(v)) {
        v = 0;
        raw[j] = 0;
      }
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const span = max - min;
    mins[w] = min;
    spans[w] = span;
    for (let j = 0; j < count; j++) {
      const nv = span > 0 ? (((raw[base + j] as number) - min) / span) * top : 0;
      totals[j] = (totals[j] as number) + nv * weight;
    }
  }
  return {
    raw,
    totals,
    normalized(w, j) {
      const v = raw[w * count + j] as number;
      if (!rescaled[w]) return v;
      const span = spans[w] as number;
      return span > 0 ? ((v - (mins[w] as number)) / span) * top : 0;
    },
  };
}

/**
 * The best `k` hosts seen so far, ties ordered by a random key. Draws from `random` only for hosts that
 * could enter the top (as the scheduler always has), so a seed gives the same picks whatever skipped
 * the others.
 */
class TopK {
  readonly top: Ranked[] = [];
  /** The total a host must reach to enter a full top; most hosts fall below it and cost one comparison. */
  threshold = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly k: number,
    private readonly random: () => number,
  ) {}

  consider(index: number, total: number): void {
    if (total < this.threshold) return;
    const top = this.top;
    const entry = { index, total, key: this.random() };
    let at = top.length;
    while (at > 0) {
      const prev = top[at - 1] as Ranked;
      if (prev.total > entry.total || (prev.total === entry.total && prev.key >= entry.key)) break;
      at--;
    }
    if (at >= this.k) return;
    top.splice(at, 0, entry);
    if (top.length > this.k) top.pop();
    if (top.length === this.k) this.threshold = (top[this.k - 1] as Ranked).total;
  }
}

/** The best `k` of `totals[0..count)`, ties ordered by a random key, without sorting every host. */
export function rankTop(totals: Float64Array, count: number, k: number, random: () => number): Ranked[] {
  const ranking = new TopK(k, random);
  for (let j = 0; j < count; j++) ranking.consider(j, totals[j] as number);
  return ranking.top;
}

/** Phase two's outcome: the best hosts and, for explaining them, each weigher's values. */
export interface Ranking {
  /** The best hosts, best first (`index` is the position among the weighed hosts). */
  top: Ranked[];
  /** Weigher `w`'s raw value for the j-th host (defined for hosts in `top`). */
  raw(w: number, j: number): number;
  /** Weigher `w`'s normalized value for the j-th host (defined for hosts in `top`). */
  normalized(w: number, j: number): number;
}

/**
 * Phase two: weighs `hosts[0..count)` and ranks the best `k`. Equivalent to {@link weighHosts} then
 * {@link rankTop}, but when every weigher is used unscaled (Kubernetes scores) and some declare bounds,
 * those are only run for hosts whose best possible total can still enter the top (see `weighPruned`).
 */
export function weighAndRank(
  context: KernelContext,
  hosts: Int32Array,
  count: number,
  weighers: readonly Required<WeigherEntry>[],
  nova: boolean,
  k: number,
  random: () => number,
  scratch: Scratch,
): Ranking {
  const passes = weighers.map(
    ({ weigher }) => weigherKernelOf(weigher)?.(context) ?? pluginWeighPass(weigher, context),
  );
  const unscaled = !nova && weighers.every((w) => w.weigher.scale === 'score');
  // Bounded weighers run only where needed. Unless one bounds each host on its own, the first bounded
  // one runs everywhere: with constant bounds alone, every host would look alike.
  const lazy = passes.map((p) => p.bounds !== undefined);
  if (!passes.some((p) => p.bounds?.hiOf)) {
    const firstBounded = lazy.indexOf(true);
    if (firstBounded >= 0) lazy[firstBounded] = false;
  }
  if (unscaled && lazy.includes(true))
    return weighPruned(hosts, count, weighers, passes, lazy, new TopK(k, random), scratch);
  const weights = weighHosts(context, hosts, count, weighers, nova, scratch, passes);
  return {
    top: rankTop(weights.totals, count, k, random),
    raw: (w, j) => weights.raw[w * count + j] as number,
    normalized: weights.normalized,
  };
}

/** Chunks of hosts bounded together; the first are small so the top fills (and prunes) early. */
const FIRST_CHUNK = 64;
const MAX_CHUNK = 1024;

/**
 * Weighing with pruning. Eager weighers run on every host; then, chunk by chunk, each host's total is
 * bounded from above by the same sum with each lazy weigher's bound in place of its value (rounding is
 * monotonic, so the bound holds bit for bit). A host whose bound is below the top's current threshold
 * would be skipped by the ranking anyway, without drawing a tie-break key; only the others are weighed
 * by the lazy weighers and ranked, in order. Raw values of skipped hosts are never computed: nothing
 * reads them (unscaled weighers need no min and max).
 */
function weighPruned(
  hosts: Int32Array,
  count: number,
  weighers: readonly Required<WeigherEntry>[],
  passes: readonly WeighPass[],
  lazy: readonly boolean[],
  ranking: TopK,
  scratch: Scratch,
): Ranking {
  const W = weighers.length;
  const raw = scratch.floats('raw', W * count);
  const weight = Float64Array.from(weighers, (w) => w.weight);
  // Totals are summed in weigher order; the part before the first lazy weigher is the same for the
  // bound and the total, so it is summed once per host.
  const firstLazy = lazy.indexOf(true);
  const partial = scratch.floats('partial', count);
  partial.fill(0, 0, count);
  // What a lazy weigher adds at most: its bound on the side the weight's sign makes the largest, per
  // host (`mostOf`, by host index) where the weigher knows each host's ceiling.
  const most = new Float64Array(W);
  const mostOf: (Float64Array | undefined)[] = [];
  for (let w = 0; w < W; w++) {
    const pass = passes[w] as WeighPass;
    const wt = weight[w] as number;
    mostOf.push(undefined);
    if (lazy[w]) {
      const { lo, hi, hiOf } = pass.bounds as WeighBounds;
      most[w] = (wt >= 0 ? hi : lo) * wt;
      if (hiOf && wt >= 0) mostOf[w] = wt === 1 ? hiOf : hiOf.map((v) => v * wt);
      continue;
    }
    pass.run(hosts, count, raw, w * count);
    finite(raw, w * count, count);
    if (w < firstLazy) addWeighted(partial, raw, w * count, count, wt);
  }
  // The default profile's shape: a weigher with per-host ceilings, then at most one with a constant bound.
  const tail = W - firstLazy;
  const simple =
    mostOf[firstLazy] !== undefined &&
    (tail === 1 || (tail === 2 && lazy[firstLazy + 1] && !mostOf[firstLazy + 1]));
  const subset = scratch.ints('subset', MAX_CHUNK);
  const subsetAt = scratch.ints('subsetAt', MAX_CHUNK);
  const values = scratch.floats('lazyValues', MAX_CHUNK);
  for (let from = 0, size = FIRST_CHUNK; from < count; from += size, size = Math.min(MAX_CHUNK, size * 2)) {
    const to = Math.min(count, from + size);
    const threshold = ranking.threshold;
    let s = 0;
    if (simple) {
      s = survivors(
        partial,
        from,
        to,
        mostOf[firstLazy] as Float64Array,
        tail === 2 ? (most[firstLazy + 1] as number) : 0,
        threshold,
        hosts,
        subset,
        subsetAt,
      );
    } else {
      for (let j = from; j < to; j++) {
        const i = hosts[j] as number;
        let bound = partial[j] as number;
        for (let w = firstLazy; w < W; w++) {
          const ceiling = mostOf[w];
          bound =
            bound +
            (!lazy[w]
              ? (raw[w * count + j] as number) * (weight[w] as number)
              : ceiling
                ? (ceiling[i] as number)
                : (most[w] as number));
        }
        if (bound < threshold) continue;
        subset[s] = i;
        subsetAt[s] = j;
        s++;
      }
    }
    if (s === 0) continue;
    for (let w = firstLazy; w < W; w++) {
      if (!lazy[w]) continue;
      (passes[w] as WeighPass).run(subset, s, values, 0);
      finite(values, 0, s);
      for (let q = 0; q < s; q++) raw[w * count + (subsetAt[q] as number)] = values[q] as number;
    }
    for (let q = 0; q < s; q++) {
      const j = subsetAt[q] as number;
      let total = partial[j] as number;
      for (let w = firstLazy; w < W; w++)
        total = total + (raw[w * count + j] as number) * (weight[w] as number);
      ranking.consider(j, total);
    }
  }
  return {
    top: ranking.top,
    raw: (w, j) => raw[w * count + j] as number,
    normalized: (w, j) => raw[w * count + j] as number,
  };
}

/** `totals[j] += values[base + j] * weight`, the scheduler's running sum. */
function addWeighted(
  totals: Float64Array,
  values: Float64Array,
  base: number,
  count: number,
  weight: number,
): void {
  for (let j = 0; j < count; j++) totals[j] = (totals[j] as number) + (values[base + j] as number) * weight;
}

/**
 * Hosts of `[from, to)` whose bound reaches the threshold, written to `subset` (host indices) and
 * `subsetAt` (positions); returns how many. The bound is summed as the total would be: the partial total,
 * plus the host's ceiling for the first lazy weigher, plus (when `then` is not 0) a second one's constant.
 * A plain function so its arguments stay in registers.
 */
function survivors(
  partial: Float64Array,
  from: number,
  to: number,
  ceiling: Float64Array,
  then: number,
  threshold: number,
  hosts: Int32Array,
  subset: Int32Array,
  subsetAt: Int32Array,
): number {
  let s = 0;
  for (let j = from; j < to; j++) {
    const i = hosts[j] as number;
    const bound = (partial[j] as number) + (ceiling[i] as number);
    if ((then === 0 ? bound : bound + then) < threshold) continue;
    subset[s] = i;
    subsetAt[s] = j;
    s++;
  }
  return s;
}

/** Non-finite weights count as 0. */
function finite(values: Float64Array, from: number, count: number): void {
  for (let j = from; j < from + count; j++) if (!Number.isFinite(values[j] as number)) values[j] = 0;
}
