import { type Filter, reject } from '../plugin.js';

/** Keeps hosts that run at least one of the `sameHost` instances (Nova's SameHostFilter). */
export function sameHostFilter(): Filter {
  return {
    name: 'SameHost',
    appliesTo: (r) => Boolean(r.hints.sameHost?.length),
    filter(c, r) {
      const wanted = r.hints.sameHost ?? [];
      return c.instances.some((i) => wanted.includes(i.id))
        ? true
        : reject('does not run any instance of same_host');
    },
  };
}
