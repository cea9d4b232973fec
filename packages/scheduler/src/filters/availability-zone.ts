import { type Filter, reject } from '../plugin.js';

/** Keeps only hosts in the `availabilityZone` hint (Nova's AvailabilityZoneFilter). */
export function availabilityZoneFilter(): Filter {
  return {
    name: 'AvailabilityZone',
    appliesTo: (r) => r.hints.availabilityZone !== undefined,
    filter: (c, r) =>
      c.host.availabilityZone === r.hints.availabilityZone
        ? true
        : reject('not in the requested availability zone', `in ${c.host.availabilityZone ?? 'no zone'}`),
  };
}
