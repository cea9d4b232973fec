import type { Filter } from '../plugin.js';
import { availabilityZoneFilter } from './availability-zone.js';
import { differentHostFilter } from './different-host.js';
import { hostNameFilter } from './host-name.js';
import { hostStateFilter } from './host-state.js';
import { jsonQueryFilter } from './json-query.js';
import { labelSelectorFilter } from './label-selector.js';
import { type MaxInstancesOptions, maxInstancesFilter } from './max-instances.js';
import { resourceFitFilter } from './resource-fit.js';
import { sameHostFilter } from './same-host.js';
import { serverGroupFilter } from './server-group.js';
import { taintsFilter } from './taints.js';
import { traitsFilter } from './traits.js';

export { availabilityZoneFilter } from './availability-zone.js';
export { differentHostFilter } from './different-host.js';
export { hostNameFilter } from './host-name.js';
export { hostStateFilter } from './host-state.js';
export { jsonQueryFilter, queryView } from './json-query.js';
export { labelSelectorFilter, matchesSelector } from './label-selector.js';
export { type MaxInstancesOptions, maxInstancesFilter } from './max-instances.js';
export { resourceFitFilter } from './resource-fit.js';
export { sameHostFilter } from './same-host.js';
export { groupMembersOn, serverGroupFilter } from './server-group.js';
export { taintsFilter, tolerates } from './taints.js';
export { traitsFilter } from './traits.js';

/** Options of {@link defaultFilters}. */
export interface DefaultFiltersOptions {
  /** Passed to {@link maxInstancesFilter}. */
  maxInstances?: MaxInstancesOptions;
}

/**
 * Every built-in filter, cheapest and most decisive first: the first filter that rejects a host is the
 * one an explanation names, as in kube-scheduler. Filters whose hint is absent are skipped.
 */
export function defaultFilters(options: DefaultFiltersOptions = {}): Filter[] {
  return [
    hostStateFilter(),
    hostNameFilter(),
    availabilityZoneFilter(),
    traitsFilter(),
    labelSelectorFilter(),
    taintsFilter(),
    sameHostFilter(),
    differentHostFilter(),
    serverGroupFilter(),
    maxInstancesFilter(options.maxInstances),
    jsonQueryFilter(),
    resourceFitFilter(),
  ];
}
