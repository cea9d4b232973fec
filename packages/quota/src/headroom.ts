import type { Resources } from '@nubes/core';
import { UNLIMITED } from './limits.js';
import type { Usage } from './records.js';

/** One limit a request must fit under: a project's own, or (strict model) its tree's. */
export interface Constraint {
  /** The project whose limit this is. */
  project: string;
  /** `project`: the project's own usage; `tree`: the project's usage plus its children's. */
  scope: 'project' | 'tree';
  /** The limit of each resource (-1: unlimited). */
  limit(resource: string): number;
  /** The usage counted against the limit. */
  usage: Usage;
}

/** How one resource of a request fares against one constraint. */
export interface ResourceCheck {
  resource: string;
  project: string;
  scope: 'project' | 'tree';
  requested: number;
  inUse: number;
  reserved: number;
  /** -1: unlimited. */
  limit: number;
  /** What could still be reserved before this request (-1: unlimited). */
  available: number;
  fits: boolean;
}

/** The outcome of checking a request against every constraint. */
export interface Evaluation {
  fits: boolean;
  /** One entry per requested resource and constraint. */
  checks: ResourceCheck[];
  /** The checks that failed, each naming its resource, project and scope. */
  failures: ResourceCheck[];
}

/** Headroom under a limit: never negative (a limit lowered below usage leaves 0), -1 when unlimited. */
export function available(limit: number, inUse: number, reserved: number): number {
  return limit === UNLIMITED ? UNLIMITED : Math.max(0, limit - inUse - reserved);
}

/** The smaller of two headrooms, where -1 (unlimited) is larger than anything. */
export function minAvailable(a: number, b: number): number {
  if (a === UNLIMITED) return b;
  if (b === UNLIMITED) return a;
  return Math.min(a, b);
}

/**
 * Checks `deltas` against every constraint. A request of 0 always fits, so a project already over a lowered
 * limit can still make requests that do not add to the overage.
 */
export function evaluate(deltas: Resources, constraints: readonly Constraint[]): Evaluation {
  const checks: ResourceCheck[] = [];
  for (const constraint of constraints) {
    for (const [resource, requested] of Object.entries(deltas)) {
      const limit = constraint.limit(resource);
      const inUse = constraint.usage.inUse[resource] ?? 0;
      const reserved = constraint.usage.reserved[resource] ?? 0;
      const fits = requested === 0 || limit === UNLIMITED || inUse + reserved + requested <= limit;
      checks.push({
        resource,
        project: constraint.project,
        scope: constraint.scope,
        requested,
        inUse,
        reserved,
        limit,
        available: available(limit, inUse, reserved),
        fits,
      });
    }
  }
  const failures = checks.filter((check) => !check.fits);
  return { fits: failures.length === 0, checks, failures };
}
