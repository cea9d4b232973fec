import { type Filter, type Rejection, reject } from '../plugin.js';

const disabled: Rejection = reject('host is disabled');
const down: Rejection = reject('host is down');

/** Removes hosts that are `disabled` by an operator or `down` (Nova's ComputeFilter, kube's NodeUnschedulable). */
export function hostStateFilter(): Filter {
  return {
    name: 'HostState',
    filter: (c) => (c.host.state === 'enabled' ? true : c.host.state === 'down' ? down : disabled),
  };
}
