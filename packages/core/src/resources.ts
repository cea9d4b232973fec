import { z } from 'zod';
import { parseInput } from './validation.js';

/**
 * A resource vector: named quantities such as `{ vcpus: 4, memoryMiB: 8192, diskGiB: 40 }`.
 * Any name is a resource class (`gpus`, `CUSTOM_FPGA`, `bandwidthMbps`); a missing name means zero.
 * Quota and the scheduler share this one arithmetic.
 */
export type Resources = Readonly<Record<string, number>>;

/** The standard resource class names. */
export const ResourceClass = {
  VCPUS: 'vcpus',
  MEMORY_MIB: 'memoryMiB',
  DISK_GIB: 'diskGiB',
} as const;

const resourceName = z
  .string()
  .regex(
    /^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/,
    'resource names start with a letter and use letters, digits, _ . : -',
  );

/** Schema for a resource vector whose amounts are finite and not negative (capacities, requests). */
export const resourcesSchema = z.record(resourceName, z.number().finite().nonnegative());

/** Schema for a signed resource vector (deltas: a resize that gives back memory is negative). */
export const resourceDeltaSchema = z.record(resourceName, z.number().finite());

/** Validates a non-negative resource vector, throwing `InvalidInput` naming `field.<resource>`. */
export function parseResources(input: unknown, field = 'resources'): Resources {
  return parseInput(resourcesSchema, input, field);
}

function names(a: Resources, b: Resources): Set<string> {
  return new Set([...Object.keys(a), ...Object.keys(b)]);
}

function tidy(out: Record<string, number>): Resources {
  for (const [name, value] of Object.entries(out)) if (value === 0) delete out[name];
  return out;
}

/** `a + b`, per resource. Zero entries are dropped. */
export function addResources(a: Resources, b: Resources): Resources {
  const out: Record<string, number> = {};
  for (const name of names(a, b)) out[name] = (a[name] ?? 0) + (b[name] ?? 0);
  return tidy(out);
}

/** `a - b`, per resource; the result may be negative. Zero entries are dropped. */
export function subtractResources(a: Resources, b: Resources): Resources {
  const out: Record<string, number> = {};
  for (const name of names(a, b)) out[name] = (a[name] ?? 0) - (b[name] ?? 0);
  return tidy(out);
}

/** `v * factor`, per resource (an instance count, an allocation ratio). */
export function scaleResources(v: Resources, factor: number): Resources {
  const out: Record<string, number> = {};
  for (const [name, value] of Object.entries(v)) out[name] = value * factor;
  return tidy(out);
}

/** True when every amount in `request` is at most the same amount in `available` (missing = 0). */
export function fitsResources(request: Resources, available: Resources): boolean {
  for (const [name, amount] of Object.entries(request)) {
    if (amount > (available[name] ?? 0)) return false;
  }
  return true;
}

/** The amounts by which `request` exceeds `available`, only for the resources that do not fit. */
export function resourceShortfall(request: Resources, available: Resources): Resources {
  const out: Record<string, number> = {};
  for (const [name, amount] of Object.entries(request)) {
    const free = available[name] ?? 0;
    if (amount > free) out[name] = amount - free;
  }
  return out;
}

/** True when every amount is zero (or the vector is empty). */
export function isZeroResources(v: Resources): boolean {
  return Object.values(v).every((value) => value === 0);
}

/** Per-resource maximum of `a` and `b`. */
export function maxResources(a: Resources, b: Resources): Resources {
  const out: Record<string, number> = {};
  for (const name of names(a, b)) out[name] = Math.max(a[name] ?? 0, b[name] ?? 0);
  return tidy(out);
}
