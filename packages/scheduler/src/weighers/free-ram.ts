import type { Weigher } from '../plugin.js';
import { freeResourceWeigher } from './free-resource.js';

/** Nova's RAMWeigher: free `memoryMiB`. A positive weight spreads, a negative one stacks. */
export function freeRamWeigher(): Weigher {
  return freeResourceWeigher('FreeRAM', 'memoryMiB');
}
