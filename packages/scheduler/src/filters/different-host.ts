import { type Filter, reject } from '../plugin.js';

/** Removes hosts that run any of the `differentHost` instances (Nova's DifferentHostFilter). */
export function differentHostFilter(): Filter {
  return {
    name: 'DifferentHost',
    appliesTo: (r) => Boolean(r.hints.differentHost?.length),
    filter(c, r) {
      const avoid = r.hints.differentHost ?? [];
      const hit = c.instances.find((i) => avoid.includes(i.id));
      return hit ? reject('runs an instance of different_host', `runs ${hit.id}`) : true;
    },
  };
}
