import { invalidInput } from '@nubes/core';
import type { HostMetrics } from '../model.js';
import type { Weigher } from '../plugin.js';

/** Options of {@link metricsWeigher}. */
export interface MetricsWeigherOptions {
  /** Ratio per metric (Nova's `weight_setting`); default `{ cpuUtilization: -1, memoryUtilization: -1 }` prefers idle hosts. */
  ratios?: Partial<Record<keyof HostMetrics, number>>;
  /** Weight of a host that lacks a metric (Nova's `weight_of_unavailable`); default -10000 puts it last. */
  unavailable?: number;
}

/** Nova's MetricsWeigher on live utilization: `sum ratio_m * metric_m` (raw). */
export function metricsWeigher(options: MetricsWeigherOptions = {}): Weigher {
  const ratios = Object.entries(options.ratios ?? { cpuUtilization: -1, memoryUtilization: -1 }) as [
    keyof HostMetrics,
    number,
  ][];
  const unavailable = options.unavailable ?? -10_000;
  for (const [name, ratio] of ratios)
    if (!Number.isFinite(ratio)) throw invalidInput(`ratios.${name}`, 'must be finite');
  if (!Number.isFinite(unavailable)) throw invalidInput('unavailable', 'must be finite');
  return {
    name: 'Metrics',
    scale: 'raw',
    weigh(c) {
      const metrics = c.host.metrics;
      let sum = 0;
      for (const [name, ratio] of ratios) {
        const value = metrics?.[name];
        if (value === undefined) return unavailable;
        sum += ratio * value;
      }
      return sum;
    },
  };
}
