/**
 * @nubes/scheduler: two-phase placement with filters and weighers, explanations, atomic claims and rebalancing.
 *
 * This package is a skeleton: it builds and publishes, and holds no API yet. Nova/kube-scheduler style placement: filter plugins (resource fit with allocation ratios, zones, labels, traits, taints, server groups, JSON queries...), weigher plugins, explanations as data, atomic claims against a Store, and a DRS-style rebalancing planner.
 *
 * @packageDocumentation
 */

export {};
