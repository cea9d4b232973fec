import type { LabelSelector } from '../model.js';
import { type Filter, reject } from '../plugin.js';

/** Kubernetes label selector semantics: every `matchLabels` pair and every expression must hold. */
export function matchesSelector(labels: Readonly<Record<string, string>>, selector: LabelSelector): boolean {
  if (selector.matchLabels) {
    for (const [key, value] of Object.entries(selector.matchLabels)) if (labels[key] !== value) return false;
  }
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    switch (e.operator) {
      case 'In':
        if (!has || !e.values?.includes(labels[e.key] as string)) return false;
        break;
      case 'NotIn':
        if (has && e.values?.includes(labels[e.key] as string)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** Keeps hosts whose labels match the `labelSelector` hint (kube's NodeAffinity / nodeSelector). */
export function labelSelectorFilter(): Filter {
  return {
    name: 'LabelSelector',
    appliesTo: (r) => r.hints.labelSelector !== undefined,
    filter: (c, r) =>
      matchesSelector(c.host.labels, r.hints.labelSelector as LabelSelector)
        ? true
        : reject('did not match label selector'),
  };
}
