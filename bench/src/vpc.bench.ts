import type { ChildProcess } from 'node:child_process';
import { MemoryStore, runCommand } from '@nubes/core';
import { NetworkHost, type PortRecord, Vpc, VpcAgent } from '@nubes/netns';
import { type BenchGroup, defineBenchmarks } from './harness.js';

// Everything is named `nbb-<pid>-v...` and removed in teardown (gc), even after a failure.
const owner = `nbb-${process.pid}-v`;
const hostNs = (h: string) => `${owner}-${h}`;
const TCP_BYTES = 256 * 1024 * 1024;

export default defineBenchmarks({
  name: 'VPC: ports wired per second, no-op reconcile of 200 ports, TCP throughput (256 MiB per run)',
  async setup() {
    if (process.getuid?.() !== 0) {
      console.warn('[bench] vpc: not root, skipping');
      return { groups: [] };
    }
    const net = new NetworkHost({ owner });
    await net.gc();
    const servers: ChildProcess[] = [];
    const teardown = async () => {
      for (const s of servers) s.kill();
      await net.gc();
    };
    try {
      await net.apply({
        namespaces: [hostNs('u'), hostNs('h1'), hostNs('h2'), hostNs('h3'), `${owner}-va`, `${owner}-vb`],
        links: [
          { kind: 'bridge', name: 'ubr', namespace: hostNs('u') },
          ...['h1', 'h2', 'h3'].map((h, i) => ({
            kind: 'veth' as const,
            name: `u${i}`,
            namespace: hostNs('u'),
            master: 'ubr',
            peer: { name: 'eth0', namespace: hostNs(h) },
          })),
          // The reference for throughput: a plain veth pair, nothing in between.
          {
            kind: 'veth',
            name: 'eth0',
            namespace: `${owner}-va`,
            peer: { name: 'eth0', namespace: `${owner}-vb` },
          },
        ],
        addresses: [
          ...['h1', 'h2', 'h3'].map((h, i) => ({
            namespace: hostNs(h),
            dev: 'eth0',
            cidr: `192.168.78.${i + 1}/24`,
          })),
          { namespace: `${owner}-va`, dev: 'eth0', cidr: '10.99.0.1/24' },
          { namespace: `${owner}-vb`, dev: 'eth0', cidr: '10.99.0.2/24' },
        ],
      });
      const vpc = new Vpc({ store: new MemoryStore() });
      const agent = (h: string) =>
        new VpcAgent({ vpc, host: h, owner: `${owner}-${h}`, namespace: hostNs(h) });
      const [h1, h2, h3] = [agent('h1'), agent('h2'), agent('h3')];
      for (const [i, h] of ['h1', 'h2', 'h3'].entries())
        await vpc.registerHost({ name: h, underlayIp: `192.168.78.${i + 1}`, underlayDev: 'eth0' });
      const network = await vpc.createNetwork({ tenant: 't' });
      await vpc.createSubnet({ tenant: 't', networkId: network.id, cidr: '10.0.0.0/16' });
      const open = await vpc.createSecurityGroup({ tenant: 't' });
      await vpc.addRule(open.id, { direction: 'ingress' });
      const port = (host: string, name: string) =>
        vpc.createPort({
          tenant: 't',
          networkId: network.id,
          host,
          device: { kind: 'veth', namespace: `${owner}-${host}-${name}` },
          securityGroups: [open.id],
        });

      // Throughput endpoints: two instances on h1, one on h2.
      await port('h1', 'i1');
      const [i2, i3] = [await port('h1', 'i2'), await port('h2', 'i3')];
      await h1.reconcile();
      await h2.reconcile();
      const ipOf = (p: PortRecord) => p.fixedIps[0]?.ip as string;
      for (const ns of [`${owner}-vb`, `${owner}-h1-i2`, `${owner}-h2-i3`])
        servers.push(net.spawn(ns, ['iperf3', '-s']));
      await new Promise((r) => setTimeout(r, 500));
      // The server takes a moment to accept the next test after one ends: retry while it says busy.
      const iperf = async (from: string, to: string) => {
        for (let attempt = 0; ; attempt++) {
          try {
            return await net.exec(from, ['iperf3', '-c', to, '-n', String(TCP_BYTES)]);
          } catch (error) {
            if (
              attempt > 20 ||
              !/busy/.test(String((error as { details?: { stderr?: string } }).details?.stderr))
            )
              throw error;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
      };

      // 200 ports on h3 for the no-op reconcile.
      for (let i = 0; i < 200; i++) await port('h3', `n${i}`);
      await h3.reconcile();

      let n = 0;
      const groups: BenchGroup[] = [
        {
          name: 'port created and wired (netns + veth + address + security group)',
          iterations: 15,
          timeMs: 1000,
          cases: [
            {
              name: 'raw ip + nft, one call per step',
              reference: true,
              fn: async () => {
                const ns = `${owner}-raw${n++}`;
                const dev = `tr${n}`;
                await runCommand('ip', ['netns', 'add', ns]);
                await runCommand('ip', [
                  '-n',
                  hostNs('h1'),
                  'link',
                  'add',
                  dev,
                  'type',
                  'veth',
                  'peer',
                  'name',
                  'eth0',
                  'netns',
                  ns,
                ]);
                await runCommand('ip', ['-n', ns, 'address', 'add', '10.98.0.2/24', 'dev', 'eth0']);
                await runCommand('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
                await runCommand('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
                await runCommand('ip', [
                  '-n',
                  hostNs('h1'),
                  'link',
                  'set',
                  dev,
                  'master',
                  `nbr${network.vni}`,
                  'up',
                ]);
                await runCommand('ip', ['netns', 'exec', hostNs('h1'), 'nft', '-f', '-'], {
                  input: `table inet ${owner}-raw {\n chain c {\n type filter hook forward priority 0; policy accept;\n iifname "${dev}" tcp dport 22 accept\n }\n}\n`,
                });
              },
            },
            {
              name: 'Vpc.createPort + VpcAgent.reconcile, one port per reconcile',
              fn: async () => {
                await port('h1', `w${n++}`);
                await h1.reconcile();
              },
            },
            {
              name: 'Vpc.createPort x10 + one VpcAgent.reconcile',
              opsPerRun: 10,
              fn: async () => {
                for (let k = 0; k < 10; k++) await port('h1', `w${n++}`);
                await h1.reconcile();
              },
            },
          ],
        },
        {
          name: 'reconcile of a host with 200 ports and nothing to change',
          iterations: 10,
          timeMs: 2000,
          cases: [
            {
              name: 'one ip -json link show of the host namespace',
              reference: true,
              fn: () => runCommand('ip', ['-n', hostNs('h3'), '-json', '-details', 'link', 'show']),
            },
            { name: 'VpcAgent.reconcile, 200 ports', fn: () => h3.reconcile() },
          ],
        },
        {
          name: 'TCP throughput, 256 MiB per run (iperf3)',
          iterations: 5,
          timeMs: 1000,
          noWarmup: true,
          cases: [
            { name: 'plain veth pair', reference: true, fn: () => iperf(`${owner}-va`, '10.99.0.2') },
            {
              name: 'instance to instance, one host (bridge + security groups)',
              fn: () => iperf(`${owner}-h1-i1`, ipOf(i2)),
            },
            {
              name: 'instance to instance across the VXLAN overlay',
              fn: () => iperf(`${owner}-h1-i1`, ipOf(i3)),
            },
          ],
        },
      ];
      return {
        groups,
        teardown: async () => {
          await Promise.all([h1.teardown(), h2.teardown(), h3.teardown()]).catch(() => undefined);
          await teardown();
        },
      };
    } catch (error) {
      await teardown();
      throw error;
    }
  },
});
