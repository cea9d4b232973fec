import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, SqliteStore, type Store } from '@nubes/core';
import { defaultPools, firstFreeAddress, ipv4NetworksOverlap, parseIpv4Cidr, Vpc } from '@nubes/netns';
import { describe, expect, it } from 'vitest';

const net = (cidr: string) => parseIpv4Cidr(cidr) ?? { base: 0, prefix: 0 };

describe('IPv4 arithmetic', () => {
  it('parses networks, spots host bits and overlaps', () => {
    expect(parseIpv4Cidr('10.0.0.0/24')).toEqual({ base: 0x0a000000, prefix: 24, hostBits: false });
    expect(parseIpv4Cidr('10.0.0.1/24')?.hostBits).toBe(true);
    expect(parseIpv4Cidr('10.0.0.0/33')).toBeUndefined();
    expect(parseIpv4Cidr('fd00::/64')).toBeUndefined();
    expect(ipv4NetworksOverlap(net('10.0.0.0/24'), net('10.0.0.128/25'))).toBe(true);
    expect(ipv4NetworksOverlap(net('10.0.0.0/24'), net('10.0.1.0/24'))).toBe(false);
  });

  it('splits default pools around the gateway and hands out the lowest free address', () => {
    expect(defaultPools(net('10.0.0.0/24'), '10.0.0.1')).toEqual([{ start: '10.0.0.2', end: '10.0.0.254' }]);
    expect(defaultPools(net('10.0.0.0/29'), '10.0.0.3')).toEqual([
      { start: '10.0.0.1', end: '10.0.0.2' },
      { start: '10.0.0.4', end: '10.0.0.6' },
    ]);
    const pools = defaultPools(net('10.0.0.0/30'), '10.0.0.1');
    expect(firstFreeAddress(pools, new Set())).toBe('10.0.0.2');
    expect(firstFreeAddress(pools, new Set(['10.0.0.2']))).toBeUndefined();
  });
});

async function tenantNet(vpc: Vpc, tenant = 't1', cidr = '10.0.0.0/24') {
  const network = await vpc.createNetwork({ tenant });
  const subnet = await vpc.createSubnet({ tenant, networkId: network.id, cidr });
  return { network, subnet };
}

const port = (tenant: string, networkId: string, n: number) => ({
  tenant,
  networkId,
  host: 'h1',
  device: { kind: 'tap' as const, name: `tap${n}` },
});

/** Asserts that `fn` fails with `code` naming `field` and that the Store did not move. */
async function refuses(store: Store, fn: () => Promise<unknown>, code: string, field: string) {
  const before = await store.revision();
  await expect(fn()).rejects.toMatchObject({ code, details: expect.objectContaining({ field }) });
  expect(await store.revision()).toBe(before);
}

describe('Vpc model and IPAM on the Store', () => {
  it('lets two tenants use the same CIDR with distinct VNIs and allocates addresses without repeats', async () => {
    const vpc = new Vpc({ store: new MemoryStore() });
    const a = await tenantNet(vpc, 'a');
    const b = await tenantNet(vpc, 'b');
    expect(a.subnet.cidr).toBe(b.subnet.cidr);
    expect(a.network.vni).not.toBe(b.network.vni);
    expect(a.subnet.gateway).toBe('10.0.0.1');
    const p1 = await vpc.createPort(port('a', a.network.id, 1));
    const p2 = await vpc.createPort(port('a', a.network.id, 2));
    const q1 = await vpc.createPort(port('b', b.network.id, 11));
    expect([p1.fixedIps[0]?.ip, p2.fixedIps[0]?.ip, q1.fixedIps[0]?.ip]).toEqual([
      '10.0.0.2',
      '10.0.0.3',
      '10.0.0.2',
    ]);
    expect(p1.mac).toMatch(/^fa:16:3e(:[0-9a-f]{2}){3}$/);
    await vpc.deletePort(p1.id);
    expect((await vpc.createPort(port('a', a.network.id, 3))).fixedIps[0]?.ip).toBe('10.0.0.2');
  });

  it('refuses bad input with a typed error naming the field, leaving the Store unchanged', async () => {
    const store = new MemoryStore();
    const vpc = new Vpc({ store });
    const { network, subnet } = await tenantNet(vpc, 't1', '10.0.0.0/30');
    const other = await tenantNet(vpc, 't2');
    const sg = await vpc.createSecurityGroup({ tenant: 't1' });
    await refuses(
      store,
      () => vpc.createSubnet({ tenant: 't1', networkId: network.id, cidr: '10.0.0.0/16' }),
      'InvalidInput',
      'subnet.cidr',
    );
    await refuses(
      store,
      () => vpc.createSubnet({ tenant: 't1', networkId: network.id, cidr: '10.1.0.1/24' }),
      'InvalidInput',
      'subnet.cidr',
    );
    await refuses(
      store,
      () =>
        vpc.createSubnet({ tenant: 't1', networkId: network.id, cidr: '10.2.0.0/24', gateway: '10.3.0.1' }),
      'InvalidInput',
      'subnet.gateway',
    );
    await refuses(
      store,
      () =>
        vpc.createSubnet({
          tenant: 't1',
          networkId: network.id,
          cidr: '10.2.0.0/24',
          allocationPools: [{ start: '10.2.0.1', end: '10.2.0.9' }],
        }),
      'InvalidInput',
      'subnet.allocationPools.0',
    );
    await refuses(
      store,
      () => vpc.createPort(port('t1', other.network.id, 1)),
      'InvalidInput',
      'port.networkId',
    );
    await refuses(
      store,
      () =>
        vpc.createPort({ ...port('t1', network.id, 1), fixedIps: [{ subnetId: subnet.id, ip: '10.9.0.1' }] }),
      'InvalidInput',
      'port.fixedIps.0.ip',
    );
    // A /30 has one address left after the gateway: the second port exhausts the pool.
    await vpc.createPort(port('t1', network.id, 1));
    await refuses(store, () => vpc.createPort(port('t1', network.id, 1)), 'Conflict', 'port.device');
    await refuses(
      store,
      () => vpc.createPort(port('t1', network.id, 2)),
      'Conflict',
      'port.fixedIps.0.subnetId',
    );
    const bad = [
      [{ direction: 'ingress', protocol: 'tcp', portRangeMin: 90, portRangeMax: 80 }, 'rule.portRangeMax'],
      [{ direction: 'ingress', protocol: 'tcp', portRangeMin: 70000 }, 'rule.portRangeMin'],
      [{ direction: 'ingress', portRangeMin: 22 }, 'rule.portRangeMin'],
      [{ direction: 'ingress', protocol: 'icmp', portRangeMin: 300 }, 'rule.portRangeMin'],
      [{ direction: 'ingress', remoteIpPrefix: '10.0.0.1/8' }, 'rule.remoteIpPrefix'],
      [{ direction: 'sideways' }, 'rule.direction'],
    ] as const;
    for (const [rule, field] of bad)
      await refuses(store, () => vpc.addRule(sg.id, rule as never), 'InvalidInput', field);
    await refuses(
      store,
      () => vpc.addRule(sg.id, { direction: 'ingress', remoteGroupId: '0'.repeat(32) }),
      'NotFound',
      'rule.remoteGroupId',
    );
  });

  it('never hands out one address twice to concurrent allocators sharing a SQLite file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nbv-ipam-'));
    try {
      const path = join(dir, 'vpc.db');
      const stores = [new SqliteStore({ path }), new SqliteStore({ path })];
      const [one, two] = stores.map((store) => new Vpc({ store })) as [Vpc, Vpc];
      const { network } = await tenantNet(one, 't1', '10.0.0.0/27');
      const made = await Promise.all(
        Array.from({ length: 24 }, (_, i) => (i % 2 ? one : two).createPort(port('t1', network.id, i))),
      );
      const ips = made.map((p) => p.fixedIps[0]?.ip);
      expect(new Set(ips).size).toBe(24);
      for (const s of stores) await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
