import type { Candidate } from '../candidate.js';
import { type Filter, reject } from '../plugin.js';

/** Members of the group on this candidate. */
export function groupMembersOn(candidate: Candidate, groupId: string): number {
  let n = 0;
  for (const instance of candidate.instances) if (instance.groups.includes(groupId)) n++;
  return n;
}

/**
 * Hard server-group policies (Nova's ServerGroupAffinityFilter and ServerGroupAntiAffinityFilter):
 * `affinity` keeps only hosts that already run a member (any host while the group is empty);
 * `anti-affinity` removes hosts that already run `maxPerHost` members (default 1).
 */
export function serverGroupFilter(): Filter {
  return {
    name: 'ServerGroup',
    appliesTo: (r) =>
      r.hints.serverGroup?.policy === 'affinity' || r.hints.serverGroup?.policy === 'anti-affinity',
    filter(c, r, cycle) {
      const group = r.hints.serverGroup;
      if (!group) return true;
      if (group.policy === 'affinity') {
        const hosts = cycle.groupHosts(group.id);
        return hosts.size === 0 || hosts.has(c.host.id) ? true : reject('violates server group affinity');
      }
      const max = group.maxPerHost ?? 1;
      const members = groupMembersOn(c, group.id);
      return members < max
        ? true
        : reject(
            'violates server group anti-affinity',
            `runs ${members} member(s) of ${group.id}, at most ${max} allowed`,
          );
    },
  };
}
