/**
 * @nubes/quota: per-project limits and usage with atomic reservations that never over-commit.
 *
 * Registered defaults and per-project limits (flat or strict two-level, as oslo.limit models them), usage kept
 * with reservations (`check`, `reserve`, `commit`, `rollback`, `release`) that expire on their own, usage
 * reports and drift repair, all on a `@nubes/core` Store.
 *
 * @packageDocumentation
 */

export type { QuotaFailure } from './errors.js';
export type { Constraint, Evaluation, ResourceCheck } from './headroom.js';
export { available, evaluate, minAvailable } from './headroom.js';
export { STANDARD_DEFAULTS, UNLIMITED } from './limits.js';
export type {
  CheckResult,
  QuotaOptions,
  ReleaseOptions,
  ReleaseResult,
  ReserveOptions,
} from './quota.js';
export { Quota } from './quota.js';
export type { EnforcementModel, Usage } from './records.js';
export type { Drift, RepairReport, ResourceCounter } from './repair.js';
export type { ProjectUsage, ResourceUsage, TreeUsage } from './reports.js';
export type { Settlement, SettlementOutcome } from './settle.js';
export type { Sweeper, SweepResult } from './sweeper.js';
