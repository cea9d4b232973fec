import type { Weigher } from '../plugin.js';
import { freeResourceWeigher } from './free-resource.js';

/** Nova's DiskWeigher: free `diskGiB`. A positive weight spreads, a negative one stacks. */
export function freeDiskWeigher(): Weigher {
  return freeResourceWeigher('FreeDisk', 'diskGiB');
}
