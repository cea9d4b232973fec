import { withFilterKernel } from '../kernel.js';
import { type Filter, reject } from '../plugin.js';

/** Keeps only the host named by the `hostName` hint (kube's NodeName). */
export function hostNameFilter(): Filter {
  return withFilterKernel(
    {
      name: 'HostName',
      appliesTo: (r) => r.hints.hostName !== undefined,
      filter: (c, r) =>
        c.host.name === r.hints.hostName ? true : reject('did not match the requested host name'),
    },
    ({ columns, request }, rejections) => {
      const names = columns.names;
      const wanted = request.hints.hostName;
      // One shared rejection: the plugin's has no detail, so its reasons are all explanations need.
      const other = rejections.push(reject('did not match the requested host name'));
      return {
        run(hosts, m, codes) {
          let kept = 0;
          for (let k = 0; k < m; k++) {
            const i = hosts[k] as number;
            if (names[i] === wanted) hosts[kept++] = i;
            else codes[i] = other;
          }
          return kept;
        },
      };
    },
  );
}
