import { NubesError, newId, parseInput } from '@nubes/core';
import { z } from 'zod';
import { type Candidate, candidateOf, HostSnapshot, withInstance } from './candidate.js';
import {
  type FailureExplanation,
  failureMessage,
  formatReasons,
  type HostRejection,
  type HostScore,
  type PickExplanation,
} from './explain.js';
import { defaultFilters } from './filters/index.js';
import { type Instance, type PlacementRequest, parseRequest } from './model.js';
import type { Cycle, Filter, Rejection, Verdict, Weigher, WeigherEntry } from './plugin.js';
import { hostsToFind, seededRandom } from './sampling.js';
import { defaultWeighers, type Normalization } from './weighers/index.js';

/** Options of a {@link Scheduler}. */
export interface SchedulerOptions {
  /** Filters in the order they run; default {@link defaultFilters}. */
  filters?: Filter[];
  /** Weighers, bare (weight 1) or with a weight; default {@link defaultWeighers} of the normalization. */
  weighers?: (Weigher | WeigherEntry)[];
  /** How weights are combined: `kubernetes` (default) or `nova`. */
  normalization?: Normalization;
  /** Seed of the random tie-break and subset pick; random when absent. */
  seed?: number;
  /** Pick at random among the best N hosts (Nova's `host_subset_size`); default 1. */
  hostSubsetSize?: number;
  /** Ranked fallbacks returned with each pick, tried by claims that lose a race; default 3. */
  alternates?: number;
  /**
   * Stop filtering once enough feasible hosts are found (kube-scheduler's `percentageOfNodesToScore`):
   * `true` for the adaptive percentage, `{ percentage }` for a fixed one; default off (every host is evaluated).
   */
  sampling?: boolean | { percentage: number };
  /** Top hosts whose per-weigher scores each pick explains; default 3. */
  explainTop?: number;
  /** Rejected hosts listed one by one in a failure explanation; default 1000 (the counts always cover all). */
  maxExplainedHosts?: number;
}

/** Where one instance goes. */
export interface Pick {
  instanceId: string;
  hostId: string;
  hostName: string;
  /** Next best hosts, best first, for a claim that loses a race. */
  alternates: { hostId: string; hostName: string }[];
  explanation: PickExplanation;
}

/** The outcome of {@link Scheduler.select}: one pick per instance, in order. */
export interface Decision {
  request: PlacementRequest;
  picks: Pick[];
}

const isFilter = (f: unknown): f is Filter =>
  typeof f === 'object' &&
  f !== null &&
  typeof (f as Filter).name === 'string' &&
  typeof (f as Filter).filter === 'function';
const isWeigher = (w: unknown): w is Weigher =>
  typeof w === 'object' &&
  w !== null &&
  typeof (w as Weigher).name === 'string' &&
  typeof (w as Weigher).weigh === 'function';

const optionsSchema = z
  .object({
    filters: z
      .array(z.custom<Filter>(isFilter, 'must be { name, filter(candidate, request, cycle) }'))
      .optional(),
    weighers: z
      .array(
        z.union([
          z.custom<Weigher>(isWeigher, 'must be { name, weigh(candidate, request, cycle) }'),
          z.object({
            weigher: z.custom<Weigher>(isWeigher, 'must be { name, weigh(...) }'),
            weight: z.number().finite().optional(),
          }),
        ]),
      )
      .optional(),
    normalization: z.enum(['kubernetes', 'nova']).default('kubernetes'),
    seed: z.number().int().optional(),
    hostSubsetSize: z.number().int().min(1).max(1000).default(1),
    alternates: z.number().int().min(0).max(100).default(3),
    sampling: z
      .union([z.boolean(), z.object({ percentage: z.number().min(1).max(100) }).strict()])
      .default(false),
    explainTop: z.number().int().min(0).max(100).default(3),
    maxExplainedHosts: z.number().int().min(0).max(1_000_000).default(1000),
  })
  .strict();

const EMPTY: ReadonlySet<string> = new Set();

/** The {@link Cycle} of a pick over a candidate list: group membership is computed on first use. */
class CandidateCycle implements Cycle {
  private groups: Map<string, Set<string>> | undefined;
  constructor(readonly candidates: readonly Candidate[]) {}
  groupHosts(groupId: string): ReadonlySet<string> {
    if (!this.groups) {
      this.groups = new Map();
      for (const c of this.candidates) {
        for (const instance of c.instances) {
          for (const g of instance.groups) {
            const hosts = this.groups.get(g);
            if (hosts) hosts.add(c.host.id);
            else this.groups.set(g, new Set([c.host.id]));
          }
        }
      }
    }
    return this.groups.get(groupId) ?? EMPTY;
  }
}

/** A {@link Cycle} whose group membership comes from elsewhere (a claim reads it from the store). */
export function cycleWithGroups(
  candidates: readonly Candidate[],
  groupHosts: (groupId: string) => ReadonlySet<string>,
): Cycle {
  return { candidates, groupHosts };
}

/** The cycle the scheduler itself uses for a candidate list. */
export function cycleOf(candidates: readonly Candidate[]): Cycle {
  return new CandidateCycle(candidates);
}

interface Ranked {
  index: number;
  total: number;
  key: number;
}

type PickOutcome =
  | { ok: true; pick: Omit<Pick, 'instanceId'>; index: number }
  | { ok: false; failure: Omit<FailureExplanation, 'instance' | 'count' | 'message'> };

/**
 * Two-phase placement: filters remove hosts that cannot take the request, weighers rank the rest,
 * and the best host wins (ties broken at random under an injectable seed). Pure and synchronous:
 * it decides over the hosts it is given; claiming capacity in a Store is {@link Inventory}'s job.
 *
 * @example
 * ```ts
 * const scheduler = new Scheduler({ seed: 1 });
 * const decision = scheduler.select(hosts, { resources: { vcpus: 2, memoryMiB: 4096 } });
 * console.log(decision.picks[0].hostName, decision.picks[0].explanation.message);
 * ```
 */
export class Scheduler {
  /** The filters, in order. */
  readonly filters: readonly Filter[];
  /** The weighers with their weights. */
  readonly weighers: readonly Required<WeigherEntry>[];
  /** How weights are normalized. */
  readonly normalization: Normalization;
  private readonly random: () => number;
  private readonly options: z.output<typeof optionsSchema>;
  private nextStart = 0;

  constructor(options: SchedulerOptions = {}) {
    this.options = parseInput(optionsSchema, options, 'options');
    this.normalization = this.options.normalization;
    this.filters = this.options.filters ?? defaultFilters();
    const weighers = this.options.weighers ?? defaultWeighers(this.normalization);
    this.weighers = weighers.map((w) =>
      'weigher' in w ? { weigher: w.weigher, weight: w.weight ?? 1 } : { weigher: w, weight: 1 },
    );
    this.random = seededRandom(this.options.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  /**
   * Places `request.count` instances over `hosts` (host descriptions, validated here, or a prebuilt
   * {@link HostSnapshot}). Instances after the first see the capacity and group memberships of the
   * earlier ones; if any instance finds no host the whole request fails (all or nothing).
   *
   * @throws NubesError `InvalidInput` for a malformed request or host, naming the field.
   * @throws NubesError `NoValidHost` with `details.explanation` ({@link FailureExplanation}).
   */
  select(hosts: HostSnapshot | readonly unknown[], request: unknown): Decision {
    const req = parseRequest(request);
    const snapshot = hosts instanceof HostSnapshot ? hosts : HostSnapshot.of(hosts as unknown[]);
    const filters = this.filters.filter((f) => !f.appliesTo || f.appliesTo(req));
    const weighers = this.weighers.filter((w) => !w.weigher.appliesTo || w.weigher.appliesTo(req));
    let candidates = snapshot.candidates;
    const picks: Pick[] = [];
    for (let k = 0; k < req.count; k++) {
      const outcome = this.pickOne(candidates, req, filters, weighers);
      if (!outcome.ok) {
        const explanation: FailureExplanation = {
          ...outcome.failure,
          instance: k + 1,
          count: req.count,
          message: failureMessage(outcome.failure.total, outcome.failure.reasons, k + 1, req.count),
        };
        throw new NubesError('NoValidHost', explanation.message, { details: { explanation } });
      }
      const instanceId = req.instanceIds?.[k] ?? newId();
      picks.push({ instanceId, ...outcome.pick });
      if (k + 1 < req.count) {
        if (candidates === snapshot.candidates) candidates = candidates.slice();
        const chosen = candidates[outcome.index] as Candidate;
        (candidates as Candidate[])[outcome.index] = candidateOf(
          withInstance(chosen.host, pendingInstance(instanceId, req)),
        );
      }
    }
    return { request: req, picks };
  }

  /**
   * Runs every filter that applies to the request on one candidate: `undefined` when it passes,
   * otherwise the first rejecting filter and its rejection. Claims use this to re-check a host
   * against fresh state inside a transaction.
   */
  check(
    candidate: Candidate,
    request: PlacementRequest,
    cycle: Cycle,
  ): { filter: string; rejection: Rejection } | undefined {
    for (const f of this.filters) {
      if (f.appliesTo && !f.appliesTo(request)) continue;
      const verdict = f.filter(candidate, request, cycle);
      if (verdict !== true) return { filter: f.name, rejection: verdict };
    }
    return undefined;
  }

  private pickOne(
    candidates: readonly Candidate[],
    request: PlacementRequest,
    filters: readonly Filter[],
    weighers: readonly Required<WeigherEntry>[],
  ): PickOutcome {
    const n = candidates.length;
    const cycle = new CandidateCycle(candidates);
    const sampling = this.options.sampling;
    const toFind =
      sampling === false ? n : hostsToFind(n, sampling === true ? undefined : sampling.percentage);
    const start = sampling === false || n === 0 ? 0 : this.nextStart % n;
    const feasible: number[] = [];
    const rejected: number[] = [];
    const rejectedBy: number[] = [];
    const rejections: Rejection[] = [];
    const counts: Record<string, number> = {};
    const nf = filters.length;
    let evaluated = 0;
    for (let i = 0; i < n && feasible.length < toFind; i++) {
      const index = start + i < n ? start + i : start + i - n;
      const c = candidates[index] as Candidate;
      evaluated++;
      let verdict: Verdict = true;
      let f = 0;
      for (; f < nf; f++) {
        verdict = (filters[f] as Filter).filter(c, request, cycle);
        if (verdict !== true) break;
      }
      if (verdict === true) {
        feasible.push(index);
      } else {
        rejected.push(index);
        rejectedBy.push(f);
        rejections.push(verdict);
        for (const reason of verdict.reasons) counts[reason] = (counts[reason] ?? 0) + 1;
      }
    }
    // kube-scheduler moves the start on by what this pick evaluated, so every host gets its turn.
    if (sampling !== false && n > 0) this.nextStart = (start + evaluated) % n;

    if (feasible.length === 0) {
      const max = this.options.maxExplainedHosts;
      const hosts: HostRejection[] = [];
      for (let j = 0; j < rejected.length && j < max; j++) {
        const c = candidates[rejected[j] as number] as Candidate;
        const r = rejections[j] as Rejection;
        hosts.push({
          hostId: c.host.id,
          hostName: c.host.name,
          filter: (filters[rejectedBy[j] as number] as Filter).name,
          reasons: r.reasons,
          ...(r.detail === undefined ? {} : { detail: r.detail }),
        });
      }
      return {
        ok: false,
        failure: { total: n, evaluated, reasons: counts, hosts, truncated: rejected.length - hosts.length },
      };
    }

    const { totals, raw, normalized } = this.weigh(candidates, feasible, request, cycle, weighers);
    const k = Math.max(this.options.hostSubsetSize, this.options.alternates + 1, this.options.explainTop, 1);
    const top = this.rank(totals, k);
    const chosenAt = Math.floor(this.random() * Math.min(this.options.hostSubsetSize, top.length));
    const chosen = top[chosenAt] as Ranked;
    const order = [chosen, ...top.filter((_, i) => i !== chosenAt)];
    const F = feasible.length;
    const scoreOf = (r: Ranked): HostScore => {
      const c = candidates[feasible[r.index] as number] as Candidate;
      return {
        hostId: c.host.id,
        hostName: c.host.name,
        total: r.total,
        scores: weighers.map((w, wi) => ({
          weigher: w.weigher.name,
          raw: raw[wi * F + r.index] as number,
          normalized: normalized[wi * F + r.index] as number,
          weight: w.weight,
          weighted: (normalized[wi * F + r.index] as number) * w.weight,
        })),
      };
    };
    const chosenHost = (candidates[feasible[chosen.index] as number] as Candidate).host;
    const rejectedText = rejected.length ? `; ${rejected.length} rejected: ${formatReasons(counts)}` : '';
    const sampled = evaluated < n ? ` (${evaluated} of ${n} evaluated)` : '';
    const explanation: PickExplanation = {
      total: n,
      evaluated,
      feasible: F,
      rejected: counts,
      top: top.slice(0, this.options.explainTop).map(scoreOf),
      message: `${F}/${n} hosts are available${sampled}; chose ${chosenHost.name} (score ${round(chosen.total)})${rejectedText}.`,
    };
    return {
      ok: true,
      index: feasible[chosen.index] as number,
      pick: {
        hostId: chosenHost.id,
        hostName: chosenHost.name,
        alternates: order.slice(1, 1 + this.options.alternates).map((r) => {
          const h = (candidates[feasible[r.index] as number] as Candidate).host;
          return { hostId: h.id, hostName: h.name };
        }),
        explanation,
      },
    };
  }

  /** Raw weights, normalized weights (weigher-major, `w * F + j`) and totals of the feasible hosts. */
  private weigh(
    candidates: readonly Candidate[],
    feasible: readonly number[],
    request: PlacementRequest,
    cycle: Cycle,
    weighers: readonly Required<WeigherEntry>[],
  ): { totals: Float64Array; raw: Float64Array; normalized: Float64Array } {
    const F = feasible.length;
    const W = weighers.length;
    const raw = new Float64Array(W * F);
    const normalized = new Float64Array(W * F);
    const totals = new Float64Array(F);
    const nova = this.normalization === 'nova';
    for (let w = 0; w < W; w++) {
      const { weigher, weight } = weighers[w] as Required<WeigherEntry>;
      const base = w * F;
      let min = Number.POSITIVE_INFINITY;
      let max = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < F; j++) {
        const value = weigher.weigh(candidates[feasible[j] as number] as Candidate, request, cycle);
        const v = Number.isFinite(value) ? value : 0;
        raw[base + j] = v;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      // Nova: every weigher to 0..1 by (w - min) / (max - min). Kubernetes: scores as they are, raw weights to 0..100 the same way.
      const rescale = nova || weigher.scale !== 'score';
      const span = max - min;
      const top = nova ? 1 : 100;
      for (let j = 0; j < F; j++) {
        const v = raw[base + j] as number;
        const nv = rescale ? (span > 0 ? ((v - min) / span) * top : 0) : v;
        normalized[base + j] = nv;
        totals[j] = (totals[j] as number) + nv * weight;
      }
    }
    return { totals, raw, normalized };
  }

  /** The best `k` by total, ties ordered by a random key, without sorting every host. */
  private rank(totals: Float64Array, k: number): Ranked[] {
    const top: Ranked[] = [];
    for (let j = 0; j < totals.length; j++) {
      const total = totals[j] as number;
      const last = top[top.length - 1];
      if (top.length === k && last && total < last.total) continue;
      const entry = { index: j, total, key: this.random() };
      let at = top.length;
      while (at > 0) {
        const prev = top[at - 1] as Ranked;
        if (prev.total > entry.total || (prev.total === entry.total && prev.key >= entry.key)) break;
        at--;
      }
      if (at >= k) continue;
      top.splice(at, 0, entry);
      if (top.length > k) top.pop();
    }
    return top;
  }
}

/** The instance a pick adds to its host while the rest of a multi-instance request is placed. */
export function pendingInstance(id: string, request: PlacementRequest): Instance {
  const group = request.hints.serverGroup;
  return { id, resources: request.resources, groups: group ? [group.id] : [], hints: request.hints };
}

function round(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}
