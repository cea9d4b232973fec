import { type CommandRunner, commandRunner, MemoryStore, NubesError } from '@nubes/core';
import { NetworkHost, type PortRecord, Vpc, VpcAgent } from '@nubes/netns';
import { describeWith } from '@nubes/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from './helpers.js';

// Everything host-global is named `nbv-<pid>-...`; each simulated host's agent owns `nbv-<pid>-hN-...`.
const owner = `nbv-${process.pid}`;
const underlay = `${owner}-u`;
const hosts = ['h1', 'h2', 'h3'] as const;
const hostNs = (h: string) => `${owner}-${h}`;
const vm = (h: string, name: string) => `${owner}-${h}-${name}`;

describeWith(['root', 'ip', 'nft'], 'VPC networking on the real kernel', () => {
  const net = new NetworkHost({ owner });
  const vpc = new Vpc({ store: new MemoryStore() });
  const agents = Object.fromEntries(
    hosts.map((h) => [h, new VpcAgent({ vpc, host: h, owner: `${owner}-${h}`, namespace: hostNs(h) })]),
  ) as Record<(typeof hosts)[number], VpcAgent>;
  const reconcile = (...which: (typeof hosts)[number][]) =>
    Promise.all((which.length ? which : hosts).map((h) => agents[h].reconcile()));

  const ok = async (ns: string, argv: string[], input?: string) =>
    (await net.exec(ns, argv, { okExitCodes: [0, 1, 124], timeoutMs: 10_000, ...(input ? { input } : {}) }))
      .exitCode === 0;
  const ping = (from: string, to: string) => ok(from, ['ping', '-c', '1', '-W', '1', to]);
  /** Serves `reply` on a TCP port for one test; stopped with the returned function. */
  const serve = (ns: string, port: number, reply: string) => {
    const child = net.spawn(ns, ['socat', `TCP-LISTEN:${port},reuseaddr,fork`, `SYSTEM:echo ${reply}`]);
    return () => child.kill();
  };
  /** The peer's address as a server sees it. */
  const servePeer = (ns: string, port: number) => {
    const child = net.spawn(ns, [
      'socat',
      `TCP-LISTEN:${port},reuseaddr,fork`,
      'SYSTEM:echo $SOCAT_PEERADDR',
    ]);
    return () => child.kill();
  };
  const fetch = async (from: string, ip: string, port: number) => {
    const r = await net.exec(
      from,
      ['timeout', '2', 'socat', '-T', '1', '-', `TCP:${ip}:${port},connect-timeout=1`],
      {
        okExitCodes: [0, 1, 124],
        input: '',
      },
    );
    return r.stdout.trim();
  };

  let a: { net: string; subnet: string; open: string; members: string };
  let b: { net: string; subnet: string; open: string };
  const ports: Record<string, PortRecord> = {};
  const ip = (name: string) => ports[name]?.fixedIps[0]?.ip as string;

  beforeAll(async () => {
    await net.gc();
    // The underlay: one bridge joining the simulated hosts, 192.168.77.0/24.
    await net.apply({
      namespaces: [underlay, ...hosts.map(hostNs)],
      links: [
        { kind: 'bridge', name: 'ubr', namespace: underlay },
        ...hosts.map((h, i) => ({
          kind: 'veth' as const,
          name: `u${i}`,
          namespace: underlay,
          master: 'ubr',
          peer: { name: 'eth0', namespace: hostNs(h) },
        })),
      ],
      addresses: hosts.map((h, i) => ({ namespace: hostNs(h), dev: 'eth0', cidr: `192.168.77.${i + 1}/24` })),
    });
    for (const [i, h] of hosts.entries())
      await vpc.registerHost({ name: h, underlayIp: `192.168.77.${i + 1}`, underlayDev: 'eth0' });

    const tenant = async (name: string) => {
      const network = await vpc.createNetwork({ tenant: name, name: 'private' });
      const subnet = await vpc.createSubnet({ tenant: name, networkId: network.id, cidr: '10.0.0.0/24' });
      const open = await vpc.createSecurityGroup({ tenant: name, name: 'open' });
      await vpc.addRule(open.id, { direction: 'ingress', ethertype: 'IPv4' });
      return { net: network.id, subnet: subnet.id, open: open.id };
    };
    const ta = await tenant('tenant-a');
    const members = await vpc.createSecurityGroup({ tenant: 'tenant-a', name: 'members' });
    a = { ...ta, members: members.id };
    b = await tenant('tenant-b');
    const port = async (
      name: string,
      host: string,
      tenant: string,
      networkId: string,
      groups: string[],
      fixed?: { subnetId: string; ip: string },
    ) => {
      ports[name] = await vpc.createPort({
        tenant,
        networkId,
        host,
        device: { kind: 'veth', namespace: vm(host, name) },
        securityGroups: groups,
        ...(fixed ? { fixedIps: [fixed] } : {}),
      });
    };
    await port('a1', 'h1', 'tenant-a', a.net, [a.open, a.members]);
    await port('a2', 'h1', 'tenant-a', a.net, [a.open]);
    await port('b1', 'h1', 'tenant-b', b.net, [b.open]);
    await port('b2', 'h1', 'tenant-b', b.net, [b.open]);
    await port('b3', 'h1', 'tenant-b', b.net, [b.open], { subnetId: b.subnet, ip: '10.0.0.50' });
    await port('a3', 'h2', 'tenant-a', a.net, [a.open], { subnetId: a.subnet, ip: '10.0.0.40' });
    await reconcile();
  });

  afterAll(async () => {
    for (const h of hosts) await agents[h].teardown().catch(() => undefined);
    await net.gc();
    const left = (await net.listNamespaces()).filter((n) => n.startsWith(`${owner}-`));
    expect(left).toEqual([]);
  });

  it('gives two tenants the same 10.0.0.0/24: each reaches its own instances only, even at equal addresses', async () => {
    expect([ip('a1'), ip('a2'), ip('b1'), ip('b2'), ip('b3')]).toEqual([
      '10.0.0.2',
      '10.0.0.3',
      '10.0.0.2',
      '10.0.0.3',
      '10.0.0.50',
    ]);
    expect(await ping(vm('h1', 'a1'), '10.0.0.3')).toBe(true);
    expect(await ping(vm('h1', 'b1'), '10.0.0.3')).toBe(true);
    const stops = [serve(vm('h1', 'a2'), 7000, 'tenant-a'), serve(vm('h1', 'b2'), 7000, 'tenant-b')];
    try {
      await sleep(300);
      expect(await fetch(vm('h1', 'a1'), '10.0.0.3', 7000)).toBe('tenant-a');
      expect(await fetch(vm('h1', 'b1'), '10.0.0.3', 7000)).toBe('tenant-b');
    } finally {
      for (const stop of stops) stop();
    }
    // 10.0.0.50 exists only in tenant B.
    expect(await ping(vm('h1', 'a1'), '10.0.0.50')).toBe(false);
    expect(await ping(vm('h1', 'b1'), '10.0.0.50')).toBe(true);
  });

  it('carries a tenant network across simulated hosts over VXLAN; a host not on it sees none of the traffic', async () => {
    // Count VXLAN datagrams reaching the third host's underlay interface.
    await net.exec(hostNs('h3'), ['nft', '-f', '-'], {
      input: `table inet ${owner}-probe {\n chain c {\n type filter hook prerouting priority -400; policy accept;\n udp dport 4789 counter\n }\n}\n`,
    });
    expect(await ping(vm('h1', 'a1'), ip('a3'))).toBe(true);
    const stop = serve(vm('h2', 'a3'), 7001, 'over-vxlan');
    try {
      await sleep(300);
      expect(await fetch(vm('h1', 'a2'), ip('a3'), 7001)).toBe('over-vxlan');
    } finally {
      stop();
    }
    const counters = await net.exec(hostNs('h3'), ['nft', 'list', 'table', 'inet', `${owner}-probe`]);
    expect(counters.stdout).toMatch(/counter packets 0 bytes 0/);
    // Tenant B has no port on h2: its VNI never reaches h2 either.
    const vniB = (await vpc.getNetwork(b.net)).vni;
    expect((await net.links(hostNs('h2'))).map((l) => l.name)).not.toContain(`nvx${vniB}`);
    expect(await ping(vm('h1', 'b1'), ip('a3'))).toBe(false);
  });

  it('enforces security groups: only tcp 22, ICMP once allowed, a remote group, anti-spoofing', async () => {
    const ssh = await vpc.createSecurityGroup({ tenant: 'tenant-a', name: 'ssh' });
    await vpc.addRule(ssh.id, {
      direction: 'ingress',
      protocol: 'tcp',
      portRangeMin: 22,
      portRangeMax: 22,
      remoteIpPrefix: '0.0.0.0/0',
    });
    const web = await vpc.createSecurityGroup({ tenant: 'tenant-a', name: 'web', defaultEgress: false });
    await vpc.addRule(web.id, {
      direction: 'ingress',
      protocol: 'tcp',
      portRangeMin: 80,
      portRangeMax: 80,
      remoteGroupId: a.members,
    });
    ports.a4 = await vpc.createPort({
      tenant: 'tenant-a',
      networkId: a.net,
      host: 'h1',
      device: { kind: 'veth', namespace: vm('h1', 'a4') },
      securityGroups: [ssh.id],
    });
    await reconcile('h1', 'h2');
    const server = vm('h1', 'a4');
    const stops = [serve(server, 22, 'ssh'), serve(server, 80, 'web')];
    try {
      await sleep(300);
      expect(await fetch(vm('h1', 'a1'), ip('a4'), 22)).toBe('ssh');
      expect(await fetch(vm('h1', 'a1'), ip('a4'), 80)).toBe('');
      expect(await ping(vm('h1', 'a1'), ip('a4'))).toBe(false);

      const icmp = await vpc.addRule(ssh.id, { direction: 'ingress', protocol: 'icmp' });
      expect((await agents.h1.reconcile()).filterReplaced).toBe(true);
      expect(await ping(vm('h1', 'a1'), ip('a4'))).toBe(true);
      // Conntrack keeps the answer flowing although egress is closed on a port with only "web".
      await vpc.setPortSecurityGroups(ports.a4.id, [ssh.id, web.id]);
      await reconcile('h1');
      expect(await fetch(vm('h1', 'a1'), ip('a4'), 80)).toBe('web'); // a1 is in "members"
      expect(await fetch(vm('h1', 'a2'), ip('a4'), 80)).toBe(''); // a2 is not
      expect(await fetch(vm('h2', 'a3'), ip('a4'), 80)).toBe(''); // nor a3, across the overlay
      expect(await fetch(vm('h2', 'a3'), ip('a4'), 22)).toBe('ssh');
      await vpc.removeRule(ssh.id, icmp.id);
    } finally {
      for (const stop of stops) stop();
    }

    // Anti-spoofing: a datagram from a forged source never arrives; one from the real address does.
    const sendFrom = async (source: string) => {
      const receiver = net.exec(vm('h1', 'a2'), ['timeout', '2', 'socat', '-u', 'UDP-RECV:5000', '-'], {
        okExitCodes: [0, 124],
      });
      await sleep(300);
      await net.exec(vm('h1', 'a1'), ['socat', '-u', '-', `UDP-SENDTO:${ip('a2')}:5000,bind=${source}`], {
        input: `from ${source}\n`,
      });
      return (await receiver).stdout.trim();
    };
    await net.addAddress({ namespace: vm('h1', 'a1'), dev: 'eth0', cidr: '10.0.0.99/24' });
    expect(await sendFrom(ip('a1'))).toBe(`from ${ip('a1')}`);
    expect(await sendFrom('10.0.0.99')).toBe('');
    await net.removeAddress({ namespace: vm('h1', 'a1'), dev: 'eth0', cidr: '10.0.0.99/24' });
  });

  it('routes to the provider network with SNAT; a floating IP admits traffic in (DNAT) until disassociated', async () => {
    const ext = await vpc.createNetwork({ tenant: 'admin', name: 'provider', external: true });
    const extSubnet = await vpc.createSubnet({ tenant: 'admin', networkId: ext.id, cidr: '203.0.113.0/24' });
    const outside = await vpc.createPort({
      tenant: 'admin',
      networkId: ext.id,
      host: 'h2',
      device: { kind: 'veth', namespace: vm('h2', 'out') },
      portSecurity: false,
    });
    const router = await vpc.createRouter({ tenant: 'tenant-a', name: 'r1', host: 'h1' });
    await vpc.addRouterInterface(router.id, a.subnet);
    const gateway = await vpc.setRouterGateway(router.id, ext.id);
    await reconcile();
    const outsideIp = outside.fixedIps[0]?.ip as string;
    expect(extSubnet.gateway).toBe('203.0.113.1');

    const stopPeer = servePeer(vm('h2', 'out'), 8000);
    try {
      await sleep(300);
      expect(await fetch(vm('h1', 'a1'), outsideIp, 8000)).toBe(gateway.fixedIps[0]?.ip);
    } finally {
      stopPeer();
    }

    const fip = await vpc.createFloatingIp({ tenant: 'tenant-a', networkId: ext.id });
    await vpc.associateFloatingIp(fip.id, ports.a1?.id as string);
    await reconcile();
    const stop = serve(vm('h1', 'a1'), 8080, 'behind-fip');
    try {
      await sleep(300);
      expect(await fetch(vm('h2', 'out'), fip.ip, 8080)).toBe('behind-fip');
      await vpc.disassociateFloatingIp(fip.id);
      await reconcile();
      expect(await fetch(vm('h2', 'out'), fip.ip, 8080)).toBe('');
    } finally {
      stop();
    }
  });

  it('converges after an agent dies mid-reconcile, and deleting everything leaves nothing behind', async () => {
    for (const name of ['c1', 'c2', 'c3']) {
      ports[name] = await vpc.createPort({
        tenant: 'tenant-b',
        networkId: b.net,
        host: 'h3',
        device: { kind: 'veth', namespace: vm('h3', name) },
        securityGroups: [b.open],
      });
    }
    // A runner that dies after a few commands stands in for `kill -9` between two kernel changes.
    for (const budget of [4, 9, 14]) {
      let left = budget;
      const dying: CommandRunner = {
        run: (program, args, options) => {
          if (left-- <= 0) return Promise.reject(new NubesError('Unavailable', 'agent killed'));
          return commandRunner.run(program, args, options);
        },
        json: (program, args, options) => commandRunner.json(program, args, options),
      };
      const doomed = new VpcAgent({
        vpc,
        host: 'h3',
        owner: `${owner}-h3`,
        namespace: hostNs('h3'),
        runner: dying,
      });
      await expect(doomed.reconcile()).rejects.toThrow();
    }
    await reconcile('h3', 'h1');
    const again = await agents.h3.reconcile();
    expect(again).toMatchObject({ wiredPorts: [], fdbChanges: 0, neighborChanges: 0, filterReplaced: false });
    expect(await ping(vm('h3', 'c1'), ip('b1'))).toBe(true);
    expect(await ping(vm('h3', 'c2'), ip('c3'))).toBe(true);

    // Delete everything from the Store; the agents remove it from the kernel.
    const snap = await vpc.snapshot();
    for (const f of snap.floatingIps) await vpc.deleteFloatingIp(f.id);
    for (const r of snap.routers) {
      for (const portId of r.interfaces) {
        const port = snap.ports.find((p) => p.id === portId);
        await vpc.removeRouterInterface(r.id, port?.fixedIps[0]?.subnetId as string);
      }
      await vpc.deleteRouter(r.id);
    }
    for (const p of snap.ports.filter((x) => x.owner.kind === 'instance')) await vpc.deletePort(p.id);
    await reconcile();
    for (const h of hosts) {
      const mine = (await net.listNamespaces()).filter((n) => n.startsWith(`${owner}-${h}-`));
      expect(mine).toEqual([]);
      const links = (await net.links(hostNs(h))).filter((l) => l.owner === `${owner}-${h}`);
      expect(links).toEqual([]);
      const tables = await net.exec(hostNs(h), ['nft', 'list', 'tables']);
      expect(tables.stdout).not.toMatch(/nubes-/);
    }
  });
});

describe('VPC agent input', () => {
  it('refuses a bad owner or host name before touching anything', () => {
    const vpc = new Vpc({ store: new MemoryStore() });
    expect(() => new VpcAgent({ vpc, host: 'bad host', owner: 'x' })).toThrow(/options.host/);
    expect(() => new VpcAgent({ vpc, host: 'h', owner: 'Bad_Owner' })).toThrow(/options.owner/);
  });
});
