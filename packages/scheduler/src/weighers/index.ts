import type { WeigherEntry } from '../plugin.js';
import { balancedAllocationWeigher } from './balanced-allocation.js';
import { freeDiskWeigher } from './free-disk.js';
import { freeRamWeigher } from './free-ram.js';
import { freeVcpuWeigher } from './free-vcpu.js';
import { leastAllocatedWeigher } from './least-allocated.js';
import { softAffinityWeigher } from './soft-affinity.js';
import { softAntiAffinityWeigher } from './soft-anti-affinity.js';

export { DEFAULT_RESOURCE_WEIGHTS, type ResourceWeights } from './allocation.js';
export { balancedAllocationWeigher } from './balanced-allocation.js';
export { freeDiskWeigher } from './free-disk.js';
export { freeRamWeigher } from './free-ram.js';
export { freeResourceWeigher } from './free-resource.js';
export { freeVcpuWeigher } from './free-vcpu.js';
export { leastAllocatedWeigher } from './least-allocated.js';
export { type MetricsWeigherOptions, metricsWeigher } from './metrics.js';
export { mostAllocatedWeigher } from './most-allocated.js';
export { softAffinityWeigher } from './soft-affinity.js';
export { softAntiAffinityWeigher } from './soft-anti-affinity.js';

/** How weights are put on one scale before they are summed. See the README for both formulas. */
export type Normalization = 'kubernetes' | 'nova';

/**
 * The default weighers of each normalization: Kubernetes' default profile (least-allocated and balanced
 * allocation, weight 1 each) or Nova's (free RAM, vCPU and disk, multiplier 1 each), plus the soft
 * server-group weighers, which only act on requests that ask for them.
 */
export function defaultWeighers(normalization: Normalization = 'kubernetes'): WeigherEntry[] {
  const base =
    normalization === 'kubernetes'
      ? [leastAllocatedWeigher(), balancedAllocationWeigher()]
      : [freeRamWeigher(), freeVcpuWeigher(), freeDiskWeigher()];
  // Soft policies must dominate resource scores: asking for soft affinity is a stronger wish than spreading.
  const groupWeight = normalization === 'kubernetes' ? 2 : 10;
  return [
    ...base.map((weigher) => ({ weigher, weight: 1 })),
    { weigher: softAffinityWeigher(), weight: groupWeight },
    { weigher: softAntiAffinityWeigher(), weight: groupWeight },
  ];
}
