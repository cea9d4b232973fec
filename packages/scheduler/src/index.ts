/**
 * @nubes/scheduler: two-phase placement in the manner of Nova's FilterScheduler and kube-scheduler.
 * Filters remove hosts that cannot take a request, weighers rank the rest, every decision explains
 * itself as data, an {@link Inventory} claims capacity atomically in a `@nubes/core` Store, and a
 * DRS-style planner proposes migrations that balance or consolidate hosts.
 *
 * @packageDocumentation
 */

export type { Candidate } from './candidate.js';
export { candidateOf, HostSnapshot, usableResources, withInstance, withoutInstance } from './candidate.js';
export type {
  FailureExplanation,
  HostRejection,
  HostScore,
  PickExplanation,
  WeigherScore,
} from './explain.js';
export { failureMessage, formatReasons } from './explain.js';
export * from './filters/index.js';
export type { Allocation, ClaimOutcome, InventoryOptions, Placement, StoredHost } from './inventory.js';
export { Inventory } from './inventory.js';
export type { JsonQuery, JsonQueryArgument, JsonQueryOperator, VariableResolver } from './json-query.js';
export {
  evaluateJsonQuery,
  JSON_QUERY_LIMITS,
  JSON_QUERY_OPERATORS,
  parseJsonQuery,
  resolvePath,
} from './json-query.js';
export type {
  Host,
  HostInput,
  HostMetrics,
  HostStateName,
  Instance,
  LabelRequirement,
  LabelSelector,
  PlacementHints,
  PlacementRequest,
  PlacementRequestInput,
  ServerGroupHint,
  ServerGroupPolicy,
  Taint,
  TaintEffect,
  Toleration,
} from './model.js';
export { parseHints, parseHost, parseRequest } from './model.js';
export type { Cycle, Filter, Rejection, Verdict, Weigher, WeigherEntry } from './plugin.js';
export { reject } from './plugin.js';
export type { BalanceOptions } from './rebalance/balance.js';
export { planBalance } from './rebalance/balance.js';
export type { ConsolidateOptions, ConsolidationPlan } from './rebalance/consolidate.js';
export { planConsolidation } from './rebalance/consolidate.js';
export type { PlannerOptions } from './rebalance/options.js';
export type { LoadSummary, LoadWeights, Move, Plan } from './rebalance/state.js';
export { hostsToFind, MIN_HOSTS_TO_FIND, seededRandom } from './sampling.js';
export type { Decision, Pick, SchedulerOptions } from './scheduler.js';
export { cycleOf, cycleWithGroups, pendingInstance, Scheduler } from './scheduler.js';
export * from './weighers/index.js';
