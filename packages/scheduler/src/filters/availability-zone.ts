import { withFilterKernel } from '../kernel.js';
import { type Filter, reject } from '../plugin.js';

/** Keeps only hosts in the `availabilityZone` hint (Nova's AvailabilityZoneFilter). */
export function availabilityZoneFilter(): Filter {
  return withFilterKernel(
    {
      name: 'AvailabilityZone',
      appliesTo: (r) => r.hints.availabilityZone !== undefined,
      filter: (c, r) =>
        c.host.availabilityZone === r.hints.availabilityZone
          ? true
          : reject('not in the requested availability zone', `in ${c.host.availabilityZone ?? 'no zone'}`),
    },
    ({ columns, request }, rejections) => {
      const zones = columns.zones;
      const wanted = request.hints.availabilityZone;
      // Counts need only the reason; a failure explanation re-runs the plugin for each host's detail.
      const elsewhere = rejections.push(reject('not in the requested availability zone'));
      return {
        run(hosts, m, codes) {
          let kept = 0;
          for (let k = 0; k < m; k++) {
            const i = hosts[k] as number;
            if (zones[i] === wanted) hosts[kept++] = i;
            else codes[i] = elsewhere;
          }
          return kept;
        },
      };
    },
  );
}
