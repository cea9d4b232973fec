import type { JsonValue, Resources } from '@nubes/core';
import type { ReceiptKind } from './keys.js';

/** How limits apply across a project tree, as oslo.limit names the models. */
export type EnforcementModel = 'flat' | 'strict-two-level';

/** Amounts held by a project: committed (`inUse`) and promised to callers that have not finished (`reserved`). */
export interface Usage {
  inUse: Resources;
  reserved: Resources;
}

/** The stored configuration of a quota domain. */
export interface ConfigRecord {
  model: EnforcementModel;
  /** Registered resources and their default limits (-1: unlimited). */
  defaults: Record<string, number>;
}

/** Everything about one project that a reservation must read and write, in one key. */
export interface ProjectRecord extends Usage {
  parent: string | null;
  /** Overrides of the registered defaults. */
  limits: Record<string, number>;
  /**
   * Strict model, parents only: the sum of the children's usage, kept in step with every child's change so
   * a child's reservation reads two keys rather than every sibling.
   */
  children?: Usage;
}

/** A pending reservation. */
export interface ReservationRecord {
  id: string;
  project: string;
  deltas: Resources;
  createdAt: number;
  expiresAt: number;
}

/** Proof that an idempotent operation was applied, with what it returned. */
export interface ReceiptRecord {
  kind: ReceiptKind;
  /** The input the operation was applied with; a retry must repeat it exactly. */
  fingerprint: string;
  result: JsonValue;
  forgetAt: number;
}

/** A project nobody has configured or charged yet: defaults apply and nothing is used. */
export function emptyProject(): ProjectRecord {
  return { parent: null, limits: {}, inUse: {}, reserved: {} };
}

/** Records are plain JSON by construction; this only tells the compiler so. */
export function toJson(value: object): JsonValue {
  return value as unknown as JsonValue;
}

/** A stable text form of an operation's input, independent of key order. */
export function fingerprint(project: string, deltas: Resources): string {
  const sorted = Object.keys(deltas)
    .sort()
    .map((name) => [name, deltas[name]]);
  return JSON.stringify([project, sorted]);
}
