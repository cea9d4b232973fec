import type { Weigher } from '../plugin.js';
import { freeResourceWeigher } from './free-resource.js';

/** Nova's CPUWeigher: free `vcpus` (overcommit included). A positive weight spreads, a negative one stacks. */
export function freeVcpuWeigher(): Weigher {
  return freeResourceWeigher('FreeVCPU', 'vcpus');
}
