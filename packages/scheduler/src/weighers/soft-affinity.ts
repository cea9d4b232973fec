import { groupMembersOn } from '../filters/server-group.js';
import type { Weigher } from '../plugin.js';

/** Nova's ServerGroupSoftAffinityWeigher: members of the `soft-affinity` group already on the host (raw). */
export function softAffinityWeigher(): Weigher {
  return {
    name: 'SoftAffinity',
    scale: 'raw',
    appliesTo: (r) => r.hints.serverGroup?.policy === 'soft-affinity',
    weigh: (c, r) => (r.hints.serverGroup ? groupMembersOn(c, r.hints.serverGroup.id) : 0),
  };
}
