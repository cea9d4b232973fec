import { invalidInput } from '@nubes/core';
import type { Candidate } from '../candidate.js';
import type { PlacementRequest } from '../model.js';

/** Resource classes and their weights in the allocation weighers; default `{ vcpus: 1, memoryMiB: 1 }` as in Kubernetes. */
export type ResourceWeights = Readonly<Record<string, number>>;

/** Kubernetes' default resource weights. */
export const DEFAULT_RESOURCE_WEIGHTS: ResourceWeights = { vcpus: 1, memoryMiB: 1 };

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
