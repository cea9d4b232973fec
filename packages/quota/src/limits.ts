import { invalidInput, type Resources } from '@nubes/core';
import type { ConfigRecord, ProjectRecord } from './records.js';

/** The limit value that means "no limit". */
export const UNLIMITED = -1;

/**
 * The resources every quota domain knows from the start, with OpenStack's stock defaults (Nova, Cinder,
 * Neutron; `images` is ours, Glance registers none). `registerResources` overrides any of them.
 */
export const STANDARD_DEFAULTS: Readonly<Record<string, number>> = Object.freeze({
  instances: 10,
  vcpus: 20,
  memoryMiB: 51_200,
  volumes: 10,
  diskGiB: 1000,
  snapshots: 10,
  networks: 100,
  subnets: 100,
  ports: 500,
  routers: 10,
  floatingIps: 50,
  securityGroups: 10,
  securityGroupRules: 100,
  images: 100,
});

/** The configuration of a domain nobody has configured: the standard resources, flat enforcement (Keystone's default). */
export function defaultConfig(): ConfigRecord {
  return { model: 'flat', defaults: { ...STANDARD_DEFAULTS } };
}

/** A project's limit for one resource: its override, else the registered default. */
export function effectiveLimit(config: ConfigRecord, project: ProjectRecord, resource: string): number {
  return project.limits[resource] ?? config.defaults[resource] ?? UNLIMITED;
}

/**
 * Throws `InvalidInput` naming `field.<resource>` for the first resource that is not registered: an unknown
 * name is a typo or a missing registration, never a silent limit of 0.
 */
export function assertRegistered(
  config: ConfigRecord,
  resources: Resources | Record<string, unknown>,
  field: string,
): void {
  for (const name of Object.keys(resources)) {
    if (!(name in config.defaults)) {
      throw invalidInput(`${field}.${name}`, `resource "${name}" is not registered`, {
        registered: Object.keys(config.defaults).sort(),
      });
    }
  }
}

/** `project.limits` with `overrides` applied; a `null` override removes the project's own value. */
export function applyOverrides(
  limits: Record<string, number>,
  overrides: Record<string, number | null>,
): Record<string, number> {
  const out = { ...limits };
  for (const [name, value] of Object.entries(overrides)) {
    if (value === null) delete out[name];
    else out[name] = value;
  }
  return out;
}
