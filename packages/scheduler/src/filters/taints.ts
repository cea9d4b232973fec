import type { Candidate } from '../candidate.js';
import { KEEP_ALL, withFilterKernel } from '../kernel.js';
import type { Taint, Toleration } from '../model.js';
import { type Filter, reject } from '../plugin.js';

/** Kubernetes toleration matching: same effect (or none given), same key (or empty with Exists), same value for Equal. */
export function tolerates(toleration: Toleration, taint: Taint): boolean {
  if (toleration.effect !== undefined && toleration.effect !== taint.effect) return false;
  if (toleration.key === undefined) return toleration.operator === 'Exists';
  if (toleration.key !== taint.key) return false;
  return toleration.operator === 'Exists' || (toleration.value ?? '') === (taint.value ?? '');
}

function show(taint: Taint): string {
  return `${taint.key}${taint.value === undefined ? '' : `=${taint.value}`}:${taint.effect}`;
}

/**
 * Removes hosts with a `NoSchedule` or `NoExecute` taint the request does not tolerate (kube's
 * TaintToleration). `PreferNoSchedule` taints never reject.
 */
export function taintsFilter(): Filter {
  const filter: Filter = {
    name: 'TaintToleration',
    filter(c, r) {
      const taints = c.host.taints;
      if (taints.length === 0) return true;
      const tolerations = r.hints.tolerations ?? [];
      for (const taint of taints) {
        if (taint.effect === 'PreferNoSchedule') continue;
        if (!tolerations.some((t) => tolerates(t, taint)))
          return reject(`had untolerated taint ${show(taint)}`);
      }
      return true;
    },
  };
  // Most hosts carry no taint and pass at the cost of one byte read; the few that do go to the plugin.
  return withFilterKernel(filter, ({ columns, candidates, request, cycle }, rejections) => {
    if (!columns.anyTainted) return KEEP_ALL;
    const tainted = columns.tainted;
    return {
      run(hosts, m, codes) {
        let kept = 0;
        for (let k = 0; k < m; k++) {
          const i = hosts[k] as number;
          const verdict = tainted[i] === 0 ? true : filter.filter(candidates[i] as Candidate, request, cycle);
          if (verdict === true) hosts[kept++] = i;
          else codes[i] = rejections.push(verdict);
        }
        return kept;
      },
    };
  });
}
