import type { Weigher } from '../plugin.js';

/** A Nova-style free-capacity weigher: the raw free amount of one resource class, before this request. */
export function freeResourceWeigher(name: string, resource: string): Weigher {
  return { name, scale: 'raw', weigh: (c) => c.free[resource] ?? 0 };
}
