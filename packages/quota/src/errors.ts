import { NubesError } from '@nubes/core';
import type { ResourceCheck } from './headroom.js';

/** One resource that did not fit, as `QuotaExceeded` details report it. */
export interface QuotaFailure {
  resource: string;
  /** The project whose limit was hit: the requesting project, or (strict model) its parent. */
  project: string;
  /** `tree` when the limit covers the project and its children. */
  scope: 'project' | 'tree';
  requested: number;
  inUse: number;
  reserved: number;
  limit: number;
}

/** `QuotaExceeded` naming every resource that did not fit, with requested, in use, reserved and limit. */
export function quotaExceeded(project: string, failures: readonly ResourceCheck[]): NubesError {
  const list: QuotaFailure[] = failures.map(
    ({ resource, project: p, scope, requested, inUse, reserved, limit }) => ({
      resource,
      project: p,
      scope,
      requested,
      inUse,
      reserved,
      limit,
    }),
  );
  const parts = list.map((f) => {
    const where =
      f.scope === 'tree' ? ` (tree of ${f.project})` : f.project === project ? '' : ` (${f.project})`;
    return `${f.resource}${where}: requested ${f.requested}, in use ${f.inUse}, reserved ${f.reserved}, limit ${f.limit}`;
  });
  return new NubesError('QuotaExceeded', `quota exceeded for project ${project}: ${parts.join('; ')}`, {
    details: { project, resources: list },
  });
}

/** `Conflict` for an idempotency key reused with different input. */
export function idempotencyMismatch(field: string, key: string): NubesError {
  return new NubesError(
    'Conflict',
    `${field}: key ${JSON.stringify(key)} was already used with different input`,
    {
      details: { field, idempotencyKey: key },
    },
  );
}

/** `Conflict` for settling a reservation that was already settled the other way, or has expired. */
export function reservationSettled(id: string, outcome: string, attempted: string): NubesError {
  return new NubesError('Conflict', `reservation ${id} cannot be ${attempted}: it was already ${outcome}`, {
    details: { reservation: id, outcome, attempted },
  });
}
