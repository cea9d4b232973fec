import type { Resources } from '@nubes/core';
import { available, minAvailable } from './headroom.js';
import { constraintsFor } from './hierarchy.js';
import { effectiveLimit, UNLIMITED } from './limits.js';
import type { ConfigRecord, EnforcementModel, ProjectRecord, Usage } from './records.js';

/** One resource of a usage report. */
export interface ResourceUsage {
  /** The project's effective limit (-1: unlimited). */
  limit: number;
  /** Committed usage of the project itself. */
  inUse: number;
  /** Amounts held by pending reservations of the project itself. */
  reserved: number;
  /**
   * What a `reserve` in this project could take now (-1: unlimited): the tightest headroom of every limit
   * that applies, so in the strict model it accounts for the children and the parent.
   */
  available: number;
}

/** A usage report of one project. */
export interface ProjectUsage {
  project: string;
  parent: string | null;
  model: EnforcementModel;
  /** Every registered resource, plus any with usage. */
  resources: Record<string, ResourceUsage>;
}

/** A usage report of a parent and its children. */
export interface TreeUsage {
  project: string;
  model: EnforcementModel;
  /** The parent's own report. */
  parent: ProjectUsage;
  children: ProjectUsage[];
  /**
   * The whole tree: usage summed over the parent and its children; `limit` and `available` are the parent's
   * tree limit in the strict model, and -1 in the flat one, where a tree as a whole has no limit.
   */
  total: Record<string, ResourceUsage>;
}

function resourceNames(config: ConfigRecord, ...usages: Usage[]): string[] {
  const names = new Set(Object.keys(config.defaults));
  for (const u of usages)
    for (const name of [...Object.keys(u.inUse), ...Object.keys(u.reserved)]) names.add(name);
  return [...names].sort();
}

/** The report of `project` (with `parent`, its parent's record, when it has one). */
export function projectReport(
  config: ConfigRecord,
  id: string,
  project: ProjectRecord,
  parent: ProjectRecord | undefined,
): ProjectUsage {
  const constraints = constraintsFor(config, id, project, parent);
  const resources: Record<string, ResourceUsage> = {};
  for (const name of resourceNames(config, project)) {
    const room = constraints.reduce(
      (min, c) =>
        minAvailable(min, available(c.limit(name), c.usage.inUse[name] ?? 0, c.usage.reserved[name] ?? 0)),
      UNLIMITED,
    );
    resources[name] = {
      limit: effectiveLimit(config, project, name),
      inUse: project.inUse[name] ?? 0,
      reserved: project.reserved[name] ?? 0,
      available: room,
    };
  }
  return { project: id, parent: project.parent, model: config.model, resources };
}

/** The report of a parent and its children. */
export function treeReport(
  config: ConfigRecord,
  id: string,
  parent: ProjectRecord,
  children: ReadonlyArray<{ id: string; record: ProjectRecord }>,
): TreeUsage {
  const strict = config.model === 'strict-two-level';
  const summed: Usage = children.reduce<Usage>(
    (acc, c) => ({
      inUse: addInto(acc.inUse, c.record.inUse),
      reserved: addInto(acc.reserved, c.record.reserved),
    }),
    { inUse: { ...parent.inUse }, reserved: { ...parent.reserved } },
  );
  const total: Record<string, ResourceUsage> = {};
  for (const name of resourceNames(config, summed)) {
    const limit = strict ? effectiveLimit(config, parent, name) : UNLIMITED;
    const inUse = summed.inUse[name] ?? 0;
    const reserved = summed.reserved[name] ?? 0;
    total[name] = { limit, inUse, reserved, available: available(limit, inUse, reserved) };
  }
  return {
    project: id,
    model: config.model,
    parent: projectReport(config, id, parent, undefined),
    children: children.map((c) => projectReport(config, c.id, c.record, parent)),
    total,
  };
}

function addInto(a: Resources, b: Resources): Record<string, number> {
  const out: Record<string, number> = { ...a };
  for (const [name, value] of Object.entries(b)) out[name] = (out[name] ?? 0) + value;
  return out;
}
