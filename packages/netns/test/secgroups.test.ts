import { MemoryStore } from '@nubes/core';
import {
  diffHost,
  NetworkHost,
  planHost,
  renderHostFilter,
  renderRule,
  type SecurityGroupRule,
  Vpc,
} from '@nubes/netns';
import { describeWith } from '@nubes/testing';
import { afterAll, describe, expect, it } from 'vitest';

const rule = (r: Partial<SecurityGroupRule>): SecurityGroupRule => ({
  id: 'r'.repeat(32),
  direction: 'ingress',
  ethertype: 'IPv4',
  ...r,
});
const gid = 'a'.repeat(32);

describe('security group rendering', () => {
  it('renders rules as nftables matches, in Neutron semantics', () => {
    expect(
      renderRule(
        rule({ protocol: 'tcp', portRangeMin: 22, portRangeMax: 22, remoteIpPrefix: '0.0.0.0/0' }),
        'accept',
      ),
    ).toBe('meta nfproto ipv4 meta l4proto 6 tcp dport 22 accept');
    expect(
      renderRule(
        rule({ protocol: 'udp', portRangeMin: 1000, portRangeMax: 2000, remoteIpPrefix: '10.0.0.0/8' }),
        'accept',
      ),
    ).toBe('meta nfproto ipv4 ip saddr 10.0.0.0/8 meta l4proto 17 udp dport 1000-2000 accept');
    expect(
      renderRule(rule({ direction: 'egress', protocol: 'icmp', portRangeMin: 8, portRangeMax: 0 }), 'return'),
    ).toBe('meta nfproto ipv4 meta l4proto icmp icmp type 8 icmp code 0 return');
    expect(renderRule(rule({ remoteGroupId: gid }), 'accept')).toBe(
      `meta nfproto ipv4 ip saddr @rg_${gid.slice(0, 16)} accept`,
    );
    expect(renderRule(rule({ direction: 'egress', ethertype: 'IPv6' }), 'return')).toBe(
      'meta nfproto ipv6 return',
    );
  });

  const filter = {
    ports: [
      { id: 'p'.repeat(32), device: 'tpabc', mac: 'fa:16:3e:00:00:01', ips: ['10.0.0.2'], groups: [gid] },
    ],
    groups: {
      [gid]: {
        rules: [
          rule({ protocol: 'tcp', portRangeMin: 22 }),
          rule({ direction: 'egress' }),
          rule({ remoteGroupId: gid }),
        ],
      },
    },
    members: { [gid]: ['10.0.0.2', '10.0.0.3'] },
    zones: [{ bridge: 'nbr1000', zone: 1000 }],
  };

  it('names tables by a digest of their content and marks ports for the inet hooks under br_netfilter', () => {
    const r = renderHostFilter(filter, 'br_netfilter', 'nubes-x-sg');
    expect(r.tables.map((t) => t.family)).toEqual(['bridge', 'inet']);
    expect(r.tables[0]?.name).toMatch(/^nubes-x-sg-[0-9a-f]{12}$/);
    expect(renderHostFilter(filter, 'br_netfilter', 'nubes-x-sg').text).toBe(r.text);
    expect(r.text).toContain('ether type ip ip saddr != { 10.0.0.2 } drop');
    expect(r.text).toContain('meta mark set 0x1');
    expect(r.text).toContain('meta mark & 0xffff0000 vmap { 0x10000 : jump in_1 }');
    expect(r.text).toContain('ct zone set iifname map { "nbr1000" : 1000 }');
    expect(r.text).toContain('elements = { 10.0.0.2, 10.0.0.3 }');
    const bridged = renderHostFilter(filter, 'bridge', 'nubes-x-sg');
    expect(bridged.tables.map((t) => t.family)).toEqual(['bridge']);
    expect(bridged.text).toContain('oifname vmap { "tpabc" : jump in_1 }');
    expect(bridged.text).not.toContain('meta mark');
  });

  it('plans a host from a snapshot and finds nothing to do when the kernel already matches', async () => {
    const vpc = new Vpc({ store: new MemoryStore() });
    await vpc.registerHost({ name: 'h1', underlayIp: '192.0.2.1' });
    await vpc.registerHost({ name: 'h2', underlayIp: '192.0.2.2' });
    const network = await vpc.createNetwork({ tenant: 't' });
    await vpc.createSubnet({ tenant: 't', networkId: network.id, cidr: '10.0.0.0/24' });
    const local = await vpc.createPort({
      tenant: 't',
      networkId: network.id,
      host: 'h1',
      device: { kind: 'veth', namespace: 'o-vm1' },
    });
    const remote = await vpc.createPort({
      tenant: 't',
      networkId: network.id,
      host: 'h2',
      device: { kind: 'tap', name: 'tap0' },
    });
    const ctx = { host: 'h1', owner: 'o', mode: 'br_netfilter' as const };
    const desired = planHost(await vpc.snapshot(), ctx);
    expect(desired.bridges).toEqual([`nbr${network.vni}`]);
    expect(desired.fdb).toEqual([{ vxlan: `nvx${network.vni}`, mac: remote.mac, dst: '192.0.2.2' }]);
    expect(desired.neighbors).toEqual([{ bridge: `nbr${network.vni}`, ip: '10.0.0.3', mac: remote.mac }]);
    expect(desired.namespaces).toEqual(['o-vm1']);
    const empty = diffHost(
      desired,
      { namespaces: ['o-stale'], links: [], neighbors: [], fdb: [], suppressing: [], tables: [] },
      ctx,
    );
    expect(empty.applyPorts.map((p) => p.id)).toEqual([local.id]);
    expect(empty.deleteNamespaces).toEqual(['o-stale']);
    expect(empty.filter).toBeDefined();
    const port = desired.ports[0];
    const converged = diffHost(
      desired,
      {
        namespaces: ['o-vm1'],
        links: [
          {
            name: port?.device as string,
            kind: 'veth',
            up: true,
            master: port?.bridge,
            alias: `nubes:o:fp-${port?.fingerprint}`,
          } as never,
        ],
        neighbors: [
          {
            dev: `nbr${network.vni}`,
            address: '10.0.0.3',
            lladdr: remote.mac,
            state: ['PERMANENT'],
          } as never,
        ],
        fdb: [
          { mac: remote.mac, ifname: `nvx${network.vni}`, dst: '192.0.2.2', flags: ['self'] },
          {
            mac: remote.mac,
            ifname: `nvx${network.vni}`,
            master: `nbr${network.vni}`,
            state: 'static',
            flags: [],
          },
        ],
        suppressing: [`nvx${network.vni}`],
        tables: desired.filter.tables,
      },
      ctx,
    );
    expect(converged).toMatchObject({
      applyPorts: [],
      deleteLinks: [],
      fdbAdd: [],
      fdbDelete: [],
      neighborAdd: [],
      suppress: [],
    });
    expect(converged.filter).toBeUndefined();
  });
});

describeWith(['root', 'nft'], 'rendered rulesets on the real nft', () => {
  const owner = `nbv-${process.pid}-sg`;
  const net = new NetworkHost({ owner });
  afterAll(async () => {
    await net.gc();
  });

  it('loads in a namespace in one transaction, and replaces itself atomically', async () => {
    const ns = `${owner}-check`;
    await net.createNamespace(ns);
    const filter = {
      ports: [
        { id: 'p'.repeat(32), device: 'tpabc', mac: 'fa:16:3e:00:00:01', ips: ['10.0.0.2'], groups: [gid] },
      ],
      groups: {
        [gid]: {
          rules: [
            rule({ protocol: 'tcp', portRangeMin: 22 }),
            rule({ protocol: 'icmp' }),
            rule({ remoteGroupId: gid }),
          ],
        },
      },
      members: { [gid]: ['10.0.0.2'] },
      zones: [{ bridge: 'nbr1000', zone: 1000 }],
    };
    const r = renderHostFilter(filter, 'br_netfilter', 'nubes-t-sg');
    await net.exec(ns, ['nft', '-f', '-'], { input: r.text });
    await net.exec(ns, ['nft', '-f', '-'], { input: r.text });
    const listed = await net.exec(ns, ['nft', 'list', 'tables']);
    expect(listed.stdout.trim().split('\n')).toEqual(r.tables.map((t) => `table ${t.family} ${t.name}`));
  });
});
