import { runCommand } from '@nubes/core';
import { Cgroups, NetworkHost } from '@nubes/netns';
import { type BenchGroup, defineBenchmarks } from './harness.js';

// Everything here is named with this prefix and removed by gc() in teardown, even after a failure.
const owner = `nbb-${process.pid}`;

/** Two namespaces joined by a veth with an address on each end: the unit a tenant network is built of. */
function pairTopology(i: number) {
  const a = `${owner}-a${i}`;
  const b = `${owner}-b${i}`;
  return {
    a,
    b,
    topology: {
      namespaces: [a, b],
      links: [{ kind: 'veth' as const, name: 'va', namespace: a, peer: { name: 'vb', namespace: b } }],
      addresses: [
        { namespace: a, dev: 'va', cidr: '10.200.0.1/24' },
        { namespace: b, dev: 'vb', cidr: '10.200.0.2/24' },
      ],
    },
  };
}

export default defineBenchmarks({
  name: 'Namespace pairs (2 netns + veth + addresses) and cgroups created and deleted per second',
  async setup() {
    if (process.getuid?.() !== 0) {
      console.warn('[bench] netns: not root, skipping');
      return { groups: [] };
    }
    const batched = new NetworkHost({ owner });
    const unbatched = new NetworkHost({ owner, batch: false });
    const cgroups = new Cgroups({ owner });
    let i = 0;

    const rawIp = (args: string[]) => runCommand('ip', args);
    const groups: BenchGroup[] = [
      {
        name: 'netns pair + veth + address, create and delete',
        cases: [
          {
            name: 'raw ip, one call per step',
            reference: true,
            fn: async () => {
              const { a, b } = pairTopology(i++);
              await rawIp(['netns', 'add', a]);
              await rawIp(['netns', 'add', b]);
              await rawIp([
                'link',
                'add',
                'name',
                'va',
                'netns',
                a,
                'type',
                'veth',
                'peer',
                'name',
                'vb',
                'netns',
                b,
              ]);
              await rawIp(['-n', a, 'link', 'set', 'dev', 'lo', 'up']);
              await rawIp(['-n', b, 'link', 'set', 'dev', 'lo', 'up']);
              await rawIp(['-n', a, 'address', 'add', '10.200.0.1/24', 'dev', 'va']);
              await rawIp(['-n', b, 'address', 'add', '10.200.0.2/24', 'dev', 'vb']);
              await rawIp(['-n', a, 'link', 'set', 'dev', 'va', 'up']);
              await rawIp(['-n', b, 'link', 'set', 'dev', 'vb', 'up']);
              await rawIp(['netns', 'del', a]);
              await rawIp(['netns', 'del', b]);
            },
          },
          {
            name: 'NetworkHost.apply, one ip call per line',
            fn: async () => {
              const { a, b, topology } = pairTopology(i++);
              await unbatched.apply(topology);
              await unbatched.deleteNamespace(a);
              await unbatched.deleteNamespace(b);
            },
          },
          {
            name: 'NetworkHost.apply, ip -batch',
            fn: async () => {
              const { a, b, topology } = pairTopology(i++);
              await batched.apply(topology);
              await batched.deleteNamespaces([a, b]);
            },
          },
        ],
      },
      {
        name: 'cgroup create + configure (cpu, memory, pids) + delete',
        cases: [
          {
            name: 'Cgroups.create + delete',
            fn: async () => {
              const name = `${owner}-cg${i++}`;
              await cgroups.create(name, {
                cpu: { quotaUs: 50_000, weight: 100 },
                memory: { max: '256m' },
                pids: { max: 100 },
              });
              await cgroups.delete(name);
            },
          },
        ],
      },
    ];
    return {
      groups,
      teardown: async () => {
        await batched.gc();
        await cgroups.gc();
      },
    };
  },
});
