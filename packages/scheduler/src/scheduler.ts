import { NubesError, newId, parseInput } from '@nubes/core';
import { z } from 'zod';
import { type Candidate, candidateOf, HostSnapshot, withInstance } from './candidate.js';
import { DecisionHosts } from './decision-hosts.js';
import {
  type FailureExplanation,
  failureMessage,
  formatReasons,
  type HostRejection,
  type HostScore,
  type PickExplanation,
} from './explain.js';
import { runFilters } from './filtering.js';
import { defaultFilters } from './filters/index.js';
import type { KernelContext } from './kernel.js';
import { type Host, type Instance, type PlacementRequest, parseRequest } from './model.js';
import type { Cycle, Filter, Rejection, Weigher, WeigherEntry } from './plugin.js';
import { hostsToFind, seededRandom } from './sampling.js';
import { Scratch } from './scratch.js';
import { defaultWeighers, type Normalization } from './weighers/index.js';
import { type Ranked, weighAndRank } from './weighing.js';

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
  private scratch: Scratch | undefined = new Scratch();

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
    const state = new DecisionHosts(snapshot.candidates);
    // Scratch arrays are the scheduler's; a plugin that calls select on the same scheduler gets its own.
    const scratch = this.scratch ?? new Scratch();
    this.scratch = undefined;
    try {
      const picks: Pick[] = [];
      for (let k = 0; k < req.count; k++) {
        const outcome = this.pickOne(state, req, filters, weighers, scratch);
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
          const chosen = state.candidates[outcome.index] as Candidate;
          state.replace(
            outcome.index,
            candidateOf(withInstance(chosen.host, pendingInstance(instanceId, req))),
          );
        }
      }
      return { request: req, picks };
    } finally {
      this.scratch = scratch;
    }
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
    state: DecisionHosts,
    request: PlacementRequest,
    filters: readonly Filter[],
    weighers: readonly Required<WeigherEntry>[],
    scratch: Scratch,
  ): PickOutcome {
    const candidates = state.candidates;
    const n = candidates.length;
    const context: KernelContext = {
      request,
      candidates,
      cycle: new CandidateCycle(candidates),
      get columns() {
        return state.columns;
      },
    };
    const sampling = this.options.sampling;
    const toFind =
      sampling === false ? n : hostsToFind(n, sampling === true ? undefined : sampling.percentage);
    const start = sampling === false || n === 0 ? 0 : this.nextStart % n;
    const found = runFilters(context, filters, start, toFind, scratch);
    const { evaluated, counts } = found;
    // kube-scheduler moves the start on by what this pick evaluated, so every host gets its turn.
    if (sampling !== false && n > 0) this.nextStart = (start + evaluated) % n;

    if (found.feasibleCount === 0) {
      const explained = Math.min(found.rejectedCount, this.options.maxExplainedHosts);
      const hosts: HostRejection[] = [];
      for (let j = 0; j < explained; j++) hosts.push(found.explain(j));
      return {
        ok: false,
        failure: {
          total: n,
          evaluated,
          reasons: counts,
          hosts,
          truncated: found.rejectedCount - hosts.length,
        },
      };
    }

    const F = found.feasibleCount;
    const feasible = found.feasible;
    const k = Math.max(this.options.hostSubsetSize, this.options.alternates + 1, this.options.explainTop, 1);
    const { top, raw, normalized } = weighAndRank(
      context,
      feasible,
      F,
      weighers,
      this.normalization === 'nova',
      k,
      this.random,
      scratch,
    );
    const chosenAt = Math.floor(this.random() * Math.min(this.options.hostSubsetSize, top.length));
    const chosen = top[chosenAt] as Ranked;
    const order = [chosen, ...top.filter((_, i) => i !== chosenAt)];
    const hostOf = (r: Ranked): Host => (candidates[feasible[r.index] as number] as Candidate).host;
    const scoreOf = (r: Ranked): HostScore => {
      const h = hostOf(r);
      return {
        hostId: h.id,
        hostName: h.name,
        total: r.total,
        scores: weighers.map((w, wi) => ({
          weigher: w.weigher.name,
          raw: raw(wi, r.index),
          normalized: normalized(wi, r.index),
          weight: w.weight,
          weighted: normalized(wi, r.index) * w.weight,
        })),
      };
    };
    const chosenHost = hostOf(chosen);
    const rejected = found.rejectedCount;
    const rejectedText = rejected ? `; ${rejected} rejected: ${formatReasons(counts)}` : '';
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
          const h = hostOf(r);
          return { hostId: h.id, hostName: h.name };
        }),
        explanation,
      },
    };
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
