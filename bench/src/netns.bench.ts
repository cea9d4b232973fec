import { mkdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';
import { Cgroups, NetworkHost, renderV1, renderV2, resourceSpecSchema, Sandboxes } from '@nubes/netns';
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
  name: 'Namespace pairs (2 netns + veth + addresses), cgroups and sandboxes created and deleted per second',
  async setup() {
    if (process.getuid?.() !== 0) {
      console.warn('[bench] netns: not root, skipping');
      return { groups: [] };
    }
    const batched = new NetworkHost({ owner });
    const unbatched = new NetworkHost({ owner, batch: false });
    const cgroups = new Cgroups({ owner });
    const sandboxes = new Sandboxes({ owner });
    const layout = await cgroups.layout();
    const cgroupSpec = {
      cpu: { quotaUs: 50_000, weight: 100 },
      memory: { max: '256m' },
      pids: { max: 100 },
    };
    // The reference writes exactly the files Cgroups writes, in the same directories, with plain
    // mkdir/writeFile/rmdir: what a hand-written script would do (minus cpuset inheritance and checks).
    const writes =
      layout.version === 2
        ? renderV2(resourceSpecSchema.parse(cgroupSpec))
        : renderV1(resourceSpecSchema.parse(cgroupSpec));
    const rawCgroup = async (name: string) => {
      const dirs = (await cgroups.paths(name)).map((p) => p.path);
      const dirOf = (controller: string | undefined) =>
        layout.version === 2
          ? (dirs[0] as string)
          : join(layout.controllers[controller as 'cpu'] as string, cgroups.parent, name);
      for (const dir of dirs) await mkdir(dir, { recursive: true });
      for (const w of writes) await writeFile(join(dirOf(w.controller), w.file), w.value);
      for (const dir of dirs) await rmdir(dir);
    };
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
            name: 'raw mkdir + write + rmdir of the same files',
            reference: true,
            fn: () => rawCgroup(`${owner}-cg${i++}`),
          },
          {
            name: 'Cgroups.create + delete',
            fn: async () => {
              const name = `${owner}-cg${i++}`;
              await cgroups.create(name, cgroupSpec);
              await cgroups.delete(name);
            },
          },
        ],
      },
      {
        name: 'sandbox (PID, mount, UTS, IPC, net namespaces) running /bin/true, start to exit',
        cases: [
          {
            name: 'raw unshare --mount-proc, no cgroup',
            reference: true,
            fn: () =>
              runCommand('unshare', [
                '--pid',
                '--fork',
                '--kill-child',
                '--mount',
                '--uts',
                '--ipc',
                '--net',
                '--mount-proc',
                '/bin/true',
              ]),
          },
          {
            name: 'Sandboxes.start, wait for exit (with cgroup, hostname, lo up)',
            fn: async () => {
              const box = await sandboxes.start({ name: `${owner}-sb${i++}`, argv: ['/bin/true'] });
              await box.exited;
            },
          },
          {
            name: 'Sandboxes.start + stop of a sleeping sandbox (SIGKILL)',
            fn: async () => {
              const box = await sandboxes.start({ name: `${owner}-sb${i++}`, argv: ['/bin/sleep', '60'] });
              await box.stop({ graceMs: 0 });
            },
          },
        ],
      },
    ];
    return {
      groups,
      teardown: async () => {
        await batched.gc();
        await sandboxes.gc();
        await cgroups.gc();
      },
    };
  },
});
