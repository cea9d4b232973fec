import { isNubesError, MemoryStore } from '@nubes/core';
import { describe, expect, it } from 'vitest';
import { planHost, Vpc } from '../src/index.js';

const ctx = { host: 'h1', owner: 'o', hostNamespace: 'o-h1', mode: 'bridge' as const };

async function setup() {
  const vpc = new Vpc({ store: new MemoryStore() });
  await vpc.registerHost({ name: 'h1', underlayIp: '192.0.2.1' });
  await vpc.registerHost({ name: 'h2', underlayIp: '192.0.2.2' });
  const network = await vpc.createNetwork({ tenant: 'blue', name: 'n' });
  const subnet = await vpc.createSubnet({ tenant: 'blue', networkId: network.id, cidr: '10.0.0.0/24' });
  return { vpc, network, subnet };
}

describe('Vpc port binding (Neutron ports made before Nova binds them)', () => {
  it('makes unbound ports that hold addresses but that no agent wires', async () => {
    const { vpc, network } = await setup();
    const port = await vpc.createPort({ tenant: 'blue', networkId: network.id, name: 'p' });
    expect(port.host).toBeUndefined();
    expect(port.device).toBeUndefined();
    expect(port.fixedIps[0]?.ip).toBe('10.0.0.2');
    const plan = planHost(await vpc.snapshot(), ctx);
    expect(plan.ports).toEqual([]);
    expect(plan.fdb).toEqual([]);
    await expect(vpc.createPort({ tenant: 'blue', networkId: network.id, host: 'h1' })).rejects.toSatisfy(
      (e) => isNubesError(e, 'InvalidInput') && e.details.field === 'port.device',
    );
  });

  it('binds, moves and unbinds a port, claiming its device name on the host it is on', async () => {
    const { vpc, network } = await setup();
    const a = await vpc.createPort({ tenant: 'blue', networkId: network.id });
    const b = await vpc.createPort({ tenant: 'blue', networkId: network.id });
    const bound = await vpc.bindPort(a.id, { host: 'h1', device: { kind: 'tap', name: 'tapa' } });
    expect(bound).toMatchObject({ host: 'h1', device: { kind: 'tap', name: 'tapa' }, mac: a.mac });
    expect(planHost(await vpc.snapshot(), ctx).ports.map((p) => p.id)).toEqual([a.id]);
    // The name is taken on h1, free on h2.
    await expect(vpc.bindPort(b.id, { host: 'h1', device: { kind: 'tap', name: 'tapa' } })).rejects.toSatisfy(
      (e) => isNubesError(e, 'Conflict') && e.details.field === 'binding.device',
    );
    await vpc.bindPort(b.id, { host: 'h2', device: { kind: 'tap', name: 'tapa' } });
    // Live migration: a moves to h2 under another name, and its old name on h1 is free again.
    await vpc.bindPort(a.id, { host: 'h2', device: { kind: 'tap', name: 'tapa2' } });
    expect(planHost(await vpc.snapshot(), ctx).ports).toEqual([]);
    expect(planHost(await vpc.snapshot(), ctx).fdb).toEqual([]); // no local port on the network any more
    await vpc.unbindPort(b.id);
    await vpc.bindPort(b.id, { host: 'h1', device: { kind: 'tap', name: 'tapa' } });
    const unbound = await vpc.unbindPort(a.id);
    expect(unbound.host).toBeUndefined();
    expect(unbound.fixedIps).toEqual(a.fixedIps);
    // Router ports are placed by their router.
    const router = await vpc.createRouter({ tenant: 'blue', host: 'h1' });
    const subnets = await vpc.listSubnets();
    const iface = await vpc.addRouterInterface(router.id, subnets[0]?.id as string);
    await expect(vpc.unbindPort(iface.id)).rejects.toSatisfy((e) => isNubesError(e, 'Conflict'));
  });

  it('updates names, port security and subnet options, refusing bad input without a change', async () => {
    const { vpc, network, subnet } = await setup();
    const group = await vpc.createSecurityGroup({ tenant: 'blue', name: 'web' });
    const port = await vpc.createPort({ tenant: 'blue', networkId: network.id, securityGroups: [group.id] });
    expect((await vpc.updateNetwork(network.id, { name: 'renamed' })).name).toBe('renamed');
    expect((await vpc.updateSecurityGroup(group.id, { name: 'www' })).name).toBe('www');
    expect(
      await vpc.updateRouter((await vpc.createRouter({ tenant: 'blue', host: 'h1' })).id, { snat: false }),
    ).toMatchObject({ snat: false });
    await expect(vpc.updatePort(port.id, { portSecurity: false })).rejects.toSatisfy(
      (e) => isNubesError(e, 'InvalidInput') && e.details.field === 'update.portSecurity',
    );
    expect(await vpc.getPort(port.id)).toEqual(port);
    expect(
      await vpc.updatePort(port.id, { name: 'p', securityGroups: [], portSecurity: false }),
    ).toMatchObject({
      name: 'p',
      securityGroups: [],
      portSecurity: false,
    });
    const s = await vpc.updateSubnet(subnet.id, {
      dnsNameservers: ['192.0.2.53'],
      hostRoutes: [{ destination: '172.16.0.0/12', nexthop: '10.0.0.254' }],
    });
    expect(s).toMatchObject({ cidr: '10.0.0.0/24', dnsNameservers: ['192.0.2.53'] });
    await expect(vpc.updateSubnet(subnet.id, { dnsNameservers: ['x'] })).rejects.toSatisfy((e) =>
      isNubesError(e, 'InvalidInput'),
    );
    expect(await vpc.getSubnet(subnet.id)).toEqual(s);
    expect((await vpc.listNetworks()).map((n) => n.name)).toEqual(['renamed']);
    expect((await vpc.listSecurityGroups()).map((g) => g.name)).toEqual(['www']);
    expect((await vpc.listHosts()).map((h) => h.name)).toEqual(['h1', 'h2']);
  });

  it('lets any tenant plug into a shared network', async () => {
    const vpc = new Vpc({ store: new MemoryStore() });
    const shared = await vpc.createNetwork({ tenant: 'admin', shared: true });
    await vpc.createSubnet({ tenant: 'admin', networkId: shared.id, cidr: '10.1.0.0/24' });
    const own = await vpc.createNetwork({ tenant: 'admin' });
    await vpc.createSubnet({ tenant: 'admin', networkId: own.id, cidr: '10.2.0.0/24' });
    expect(shared.shared).toBe(true);
    expect(own.shared).toBeUndefined();
    await vpc.createPort({ tenant: 'green', networkId: shared.id });
    await expect(vpc.createPort({ tenant: 'green', networkId: own.id })).rejects.toSatisfy(
      (e) => isNubesError(e, 'InvalidInput') && e.details.field === 'port.networkId',
    );
  });
});
