import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '@nubes/core';
import { NetworkHost, parseTables, Vpc, VpcAgent } from '@nubes/netns';
import { describeWith } from '@nubes/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';

// A real `kill -9` of a VPC agent: the desired state is in a SQLite file shared with a child process that
// runs one simulated host's agent; the test SIGKILLs the child (and the commands it has in flight) after its
// k-th host command, at several k, then a fresh agent must converge to exactly what an agent that was never
// killed leaves, with nothing leaked. Everything host-global is named `nbv-<pid>-...`.
const owner = `nbv-${process.pid}`;
const hostNs = `${owner}-h1`;
const agentOwner = `${owner}-h1`;
const vm = (name: string) => `${owner}-h1-${name}`;
const root = join(import.meta.dirname, '..', '..', '..');
const tsx = createRequire(import.meta.url).resolve('tsx');
const fixture = join(import.meta.dirname, 'fixtures', 'vpc-agent.ts');

/** What the child printed. */
interface ChildRun {
  commands: number;
  done: boolean;
  stdout: string;
}

describeWith(['root', 'ip', 'nft'], 'VPC agent killed with SIGKILL mid-reconcile', () => {
  const net = new NetworkHost({ owner });
  const dir = mkdtempSync(join(tmpdir(), 'nubes-vpc-crash-'));
  const path = join(dir, 'vpc.db');
  const store = new SqliteStore({ path });
  const vpc = new Vpc({ store });
  const agent = () => new VpcAgent({ vpc, host: 'h1', owner: agentOwner, namespace: hostNs });
  const children = new Set<ChildProcess>();
  let fip = '';
  let outsideIp = '';
  const ips: Record<string, string> = {};

  /** Runs the fixture agent; with `stopAfter`, SIGKILLs its process group once it reports that many commands. */
  async function runChild(stopAfter?: number): Promise<ChildRun> {
    const child = spawn(
      process.execPath,
      ['--import', tsx, fixture, path, 'h1', agentOwner, hostNs, ...(stopAfter ? [String(stopAfter)] : [])],
      {
        cwd: root,
        env: { ...process.env, TSX_TSCONFIG_PATH: join(root, 'tsconfig.check.json') },
        stdio: ['ignore', 'pipe', 'pipe'],
        // Its own process group, so the kill takes the `ip`/`nft` commands it has running along with it.
        detached: true,
      },
    );
    children.add(child);
    let stdout = '';
    let stderr = '';
    let commands = 0;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      for (const m of d.toString().matchAll(/^cmd (\d+) /gm)) commands = Number(m[1]);
      if (stopAfter !== undefined && commands >= stopAfter && child.pid) process.kill(-child.pid, 'SIGKILL');
    });
    const { code, signal } = await exited;
    children.delete(child);
    const done = /^done /m.test(stdout);
    if (stopAfter === undefined) expect(code, stderr).toBe(0);
    else expect(signal, `the agent was to be killed after ${stopAfter} commands: ${stderr}`).toBe('SIGKILL');
    return { commands, done, stdout };
  }

  /** The kernel state the agent owns: namespaces, host-side links, nft tables (host and router namespaces). */
  async function kernelState() {
    const namespaces = (await net.listNamespaces()).filter((n) => n.startsWith(`${owner}-`)).sort();
    const links = (await net.links(hostNs))
      .filter((l) => l.owner === agentOwner)
      .map((l) => `${l.name} ${l.kind} ${l.master ?? '-'} ${l.up} ${l.alias ?? '-'}`)
      .sort();
    const tables: string[] = [];
    for (const ns of namespaces) {
      const listed = await net.exec(ns, ['nft', 'list', 'tables']);
      for (const t of parseTables(listed.stdout)) tables.push(`${ns} ${t.family} ${t.name}`);
    }
    return { namespaces, links, tables: tables.sort() };
  }

  const ping = async (from: string, to: string) =>
    (await net.exec(vm(from), ['ping', '-c', '1', '-W', '1', to], { okExitCodes: [0, 1] })).exitCode === 0;

  async function expectTraffic() {
    expect(await ping('i1', ips.i2 as string)).toBe(true);
    expect(await ping('i2', ips.i3 as string)).toBe(true);
    expect(await ping('i1', outsideIp)).toBe(true); // through the router, SNAT
    expect(await ping('outside', fip)).toBe(true); // floating IP, DNAT to i2
    expect(await ping('i3', ips.i1 as string)).toBe(false); // i1's group admits ICMP from "members" only
  }

  let reference: Awaited<ReturnType<typeof kernelState>>;
  let total = 0;

  beforeAll(async () => {
    await net.gc();
    // One simulated host: its root namespace, with an underlay address for the VXLAN devices.
    await net.apply({
      namespaces: [hostNs],
      links: [{ kind: 'bridge', name: 'eth0', namespace: hostNs }],
      addresses: [{ namespace: hostNs, dev: 'eth0', cidr: '192.168.77.1/24' }],
    });
    await vpc.registerHost({ name: 'h1', underlayIp: '192.168.77.1', underlayDev: 'eth0' });
    // A second host no agent runs for: its port only gives h1 remote FDB and neighbor entries to program.
    await vpc.registerHost({ name: 'h2', underlayIp: '192.168.77.2', underlayDev: 'eth0' });

    const network = await vpc.createNetwork({ tenant: 't', name: 'private' });
    const subnet = await vpc.createSubnet({ tenant: 't', networkId: network.id, cidr: '10.0.0.0/24' });
    const open = await vpc.createSecurityGroup({ tenant: 't', name: 'open' });
    await vpc.addRule(open.id, { direction: 'ingress', protocol: 'icmp' });
    const members = await vpc.createSecurityGroup({ tenant: 't', name: 'members' });
    await vpc.addRule(members.id, { direction: 'ingress', protocol: 'icmp', remoteGroupId: members.id });
    const port = async (name: string, groups: string[], host = 'h1') => {
      const p = await vpc.createPort({
        tenant: 't',
        networkId: network.id,
        host,
        device: { kind: 'veth', namespace: vm(name) },
        securityGroups: groups,
      });
      ips[name] = p.fixedIps[0]?.ip as string;
      return p;
    };
    await port('i1', [members.id]);
    const i2 = await port('i2', [open.id, members.id]);
    await port('i3', [open.id]);
    await port('far', [open.id], 'h2');

    const provider = await vpc.createNetwork({ tenant: 'admin', name: 'provider', external: true });
    await vpc.createSubnet({ tenant: 'admin', networkId: provider.id, cidr: '203.0.113.0/24' });
    const outside = await vpc.createPort({
      tenant: 'admin',
      networkId: provider.id,
      host: 'h1',
      device: { kind: 'veth', namespace: vm('outside') },
      portSecurity: false,
    });
    outsideIp = outside.fixedIps[0]?.ip as string;
    const router = await vpc.createRouter({ tenant: 't', name: 'r', host: 'h1' });
    await vpc.addRouterInterface(router.id, subnet.id);
    await vpc.setRouterGateway(router.id, provider.id);
    const floating = await vpc.createFloatingIp({ tenant: 't', networkId: provider.id });
    await vpc.associateFloatingIp(floating.id, i2.id);
    fip = floating.ip;

    // The reference: an agent that is never killed, run in the child as the crashed ones are.
    const clean = await runChild();
    expect(clean.done).toBe(true);
    total = clean.commands;
    reference = await kernelState();
    expect(reference.namespaces).toHaveLength(6); // host, router, i1, i2, i3, outside
    await expectTraffic();
  });

  afterAll(async () => {
    for (const child of children) if (child.pid) process.kill(-child.pid, 'SIGKILL');
    await agent()
      .teardown()
      .catch(() => undefined);
    await net.gc();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    const left = (await net.listNamespaces()).filter((n) => n.startsWith(`${owner}-`));
    expect(left).toEqual([]);
    const rootLinks = (await net.links()).filter((l) => l.owner?.startsWith(owner));
    expect(rootLinks).toEqual([]);
  });

  it('converges to what an agent never killed leaves, from kills at several points of a first reconcile', async () => {
    expect(total).toBeGreaterThan(15);
    // Early (reading the host), in the middle (topology applied in batches), late (filter, NAT, fingerprints);
    // NUBES_VPC_CRASH_ALL=1 kills it after every single command instead.
    const points = process.env.NUBES_VPC_CRASH_ALL
      ? Array.from({ length: total - 1 }, (_, i) => i + 1)
      : [
          ...new Set([
            3,
            Math.round(total * 0.2),
            Math.round(total * 0.35),
            Math.round(total * 0.5),
            Math.round(total * 0.65),
            Math.round(total * 0.8),
            total - 1,
          ]),
        ];
    for (const k of points) {
      await agent().teardown();
      const killed = await runChild(k);
      expect(killed.done, `killed after ${k} of ${total} commands`).toBe(false);
      expect(killed.commands).toBe(k);

      const fresh = agent();
      await fresh.reconcile();
      const again = await fresh.reconcile();
      expect(again, `after a kill at command ${k}`).toMatchObject({
        wiredPorts: [],
        deletedNamespaces: [],
        deletedLinks: [],
        fdbChanges: 0,
        neighborChanges: 0,
        filterReplaced: false,
      });
      expect(await kernelState(), `after a kill at command ${k}`).toEqual(reference);
    }
    await expectTraffic();
  });

  it('converges after a kill mid-reconcile of a change, then deleting everything leaves nothing', async () => {
    // Change: one port goes, one comes, the floating IP moves; the agent dies half-way through applying it.
    const snap = await vpc.snapshot();
    const i3 = snap.ports.find((p) => p.device?.kind === 'veth' && p.device.namespace === vm('i3'));
    await vpc.deletePort(i3?.id as string);
    const network = snap.networks.find((n) => !n.external);
    const i4 = await vpc.createPort({
      tenant: 't',
      networkId: network?.id as string,
      host: 'h1',
      device: { kind: 'veth', namespace: vm('i4') },
      securityGroups: i3?.securityGroups ?? [],
    });
    const floating = snap.floatingIps[0];
    await vpc.disassociateFloatingIp(floating?.id as string);
    await vpc.associateFloatingIp(floating?.id as string, i4.id);
    const killed = await runChild(8);
    expect(killed.done).toBe(false);
    await agent().reconcile();
    expect(await agent().reconcile()).toMatchObject({ wiredPorts: [], fdbChanges: 0, filterReplaced: false });
    const names = (await kernelState()).namespaces;
    expect(names).toContain(vm('i4'));
    expect(names).not.toContain(vm('i3'));
    expect(await ping('i4', ips.i2 as string)).toBe(true);
    expect(await ping('outside', fip)).toBe(true); // now DNAT to i4

    // Delete everything from the Store; kill the agent while it removes, then let a fresh one finish.
    const all = await vpc.snapshot();
    for (const f of all.floatingIps) await vpc.deleteFloatingIp(f.id);
    for (const r of all.routers) {
      for (const portId of r.interfaces) {
        const p = all.ports.find((x) => x.id === portId);
        await vpc.removeRouterInterface(r.id, p?.fixedIps[0]?.subnetId as string);
      }
      await vpc.deleteRouter(r.id);
    }
    for (const p of all.ports.filter((x) => x.owner.kind === 'instance')) await vpc.deletePort(p.id);
    expect((await runChild(6)).done).toBe(false);
    await agent().reconcile();
    expect(await kernelState()).toEqual({ namespaces: [hostNs], links: [], tables: [] });
  });
});
