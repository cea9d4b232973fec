import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, NubesError, SqliteStore } from '@nubes/core';
import { type AgentLoop, NetworkHost, Vpc, VpcAgent } from '@nubes/netns';
import { describeWith } from '@nubes/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from './helpers.js';

const owner = `nbv-${process.pid}`;
const hostNs = `${owner}-h1`;
const vm = (name: string) => `${owner}-h1-${name}`;

/** Polls `check` until it holds or `ms` pass. */
async function until(check: () => Promise<boolean>, ms = 8000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
}

describeWith(['root', 'ip', 'nft'], 'VPC agent loop driven by store.watch', () => {
  const net = new NetworkHost({ owner });
  const dir = mkdtempSync(join(tmpdir(), 'nubes-vpc-loop-'));
  // The agent's process and "the API's" share a SQLite file: the agent sees the API's commits by polling.
  const agentStore = new SqliteStore({ path: join(dir, 'vpc.db'), pollIntervalMs: 50 });
  const apiStore = new SqliteStore({ path: join(dir, 'vpc.db') });
  const api = new Vpc({ store: apiStore });
  const agent = new VpcAgent({
    vpc: new Vpc({ store: agentStore }),
    host: 'h1',
    owner: `${owner}-h1`,
    namespace: hostNs,
  });
  let loop: AgentLoop | undefined;
  const errors: unknown[] = [];

  beforeAll(async () => {
    await net.gc();
    await net.apply({
      namespaces: [hostNs],
      links: [{ kind: 'bridge', name: 'eth0', namespace: hostNs }],
      addresses: [{ namespace: hostNs, dev: 'eth0', cidr: '192.168.77.1/24' }],
    });
  });

  afterAll(async () => {
    await loop?.close();
    await agent.teardown().catch(() => undefined);
    await net.gc();
    await agentStore.close();
    await apiStore.close();
    rmSync(dir, { recursive: true, force: true });
    expect((await net.listNamespaces()).filter((n) => n.startsWith(`${owner}-`))).toEqual([]);
  });

  const namespaces = async () => (await net.listNamespaces()).filter((n) => n.startsWith(`${owner}-h1-`));
  const ping = async (from: string, to: string) =>
    (await net.exec(vm(from), ['ping', '-c', '1', '-W', '1', to], { okExitCodes: [0, 1] })).exitCode === 0;

  it('wires what another process writes, one reconcile per burst of changes, and removes what it deletes', async () => {
    loop = await agent.watch({ debounceMs: 300, retryMs: 200, onError: (e) => errors.push(e) });
    await loop.idle();
    expect(loop.reconciles).toBe(1); // the initial one

    // A burst of 9 transactions from the other process.
    await api.registerHost({ name: 'h1', underlayIp: '192.168.77.1', underlayDev: 'eth0' });
    const network = await api.createNetwork({ tenant: 't' });
    await api.createSubnet({ tenant: 't', networkId: network.id, cidr: '10.0.0.0/24' });
    const sg = await api.createSecurityGroup({ tenant: 't' });
    await api.addRule(sg.id, { direction: 'ingress', protocol: 'icmp' });
    const port = (name: string) =>
      api.createPort({
        tenant: 't',
        networkId: network.id,
        host: 'h1',
        device: { kind: 'veth', namespace: vm(name) },
        securityGroups: [sg.id],
      });
    const a = await port('a');
    const b = await port('b');
    const c = await port('c');
    expect(await until(async () => (await namespaces()).length === 3)).toBe(true);
    await sleep(500); // any reconcile still to come
    await loop.idle();
    expect(loop.reconciles - 1).toBeGreaterThanOrEqual(1);
    expect(loop.reconciles - 1).toBeLessThanOrEqual(3);
    expect(await ping('a', b.fixedIps[0]?.ip as string)).toBe(true);
    expect(await ping('c', a.fixedIps[0]?.ip as string)).toBe(true);

    await api.deletePort(c.id);
    expect(await until(async () => !(await namespaces()).includes(vm('c')))).toBe(true);
    await loop.idle();
    expect(await agent.reconcile()).toMatchObject({
      wiredPorts: [],
      deletedNamespaces: [],
      filterReplaced: false,
    });
    expect(errors).toEqual([]);

    // Closed: changes are no longer applied.
    await loop.close();
    const done = loop.reconciles;
    await port('d');
    await sleep(600);
    expect(loop.reconciles).toBe(done);
    expect(await namespaces()).not.toContain(vm('d'));
  });
});

describe('VPC agent loop without a kernel', () => {
  it('retries a failed reconcile and reports the error', async () => {
    const vpc = new Vpc({ store: new MemoryStore() });
    const agent = new VpcAgent({ vpc, host: 'h', owner: 'nbv-loop', mode: 'br_netfilter' });
    let calls = 0;
    agent.reconcile = async () => {
      calls++;
      if (calls < 3) throw new NubesError('Unavailable', 'kernel busy');
      return {
        wiredPorts: [],
        deletedNamespaces: [],
        deletedLinks: [],
        fdbChanges: 0,
        neighborChanges: 0,
        filterReplaced: false,
        routers: 0,
      };
    };
    const errors: unknown[] = [];
    const loop = await agent.watch({ debounceMs: 10, retryMs: 20, onError: (e) => errors.push(e) });
    await loop.idle();
    expect(calls).toBe(3);
    expect(loop.reconciles).toBe(1);
    expect(errors).toHaveLength(2);
    // A burst of writes under the prefix: one more reconcile; writes elsewhere: none.
    for (let i = 0; i < 5; i++) await vpc.store.put(`vpc/x/${i}`, i);
    await vpc.store.put('other/x', 1);
    await sleep(60);
    await loop.idle();
    expect(loop.reconciles).toBe(2);
    await loop.close();
    await expect(agent.watch({ debounceMs: -1 })).rejects.toThrow(/options.debounceMs/);
    await expect(agent.watch({ resyncMs: 1 })).rejects.toThrow(/options.resyncMs/);
  });

  it('resyncs every resyncMs with no change seen, and stops when closed', async () => {
    const vpc = new Vpc({ store: new MemoryStore() });
    const agent = new VpcAgent({ vpc, host: 'h', owner: 'nbv-resync', mode: 'br_netfilter' });
    let calls = 0;
    agent.reconcile = async () => {
      calls++;
      return {
        wiredPorts: [],
        deletedNamespaces: [],
        deletedLinks: [],
        fdbChanges: 0,
        neighborChanges: 0,
        filterReplaced: false,
        routers: 0,
      };
    };
    const loop = await agent.watch({ debounceMs: 10, resyncMs: 50 });
    await sleep(280);
    await loop.close();
    expect(calls).toBeGreaterThanOrEqual(4); // the first run, then one per period
    const after = calls;
    await sleep(120);
    expect(calls).toBe(after);
  });
});
