import type { Candidate } from './candidate.js';
import type { PlacementRequest } from './model.js';

/** Why a filter turned a host away. */
export interface Rejection {
  /**
   * Short, host-independent reasons that are counted across hosts ("insufficient memoryMiB"),
   * so keep host names and numbers out of them; those belong in `detail`.
   */
  readonly reasons: readonly string[];
  /** The specifics for this host ("needs 4096, 1024 free of 16384"). */
  readonly detail?: string;
}

/** A filter's answer: `true` to keep the host, or a {@link Rejection}. */
export type Verdict = true | Rejection;

/** Builds a {@link Rejection}. */
export function reject(reasons: string | readonly string[], detail?: string): Rejection {
  return detail === undefined
    ? { reasons: typeof reasons === 'string' ? [reasons] : reasons }
    : { reasons: typeof reasons === 'string' ? [reasons] : reasons, detail };
}

/**
 * What one pick knows beyond a single host. A plugin that needs the whole picture (where a server
 * group's members run) asks here instead of scanning hosts itself, so the answer is computed once per pick.
 */
export interface Cycle {
  /** Every candidate of the pick (also those not evaluated when sampling). */
  readonly candidates: readonly Candidate[];
  /** Ids of the hosts that run a member of the server group. */
  groupHosts(groupId: string): ReadonlySet<string>;
}

/**
 * Phase one: a predicate that removes hosts that cannot take the request.
 * Register your own by passing it in `SchedulerOptions.filters`; nothing else is required.
 *
 * @example
 * ```ts
 * const gpu: Filter = {
 *   name: 'HasGpu',
 *   filter: (c) => (c.host.labels.gpu === 'true' ? true : reject('has no gpu')),
 * };
 * ```
 */
export interface Filter {
  /** Shown in explanations as the filter that rejected a host. */
  readonly name: string;
  /** Whether the filter has anything to check for this request; when false it is skipped for every host. */
  appliesTo?(request: PlacementRequest): boolean;
  /** `true` to keep the host, a {@link Rejection} to remove it. Must not mutate its arguments. */
  filter(candidate: Candidate, request: PlacementRequest, cycle: Cycle): Verdict;
}

/**
 * Phase two: a scoring function over the hosts that passed every filter; higher is better.
 *
 * `scale` says what the numbers mean: `score` weighers return 0..100 (used as is in Kubernetes
 * normalization), `raw` weighers return any quantity (free MiB, a member count) that the
 * scheduler rescales. In Nova normalization every weigher is rescaled to 0..1.
 */
export interface Weigher {
  /** Shown in explanations next to each host's score. */
  readonly name: string;
  /** `score` (0..100) or `raw` (default). */
  readonly scale?: 'score' | 'raw';
  /** Whether the weigher has an opinion on this request; when false it is skipped. */
  appliesTo?(request: PlacementRequest): boolean;
  /** The host's weight. Must not mutate its arguments. */
  weigh(candidate: Candidate, request: PlacementRequest, cycle: Cycle): number;
}

/** A weigher with its weight (Kubernetes' plugin weight, Nova's multiplier; negative inverts it). */
export interface WeigherEntry {
  weigher: Weigher;
  /** Default 1. */
  weight?: number;
}
