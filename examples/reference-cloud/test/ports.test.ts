import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isNubesError, MemoryStore, SqliteStore, type Store } from '@nubes/core';
import { Vpc } from '@nubes/netns';
import { Quota } from '@nubes/quota';
import { afterEach, describe, expect, it } from 'vitest';
import { attachServerPort, bindServerPort, detachServerPort, tapName } from '../src/network/ports.js';
import { readAttrs } from '../src/network/records.js';

const SERVER = 'e0c6a6b1f9b84f7e8a3c0d2f7b6a5c41';

const backends: [string, () => { store: Store; cleanup: () => Promise<void> }][] = [
  ['MemoryStore', () => ({ store: new MemoryStore(), cleanup: async () => {} })],
  [
    'SqliteStore',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'nubes-ports-'));
      const store = new SqliteStore({ path: join(dir, 'vpc.db') });
      return {
        store,
        cleanup: async () => {
          await store.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  ],
];

describe.each(backends)('server ports on a %s Vpc', (_name, open) => {
  let cleanup: () => Promise<void> = async () => {};
  afterEach(async () => cleanup());

  async function setup() {
    const opened = open();
    cleanup = opened.cleanup;
    const vpc = new Vpc({ store: opened.store });
    const quota = new Quota(opened.store);
    const network = await vpc.createNetwork({ tenant: 'p1', name: 'net' });
    const subnet = await vpc.createSubnet({ tenant: 'p1', networkId: network.id, cidr: '10.0.0.0/24' });
    return { vpc, quota, store: opened.store, network, subnet };
  }

  it('attaches a new port bound as a tap, re-binds it to another host, and deletes it on detach', async () => {
    const { vpc, quota, store, network } = await setup();
    const sp = await attachServerPort(
      vpc,
      { projectId: 'p1', serverId: SERVER, host: 'h1', networkId: network.id },
      { quota },
    );
    expect(sp).toMatchObject({
      networkId: network.id,
      ip: '10.0.0.2',
      prefixLength: 24,
      gateway: '10.0.0.1',
    });
    expect(sp.tap).toBe(tapName(sp.portId));
    expect(sp.tap.length).toBeLessThanOrEqual(15);

    const port = await vpc.getPort(sp.portId);
    expect(port).toMatchObject({ host: 'h1', device: { kind: 'tap', name: sp.tap } });
    // The project's default group was made on first use and put on the port.
    const groups = await vpc.listSecurityGroups();
    expect(groups.map((g) => g.name)).toEqual(['default']);
    expect(port.securityGroups).toEqual([groups[0]?.id]);
    expect(await readAttrs(store, 'ports', sp.portId)).toMatchObject({
      deviceId: SERVER,
      deviceOwner: 'compute:nova',
      autoDelete: true,
      counted: true,
    });
    expect((await quota.usage('p1')).resources.ports?.inUse).toBe(1);

    // Live migration: the binding moves to the target host, addresses and MAC stay.
    const moved = await bindServerPort(vpc, sp.portId, { host: 'h2', tap: sp.tap });
    expect(moved).toEqual(sp);
    expect(await vpc.getPort(sp.portId)).toMatchObject({ host: 'h2', mac: sp.mac });

    await detachServerPort(vpc, sp, { quota });
    await expect(vpc.getPort(sp.portId)).rejects.toSatisfy((e) => isNubesError(e, 'NotFound'));
    expect((await quota.usage('p1')).resources.ports?.inUse).toBe(0);
    // A retried detach is fine.
    await detachServerPort(vpc, sp, { quota });
  });

  it('binds a port the user made and only unbinds it on detach', async () => {
    const { vpc, store, network, subnet } = await setup();
    const user = await vpc.createPort({ tenant: 'p1', networkId: network.id });
    expect(user.host).toBeUndefined();
    const sp = await attachServerPort(vpc, {
      projectId: 'p1',
      serverId: SERVER,
      host: 'h1',
      portId: user.id,
    });
    expect(sp).toMatchObject({ portId: user.id, ip: user.fixedIps[0]?.ip, tap: tapName(user.id) });
    expect(await readAttrs(store, 'ports', user.id)).toMatchObject({ deviceId: SERVER });

    // Another server cannot take it while it is in use.
    await expect(
      attachServerPort(vpc, { projectId: 'p1', serverId: 'f'.repeat(32), host: 'h1', portId: user.id }),
    ).rejects.toSatisfy((e) => isNubesError(e, 'Conflict'));
    // Another project does not see it.
    await expect(
      attachServerPort(vpc, { projectId: 'p2', serverId: SERVER, host: 'h1', portId: user.id }),
    ).rejects.toSatisfy((e) => isNubesError(e, 'NotFound'));

    await detachServerPort(vpc, sp);
    const kept = await vpc.getPort(user.id);
    expect(kept.host).toBeUndefined();
    expect(kept.device).toBeUndefined();
    expect(kept.fixedIps).toEqual(user.fixedIps);
    expect(await readAttrs(store, 'ports', user.id)).toMatchObject({ deviceId: '', deviceOwner: '' });

    // A fixed IP is looked up in the network's subnets.
    const fixed = await attachServerPort(vpc, {
      projectId: 'p1',
      serverId: SERVER,
      host: 'h1',
      networkId: network.id,
      fixedIp: '10.0.0.50',
    });
    expect(fixed.ip).toBe('10.0.0.50');
    expect((await vpc.getPort(fixed.portId)).fixedIps).toEqual([{ subnetId: subnet.id, ip: '10.0.0.50' }]);
  });

  it('leaves nothing behind when the port cannot be made', async () => {
    const { vpc, quota, network } = await setup();
    await quota.setLimits('p1', { ports: 0 });
    await expect(
      attachServerPort(
        vpc,
        { projectId: 'p1', serverId: SERVER, host: 'h1', networkId: network.id },
        { quota },
      ),
    ).rejects.toSatisfy((e) => isNubesError(e, 'QuotaExceeded'));
    await expect(
      attachServerPort(vpc, {
        projectId: 'p1',
        serverId: SERVER,
        host: 'h1',
        networkId: network.id,
        fixedIp: '192.168.1.1',
      }),
    ).rejects.toSatisfy((e) => isNubesError(e, 'InvalidInput'));
    expect(await vpc.listPorts()).toEqual([]);
  });
});
