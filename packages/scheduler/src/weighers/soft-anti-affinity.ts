import { groupMembersOn } from '../filters/server-group.js';
import type { Weigher } from '../plugin.js';

/** Nova's ServerGroupSoftAntiAffinityWeigher: minus the members of the `soft-anti-affinity` group on the host (raw). */
export function softAntiAffinityWeigher(): Weigher {
  return {
    name: 'SoftAntiAffinity',
    scale: 'raw',
    appliesTo: (r) => r.hints.serverGroup?.policy === 'soft-anti-affinity',
    weigh: (c, r) => (r.hints.serverGroup ? -groupMembersOn(c, r.hints.serverGroup.id) : 0),
  };
}
