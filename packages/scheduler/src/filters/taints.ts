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
  return {
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
}
