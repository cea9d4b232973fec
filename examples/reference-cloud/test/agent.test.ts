/**
 * The compute agents against real QEMU (TCG), real namespaces and real nftables: two simulated hosts with
 * an agent each in this process, and a third host whose agent is a child process that is SIGKILLed in the
 * middle of a build. Servers are made the way the compute API makes them (quota reservation, placement,
 * ports, a record with `task: 'spawning'`).
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isNubesError, type JsonValue, SqliteStore } from '@nubes/core';
import { livePid, runPaths } from '@nubes/kvm';
import { describeWith } from '@nubes/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ComputeAgent, consoleLogPath, RESTARTED_DURING_BUILD, runDir } from '../src/agent/index.js';
import { type CloudParts, openParts } from '../src/cloud.js';
import { type ServerRecord, serverKey, serverQuotaDeltas } from '../src/compute/model.js';
import {
  buildGuestFiles,
  GUEST_READY_MARKER,
  type GuestImages,
  uploadGuestImages,
} from '../src/guest/index.js';
import { SimulatedHosts } from '../src/hosts/index.js';
import { attachServerPort } from '../src/network/ports.js';

const EXAMPLE = fileURLToPath(new URL('..', import.meta.url));
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const PROJECT = 'proj-agent';
const FLAVOR = { name: 'm1.tiny', vcpus: 1, ramMiB: 128, diskGiB: 1 };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describeWith(['root', 'qemu-system', 'qemu-img', 'ip', 'nft', 'busybox'], 'compute agents', () => {
  let dir: string;
  let dataDir: string;
  let store: SqliteStore;
  let parts: CloudParts;
  let hosts: SimulatedHosts;
  let guest: GuestImages;
  let networkId: string;
  const agents: ComputeAgent[] = [];
  const children: ChildProcess[] = [];
  const log: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rc-agent-'));
    dataDir = join(dir, 'data');
    store = new SqliteStore({ path: join(dir, 'cloud.db') });
    parts = openParts(store, dataDir);
    hosts = await SimulatedHosts.create({ count: 3, owner: `rca-${process.pid}` });
    guest = await uploadGuestImages(parts.images, await buildGuestFiles(join(dir, 'guest')), {
      owner: PROJECT,
    });
    const network = await parts.vpc.createNetwork({ tenant: PROJECT });
    networkId = network.id;
    await parts.vpc.createSubnet({ tenant: PROJECT, networkId, cidr: '10.0.0.0/24' });
    // The project's default group, as the network API makes it, opened for ping and port 22.
    const group = await parts.vpc.createSecurityGroup({ tenant: PROJECT, name: 'default' });
    await parts.vpc.addRule(group.id, { direction: 'ingress', protocol: 'icmp' });
    await parts.vpc.addRule(group.id, {
      direction: 'ingress',
      protocol: 'tcp',
      portRangeMin: 22,
      portRangeMax: 22,
    });
    for (const name of ['h1', 'h2']) {
      const agent = new ComputeAgent({
        parts,
        host: hosts.host(name),
        dataDir,
        accelerator: 'tcg',
        capacity: { vcpus: 4, memoryMiB: 2048, diskGiB: 20 },
        log: (line) => log.push(line),
        onError: (error) => log.push(`error: ${(error as Error).message}`),
      });
      agents.push(agent);
    }
    await Promise.all(agents.map((a) => a.start()));
  });

  afterAll(async () => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const agent of agents) await agent.stop({ killGuests: true }).catch(() => {});
    // Whatever QEMU a run directory still names (a failed test) goes too.
    for (const h of ['h1', 'h2', 'h3'])
      for (const id of listInstances()) {
        const pid = await livePid(runPaths(runDir(dataDir, id, h)));
        if (pid) process.kill(pid, 'SIGKILL');
      }
    await hosts?.destroy();
    await store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (process.env.NUBES_AGENT_TEST_LOG) console.log(log.join('\n'));
  });

  function listInstances(): string[] {
    const root = join(dataDir ?? '/nonexistent', 'instances');
    return existsSync(root) ? readdirSync(root) : [];
  }

  /** Makes a server the way the compute API does, and asks its host to build it. */
  async function createServer(name: string, host: string): Promise<ServerRecord> {
    const id = randomUUID();
    const reservationId = await parts.quota.reserve(PROJECT, serverQuotaDeltas({ flavor: FLAVOR }), {
      ttlMs: 600_000,
    });
    await parts.inventory.place({
      resources: { vcpus: FLAVOR.vcpus, memoryMiB: FLAVOR.ramMiB, diskGiB: FLAVOR.diskGiB },
      instanceIds: [id],
      hints: { hostName: host },
    });
    const port = await attachServerPort(parts.vpc, { projectId: PROJECT, serverId: id, host, networkId });
    const now = new Date().toISOString();
    const server: ServerRecord = {
      id,
      name,
      projectId: PROJECT,
      userId: 'user-1',
      flavorId: 'flavor-1',
      flavor: FLAVOR,
      imageId: guest.diskId,
      status: 'BUILD',
      task: 'spawning',
      powerState: 0,
      host,
      availabilityZone: 'nova',
      ports: [port],
      metadata: {},
      reservationId,
      created: now,
      updated: now,
    };
    await store.put(serverKey(id), server as unknown as JsonValue, { ifRevision: 0 });
    return server;
  }

  /** Sets a task with compare-and-put, as the API does. */
  async function ask(id: string, task: ServerRecord['task'], status?: ServerRecord['status']): Promise<void> {
    for (;;) {
      const entry = await store.get<ServerRecord>(serverKey(id));
      if (!entry) throw new Error(`server ${id} is gone`);
      const next = { ...entry.value, task, ...(status ? { status } : {}) };
      try {
        await store.put(serverKey(id), next as unknown as JsonValue, { ifRevision: entry.revision });
        return;
      } catch (error) {
        // Changed meanwhile: read again.
        if (!isNubesError(error, 'Conflict')) throw error;
      }
    }
  }

  async function waitFor<T>(
    what: string,
    probe: () => Promise<T | undefined>,
    timeoutMs = 60_000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}\n${log.slice(-30).join('\n')}`);
      await sleep(250);
    }
  }

  const record = async (id: string) => (await store.get<ServerRecord>(serverKey(id)))?.value;
  const settled = (id: string, status: ServerRecord['status']) =>
    waitFor(`server ${id} ${status}`, async () => {
      const s = await record(id);
      if (s?.status === 'ERROR' && status !== 'ERROR')
        throw new Error(`server ${id} ERROR: ${s.fault?.message}`);
      return s && s.status === status && s.task === null ? s : undefined;
    });
  const tapExists = async (host: string, tap: string) =>
    (await hosts.exec(host, ['ip', 'link', 'show', 'dev', tap], { okExitCodes: [0, 1] })).exitCode === 0;

  it('boots a server on each host, pings across the overlay, powers off and on, and deletes', async () => {
    const [web1, web2] = await Promise.all([createServer('web1', 'h1'), createServer('web2', 'h2')]);
    const [a1, a2] = await Promise.all([settled(web1.id, 'ACTIVE'), settled(web2.id, 'ACTIVE')]);
    expect(a1).toMatchObject({ powerState: 1, host: 'h1' });
    expect(a1.reservationId).toBeUndefined();
    expect(a1.launchedAt).toBeTruthy();
    expect(a2).toMatchObject({ powerState: 1, host: 'h2' });
    for (const s of [web1, web2])
      expect(readFileSync(consoleLogPath(dataDir, s.id), 'utf8')).toContain(
        `${GUEST_READY_MARKER} ${s.name}`,
      );
    expect((await parts.quota.usage(PROJECT)).resources.instances).toMatchObject({ inUse: 2, reserved: 0 });

    // Guest 1 pings guest 2: h1's tap, bridge, VXLAN over the underlay, h2's bridge and tap.
    const vm1 = agents[0]?.vm(web1.id);
    expect(vm1).toBeDefined();
    const ip2 = web2.ports[0]?.ip as string;
    const from = vm1?.console.position ?? 0;
    vm1?.console.write(`ping -c 3 -W 3 ${ip2} >/dev/null && echo "PING""-OK" || echo "PING""-FAIL"\n`);
    const [result] = (await vm1?.console.waitFor(/PING-(OK|FAIL)/, { timeoutMs: 30_000, from })) ?? [];
    if (result !== 'PING-OK' && process.env.NUBES_AGENT_TEST_LOG) {
      vm1?.console.write('ip addr; ip route; ip neigh; ping -c 2 -W 2 10.0.0.1\n');
      await sleep(5000);
      console.log(vm1?.console.output.slice(-4000));
      for (const h of ['h1', 'h2'])
        for (const argv of [
          ['ip', '-d', 'link'],
          ['bridge', 'fdb'],
          ['ip', 'neigh'],
          ['ip', 'addr'],
          ['nft', 'list', 'ruleset'],
        ])
          console.log(h, argv.join(' '), (await hosts.exec(h, argv, { okExitCodes: [0, 1, 2] })).stdout);
    }
    expect(result).toBe('PING-OK');

    // Power off (ACPI button, the guest powers itself off), then on again.
    await ask(web2.id, 'powering-off');
    await settled(web2.id, 'SHUTOFF');
    expect((await record(web2.id))?.powerState).toBe(4);
    expect(await livePid(runPaths(runDir(dataDir, web2.id, 'h2')))).toBeUndefined();
    await ask(web2.id, 'powering-on');
    expect(await settled(web2.id, 'ACTIVE')).toMatchObject({ powerState: 1 });
    await waitFor('web2 to boot again', async () =>
      readFileSync(consoleLogPath(dataDir, web2.id), 'utf8').includes(GUEST_READY_MARKER) ? true : undefined,
    );

    // Delete both: no QEMU, no tap, no record, quota and placement given back.
    await ask(web1.id, 'deleting');
    await ask(web2.id, 'deleting');
    for (const [s, host] of [
      [web1, 'h1'],
      [web2, 'h2'],
    ] as const) {
      await waitFor(`${s.name} deleted`, async () => ((await record(s.id)) ? undefined : true));
      expect(await livePid(runPaths(runDir(dataDir, s.id, host)))).toBeUndefined();
      expect(existsSync(consoleLogPath(dataDir, s.id))).toBe(false);
      await waitFor(`${s.name}'s tap removed`, async () =>
        (await tapExists(host, s.ports[0]?.tap as string)) ? undefined : true,
      );
    }
    expect((await parts.quota.usage(PROJECT)).resources.instances).toMatchObject({ inUse: 0, reserved: 0 });
    expect((await parts.images.listInstanceDisks()).length).toBe(0);
  });

  it('fails a build cut off by an agent SIGKILLed mid-boot, leaving no QEMU or tap', async () => {
    const h3 = hosts.host('h3');
    const start = () => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/agent/main.ts'], {
        cwd: EXAMPLE,
        env: {
          ...process.env,
          TSX_TSCONFIG_PATH: join(ROOT, 'tsconfig.check.json'),
          NUBES_STORE: `sqlite:${join(dir, 'cloud.db')}`,
          NUBES_DATA: dataDir,
          NUBES_HOST: 'h3',
          NUBES_NAMESPACE: h3.namespace,
          NUBES_UNDERLAY_IP: h3.underlayIp,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout?.on('data', (chunk: Buffer) => {
          log.push(...chunk.toString().trim().split('\n'));
          if (chunk.toString().includes('compute agent h3 ready')) resolve();
        });
        child.stderr?.on('data', (chunk: Buffer) => log.push(chunk.toString()));
        child.once('exit', (code, signal) => {
          log.push(`agent h3 exited: ${code ?? signal}`);
          reject(new Error(`agent exited early: ${code ?? signal}`));
        });
      });
      ready.catch(() => {});
      return { child, ready };
    };

    const first = start();
    await first.ready;
    const server = await createServer('doomed', 'h3');
    // Mid-boot: QEMU runs, the guest has not printed its marker yet, the record still says spawning.
    await waitFor('QEMU of the build', async () =>
      (await livePid(runPaths(runDir(dataDir, server.id, 'h3')))) ? true : undefined,
    );
    expect((await record(server.id))?.task).toBe('spawning');
    first.child.kill('SIGKILL');
    await new Promise((resolve) => first.child.once('exit', resolve));
    expect(await livePid(runPaths(runDir(dataDir, server.id, 'h3')))).toBeDefined();

    const second = start();
    await second.ready;
    const failed = await settled(server.id, 'ERROR');
    expect(failed.fault?.message).toBe(RESTARTED_DURING_BUILD);
    expect(failed.powerState).toBe(0);
    expect(await livePid(runPaths(runDir(dataDir, server.id, 'h3')))).toBeUndefined();
    expect((await parts.quota.usage(PROJECT)).resources.instances).toMatchObject({ inUse: 0, reserved: 0 });
    await waitFor('the tap removed', async () =>
      (await tapExists('h3', server.ports[0]?.tap as string)) ? undefined : true,
    );

    // Deleting the ERROR server gives nothing back twice.
    await ask(server.id, 'deleting');
    await waitFor('ERROR server deleted', async () => ((await record(server.id)) ? undefined : true));
    expect((await parts.quota.usage(PROJECT)).resources.instances).toMatchObject({ inUse: 0, reserved: 0 });
    second.child.kill('SIGTERM');
    await new Promise((resolve) => second.child.once('exit', resolve));
  });
});
