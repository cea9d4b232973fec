import { addResources, parseInput, type Resources, subtractResources } from '@nubes/core';
import {
  changeUsage,
  listAll,
  type QuotaContext,
  readConfig,
  readProject,
  readTrackedParent,
  writeProject,
} from './context.js';
import { sumUsage } from './hierarchy.js';
import { assertRegistered } from './limits.js';
import type { ProjectRecord, Usage } from './records.js';
import { deltasSchema } from './schemas.js';

/** Counts a project's real resources, as the caller's service knows them (its database, the hypervisors...). */
export type ResourceCounter = (project: string) => Resources | Promise<Resources>;

/** One difference found and fixed by {@link repairUsage}. */
export interface Drift {
  project: string;
  resource: string;
  /** `inUse`: the project's own usage; `children.*`: a strict-model parent's total of its children. */
  counter: 'inUse' | 'children.inUse' | 'children.reserved';
  /** What the quota had recorded. */
  recorded: number;
  /** What it holds now. */
  actual: number;
}

/** What a repair did. */
export interface RepairReport {
  /** Projects whose usage was compared with the counts. */
  checked: number;
  fixed: Drift[];
  /** Projects left alone, and why. */
  skipped: { project: string; reason: string }[];
}

/** Pure: the differences between recorded and counted amounts, for the counted resources only. */
export function findDrift(project: string, recorded: Resources, counted: Resources): Drift[] {
  return Object.entries(counted)
    .filter(([name, actual]) => (recorded[name] ?? 0) !== actual)
    .map(([resource, actual]) => ({
      project,
      resource,
      counter: 'inUse' as const,
      recorded: recorded[resource] ?? 0,
      actual,
    }));
}

/** Pure: differences between a parent's stored children total and the sum of its children. */
export function findTotalsDrift(project: string, stored: Usage, actual: Usage): Drift[] {
  const out: Drift[] = [];
  for (const counter of ['inUse', 'reserved'] as const) {
    const names = new Set([...Object.keys(stored[counter]), ...Object.keys(actual[counter])]);
    for (const resource of [...names].sort()) {
      const recorded = stored[counter][resource] ?? 0;
      const now = actual[counter][resource] ?? 0;
      if (recorded !== now)
        out.push({ project, resource, counter: `children.${counter}`, recorded, actual: now });
    }
  }
  return out;
}

const ATTEMPTS = 3;

async function repairProject(
  ctx: QuotaContext,
  count: ResourceCounter,
  id: string,
): Promise<Drift[] | string> {
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const before = await ctx.store.get<ProjectRecord>(ctx.keys.project(id));
    if (before && Object.keys(before.value.reserved).length > 0) return 'reservations pending';
    const counted = addResources({}, parseInput(deltasSchema, await count(id), 'counts'));
    const outcome = await ctx.store.transaction(async (tx) => {
      const [config, entry] = await Promise.all([
        readConfig(tx, ctx),
        tx.get<ProjectRecord>(ctx.keys.project(id)),
      ]);
      assertRegistered(config, counted, 'counts');
      // The count is only valid if nothing was reserved, committed or released while it was taken.
      if ((entry?.revision ?? 0) !== (before?.revision ?? 0)) return 'changed' as const;
      const record = await readProject(tx, ctx, id);
      const drift = findDrift(id, record.inUse, counted);
      if (drift.length === 0) return drift;
      const parent = await readTrackedParent(tx, ctx, config, record);
      const inUse = addResources(
        record.inUse,
        subtractResources(counted, pick(record.inUse, Object.keys(counted))),
      );
      changeUsage(tx, ctx, config, id, record, parent, (own) => ({ ...own, inUse }));
      return drift;
    }, ctx.tx);
    if (outcome !== 'changed') return outcome;
  }
  return 'usage kept changing while it was counted';
}

function pick(v: Resources, names: string[]): Resources {
  return Object.fromEntries(names.filter((n) => v[n] !== undefined).map((n) => [n, v[n] as number]));
}

async function repairTotals(ctx: QuotaContext, id: string): Promise<Drift[]> {
  return ctx.store.transaction(async (tx) => {
    const prefix = ctx.keys.children(id);
    const [config, record, index] = await Promise.all([
      readConfig(tx, ctx),
      readProject(tx, ctx, id),
      listAll(tx, prefix),
    ]);
    if (config.model !== 'strict-two-level' || index.length === 0) return [];
    const kids = await Promise.all(index.map((e) => readProject(tx, ctx, e.key.slice(prefix.length))));
    const actual = sumUsage(kids);
    const drift = findTotalsDrift(id, record.children ?? { inUse: {}, reserved: {} }, actual);
    if (drift.length > 0) writeProject(tx, ctx, id, { ...record, children: actual });
    return drift;
  }, ctx.tx);
}

/**
 * Recomputes usage from `count` for `projects` (default: every project the quota has a record of), then,
 * in the strict model, every parent's children total from its children.
 */
export async function repairUsage(
  ctx: QuotaContext,
  count: ResourceCounter,
  projects?: string[],
): Promise<RepairReport> {
  const ids =
    projects ??
    (await listAll<ProjectRecord>(ctx.store, ctx.keys.projects())).map((e) =>
      e.key.slice(ctx.keys.projects().length),
    );
  const report: RepairReport = { checked: 0, fixed: [], skipped: [] };
  for (const id of [...new Set(ids)]) {
    const outcome = await repairProject(ctx, count, id);
    if (typeof outcome === 'string') report.skipped.push({ project: id, reason: outcome });
    else {
      report.checked += 1;
      report.fixed.push(...outcome);
    }
  }
  const parents = new Set<string>();
  for (const id of ids) {
    const record = await readProject(ctx.store, ctx, id);
    parents.add(record.parent ?? id);
  }
  for (const parent of [...parents].sort()) report.fixed.push(...(await repairTotals(ctx, parent)));
  return report;
}
