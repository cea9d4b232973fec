import { type Filter, reject } from '../plugin.js';

/** Keeps only the host named by the `hostName` hint (kube's NodeName). */
export function hostNameFilter(): Filter {
  return {
    name: 'HostName',
    appliesTo: (r) => r.hints.hostName !== undefined,
    filter: (c, r) =>
      c.host.name === r.hints.hostName ? true : reject('did not match the requested host name'),
  };
}
