import { invalidInput } from '@nubes/core';
import type { Candidate } from '../candidate.js';
import type { KernelContext } from '../kernel.js';
import type { PlacementRequest } from '../model.js';

/** Resource classes and their weights in the allocation weighers; default `{ vcpus: 1, memoryMiB: 1 }` as in Kubernetes. */
export type ResourceWeights = Readonly<Record<string, number>>;

/** Kubernetes' default resource weights. */
export const DEFAULT_RESOURCE_WEIGHTS: ResourceWeights = { vcpus: 1, memoryMiB: 1 };

/**
 * Range of the least- and most-allocated scores: each resource's term is at most 100 x its weight, so
 * the weighted mean is at most 100, give or take rounding, for which `hi` leaves room.
 */
export const SCORE_BOUNDS = { lo: 0, hi: 100 * (1 + 1e-9) } as const;

/** Checks resource weights given to a weigher factory. */
export function checkResourceWeights(weights: ResourceWeights, field: string): [string, number][] {
  const entries = Object.entries(weights);
  if (entries.length === 0) throw invalidInput(field, 'must name at least one resource');
  for (const [name, w] of entries) {
    if (!Number.isFinite(w) || w <= 0) throw invalidInput(`${field}.${name}`, 'must be a positive number');
  }
  return entries;
}

/** What the host would have allocated with this request on it (kube's "requested"). */
export function requestedWith(c: Candidate, r: PlacementRequest, name: string): number {
  return (c.allocated[name] ?? 0) + (r.resources[name] ?? 0);
}

/**
 * The columns an allocation kernel reads for `names`, with the request's amount of each, or `undefined`
 * when one of them has no column (then the weigher runs as a plugin).
 */
export function allocationColumns(
  context: KernelContext,
  names: readonly string[],
):
  | { usable: Float64Array[]; allocated: Float64Array[]; requests: Float64Array; nonNegative: boolean }
  | undefined {
  const usable: Float64Array[] = [];
  const allocated: Float64Array[] = [];
  let nonNegative = true;
  for (const name of names) {
    const column = context.columns.resource(name);
    if (!column) return undefined;
    usable.push(column.usable);
    allocated.push(column.allocated);
    nonNegative &&= column.allocatedNonNegative;
  }
  const requests = Float64Array.from(names, (name) => context.request.resources[name] ?? 0);
  return { usable, allocated, requests, nonNegative };
}
