import { invalidInput } from '@nubes/core';
import { KEEP_ALL, withFilterKernel } from '../kernel.js';
import { type Filter, type Rejection, reject } from '../plugin.js';

/** Options of {@link maxInstancesFilter}. */
export interface MaxInstancesOptions {
  /** Instances one host may run; default 50, Nova's `max_instances_per_host`. */
  max?: number;
}

/** Removes hosts that already run `max` instances (Nova's NumInstancesFilter). */
export function maxInstancesFilter(options: MaxInstancesOptions = {}): Filter {
  const max = options.max ?? 50;
  if (!Number.isInteger(max) || max < 1) throw invalidInput('max', 'must be a positive integer');
  const full: Rejection = reject(`already runs the maximum of ${max} instances`);
  return withFilterKernel(
    { name: 'MaxInstances', filter: (c) => (c.instances.length < max ? true : full) },
    ({ columns }, rejections) => {
      if (columns.mostInstances < max) return KEEP_ALL;
      const count = columns.instanceCount;
      const fullCode = rejections.push(full);
      return {
        run(hosts, m, codes) {
          let kept = 0;
          for (let k = 0; k < m; k++) {
            const i = hosts[k] as number;
            if ((count[i] as number) < max) hosts[kept++] = i;
            else codes[i] = fullCode;
          }
          return kept;
        },
      };
    },
  );
}
