import { type Filter, reject } from '../plugin.js';

/** Keeps hosts with every required trait and none of the forbidden ones (Placement's required / forbidden traits). */
export function traitsFilter(): Filter {
  return {
    name: 'Traits',
    appliesTo: (r) => Boolean(r.hints.requiredTraits?.length || r.hints.forbiddenTraits?.length),
    filter(c, r) {
      const traits = c.host.traits;
      const reasons: string[] = [];
      for (const t of r.hints.requiredTraits ?? [])
        if (!traits.includes(t)) reasons.push(`missing required trait ${t}`);
      for (const t of r.hints.forbiddenTraits ?? [])
        if (traits.includes(t)) reasons.push(`has forbidden trait ${t}`);
      return reasons.length === 0 ? true : reject(reasons);
    },
  };
}
