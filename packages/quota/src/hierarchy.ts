import { addResources, invalidInput, type Resources, subtractResources } from '@nubes/core';
import type { Constraint } from './headroom.js';
import { effectiveLimit } from './limits.js';
import type { ConfigRecord, EnforcementModel, ProjectRecord, Usage } from './records.js';

/** Usage of nothing. */
export function zeroUsage(): Usage {
  return { inUse: {}, reserved: {} };
}

/** `a + b`, for both counters. */
export function addUsage(a: Usage, b: Usage): Usage {
  return { inUse: addResources(a.inUse, b.inUse), reserved: addResources(a.reserved, b.reserved) };
}

/** `a - b`, for both counters. */
export function subtractUsage(a: Usage, b: Usage): Usage {
  return { inUse: subtractResources(a.inUse, b.inUse), reserved: subtractResources(a.reserved, b.reserved) };
}

/** A project's own usage, without its children's. */
export function ownUsage(project: ProjectRecord): Usage {
  return { inUse: project.inUse, reserved: project.reserved };
}

/** A project's usage including its children's, as the strict model counts it against the project's limit. */
export function treeUsage(project: ProjectRecord): Usage {
  return project.children ? addUsage(ownUsage(project), project.children) : ownUsage(project);
}

/** The sum of several projects' own usage (a parent's `children` total). */
export function sumUsage(projects: readonly ProjectRecord[]): Usage {
  return projects.reduce<Usage>((total, p) => addUsage(total, ownUsage(p)), zeroUsage());
}

/**
 * The limits a request in `project` must fit under. Flat: only the project's own. Strict two-level: the
 * project's limit over its whole tree (itself plus children), and, for a child, its parent's limit over the
 * parent's whole tree, so the children together never exceed the parent.
 */
export function constraintsFor(
  config: ConfigRecord,
  id: string,
  project: ProjectRecord,
  parent: ProjectRecord | undefined,
): Constraint[] {
  const limitOf = (p: ProjectRecord) => (resource: string) => effectiveLimit(config, p, resource);
  if (config.model === 'flat') {
    return [{ project: id, scope: 'project', limit: limitOf(project), usage: ownUsage(project) }];
  }
  const own: Constraint = {
    project: id,
    scope: project.children ? 'tree' : 'project',
    limit: limitOf(project),
    usage: treeUsage(project),
  };
  if (project.parent === null || parent === undefined) return [own];
  return [own, { project: project.parent, scope: 'tree', limit: limitOf(parent), usage: treeUsage(parent) }];
}

/** Whether changes to `project` must also be applied to its parent's `children` total. */
export function tracksParent(
  model: EnforcementModel,
  project: ProjectRecord,
): project is ProjectRecord & { parent: string } {
  return model === 'strict-two-level' && project.parent !== null;
}

/**
 * Validates giving `child` the parent `parent`: hierarchies are at most two levels deep in both models
 * (a parent has no parent, a child has no children), so switching models never needs reshaping.
 */
export function checkParentChange(
  child: string,
  parent: string | null,
  childHasChildren: boolean,
  parentRecord: ProjectRecord | undefined,
): void {
  if (parent === null) return;
  if (parent === child) throw invalidInput('parent', 'a project cannot be its own parent');
  if (childHasChildren) {
    throw invalidInput(
      'parent',
      `project "${child}" has children, so it cannot become a child (two levels at most)`,
    );
  }
  if (parentRecord?.parent != null) {
    throw invalidInput(
      'parent',
      `project "${parent}" is itself a child of "${parentRecord.parent}" (two levels at most)`,
    );
  }
}

/** `usage` plus `deltas` in one of its counters. */
export function shift(usage: Usage, counter: keyof Usage, deltas: Resources, sign: 1 | -1): Usage {
  const next = sign === 1 ? addResources(usage[counter], deltas) : subtractResources(usage[counter], deltas);
  return { ...usage, [counter]: next };
}
