import { withWeigherKernel } from '../kernel.js';
import type { Weigher } from '../plugin.js';

/** A Nova-style free-capacity weigher: the raw free amount of one resource class, before this request. */
export function freeResourceWeigher(name: string, resource: string): Weigher {
  return withWeigherKernel({ name, scale: 'raw', weigh: (c) => c.free[resource] ?? 0 }, ({ columns }) => {
    const free = columns.resource(resource)?.free;
    if (!free) return undefined;
    return {
      run(hosts, count, out, base) {
        for (let j = 0; j < count; j++) out[base + j] = free[hosts[j] as number] as number;
      },
    };
  });
}
