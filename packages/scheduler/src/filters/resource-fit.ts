import type { PlacementRequest } from '../model.js';
import { type Filter, reject } from '../plugin.js';

/**
 * Removes hosts without room for the request in every resource class, counting overcommit:
 * free = (capacity - reserved) x allocation ratio - allocated (Nova's resource filters, kube's NodeResourcesFit).
 * A resource the host does not have at all has no room.
 */
export function resourceFitFilter(): Filter {
  // The same request is checked against thousands of hosts in a row: list its resources once.
  let lastRequest: PlacementRequest | undefined;
  let wanted: [string, number][] = [];
  return {
    name: 'ResourceFit',
    filter(c, r) {
      if (r !== lastRequest) {
        lastRequest = r;
        wanted = Object.entries(r.resources).filter(([, need]) => need > 0);
      }
      const free = c.free;
      let missing: string[] | undefined;
      for (let i = 0; i < wanted.length; i++) {
        const [name, need] = wanted[i] as [string, number];
        if (need > (free[name] ?? 0)) {
          missing ??= [];
          missing.push(name);
        }
      }
      if (missing === undefined) return true;
      return reject(
        missing.map((name) => `insufficient ${name}`),
        missing
          .map(
            (name) =>
              `${name}: needs ${r.resources[name]}, ${free[name] ?? 0} free of ${c.usable[name] ?? 0} usable`,
          )
          .join('; '),
      );
    },
  };
}
