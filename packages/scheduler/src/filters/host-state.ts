import { type HostColumns, HostStateCode } from '../columns.js';
import { KEEP_ALL, withFilterKernel } from '../kernel.js';
import { type Filter, type Rejection, reject } from '../plugin.js';

const disabled: Rejection = reject('host is disabled');
const down: Rejection = reject('host is down');

/** Key of the enabled / not enabled split in {@link HostColumns.derive}. */
const ENABLED = {};

/**
 * Indices of the enabled hosts and of the others, in order. A list of `columns.size` hosts that starts at
 * 0 and ends at n - 1 can only be all hosts in order (passes keep order), so this is that list filtered.
 */
function splitByState(state: Uint8Array): { enabled: Int32Array; others: Int32Array } {
  const enabled: number[] = [];
  const others: number[] = [];
  for (let i = 0; i < state.length; i++) (state[i] === HostStateCode.enabled ? enabled : others).push(i);
  return { enabled: Int32Array.from(enabled), others: Int32Array.from(others) };
}

/** Removes hosts that are `disabled` by an operator or `down` (Nova's ComputeFilter, kube's NodeUnschedulable). */
export function hostStateFilter(): Filter {
  return withFilterKernel(
    {
      name: 'HostState',
      filter: (c) => (c.host.state === 'enabled' ? true : c.host.state === 'down' ? down : disabled),
    },
    ({ columns }, rejections) => {
      if (columns.allEnabled) return KEEP_ALL;
      const state = columns.state;
      const disabledCode = rejections.push(disabled);
      const downCode = rejections.push(down);
      return {
        run(hosts, m, codes) {
          // Every host in order (no sampling, first filter): the outcome is the snapshot's, computed once.
          if (m === columns.size && hosts[0] === 0 && hosts[m - 1] === m - 1) {
            const { enabled, others } = columns.derive(ENABLED, () => splitByState(state));
            for (let j = 0; j < others.length; j++) {
              const i = others[j] as number;
              codes[i] = state[i] === HostStateCode.down ? downCode : disabledCode;
            }
            hosts.set(enabled);
            return enabled.length;
          }
          return keepEnabled(hosts, m, codes, state, downCode, disabledCode);
        },
      };
    },
  );
}

/** The state check as a plain function: its arguments stay in registers, a closure's context would not. */
function keepEnabled(
  hosts: Int32Array,
  m: number,
  codes: Int32Array,
  state: Uint8Array,
  downCode: number,
  disabledCode: number,
): number {
  let kept = 0;
  for (let k = 0; k < m; k++) {
    const i = hosts[k] as number;
    const s = state[i] as number;
    if (s === HostStateCode.enabled) hosts[kept++] = i;
    else codes[i] = s === HostStateCode.down ? downCode : disabledCode;
  }
  return kept;
}
