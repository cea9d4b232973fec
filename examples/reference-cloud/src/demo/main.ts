/**
 * `npm run demo`: the reference cloud with three simulated hosts, driven by the real `openstack` CLI the way a
 * new user would drive it. The API and each compute agent are processes of their own sharing PostgreSQL.
 *
 * Environment: `NUBES_DEMO_POSTGRES` (an existing PostgreSQL URL; default: a private PostgreSQL started for the
 * demo and removed after it), `NUBES_DEMO_VERBOSE=1` (echo the processes' logs).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NubesError, openStore, runCommand } from '@nubes/core';
import { Inventory, planBalance } from '@nubes/scheduler';
import { freePort, startPostgres, type TestPostgres } from '@nubes/testing';
import { type Credentials, OpenstackCli } from '../cli.js';
import { buildGuestFiles, guestMissing } from '../guest/index.js';
import { SimulatedHosts } from '../hosts/index.js';
import { CloudProcess } from './processes.js';
import {
  addressOf,
  bootServer,
  createTenantNetwork,
  pingSequence,
  type Row,
  uploadTinyImage,
} from './scenario.js';
import { Steps, seconds } from './steps.js';

const ADMIN: Credentials = { user: 'admin', password: 'demo-admin-pw', project: 'admin' };
const ALICE: Credentials = { user: 'alice', password: 'alice-demo-pw', project: 'demo' };
const HOSTS = 3;
const verbose = process.env.NUBES_DEMO_VERBOSE === '1';
const echo = verbose ? (line: string) => console.log(`     ${line}`) : undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const missing = guestMissing();
  if (missing)
    throw new NubesError('Unavailable', `the demo guest cannot be built: ${missing} (run scripts/setup.sh)`);
  const steps = new Steps();
  const dir = mkdtempSync(join(tmpdir(), 'nubes-demo-'));
  const owner = `rcdemo-${process.pid % 100_000}`;
  let pg: TestPostgres | undefined;
  let hosts: SimulatedHosts | undefined;
  const processes: CloudProcess[] = [];
  let cleanExit = false;
  try {
    // ---------------------------------------------------------------- the cloud
    const { storeUrl, cli } = await steps.run(
      `Start the cloud: PostgreSQL, ${HOSTS} simulated hosts, the API and one compute agent per host`,
      async (say) => {
        let storeUrl = process.env.NUBES_DEMO_POSTGRES;
        if (!storeUrl) {
          pg = await startPostgres();
          storeUrl = pg.url;
        }
        say(`state: PostgreSQL at ${storeUrl.replace(/\/\/[^@]*@/, '//')}`);
        hosts = await SimulatedHosts.create({ count: HOSTS, owner });
        for (const h of hosts.hosts)
          say(`host ${h.name}: namespace ${h.namespace}, underlay ${h.underlayIp}`);
        const dataDir = join(dir, 'data');
        const port = await freePort();
        const api = CloudProcess.start(
          'api',
          'main.ts',
          {
            NUBES_STORE: storeUrl,
            NUBES_DATA: dataDir,
            NUBES_API_PORT: String(port),
            OS_USERNAME: ADMIN.user,
            OS_PASSWORD: ADMIN.password,
            OS_PROJECT_NAME: ADMIN.project,
          },
          echo,
        );
        processes.push(api);
        await api.waitFor(/reference cloud API on (\S+)/);
        for (const h of hosts.hosts) {
          const agent = CloudProcess.start(
            `agent ${h.name}`,
            'agent/main.ts',
            {
              NUBES_STORE: storeUrl,
              NUBES_DATA: dataDir,
              NUBES_HOST: h.name,
              NUBES_NAMESPACE: h.namespace,
              NUBES_UNDERLAY_IP: h.underlayIp,
            },
            echo,
          );
          processes.push(agent);
        }
        await Promise.all(processes.slice(1).map((p) => p.waitFor(/compute agent \S+ ready/)));
        const authUrl = `http://127.0.0.1:${port}/v3`;
        say(
          `API: ${authUrl} (pid ${api.child.pid}); agents: ${processes
            .slice(1)
            .map((p) => `${p.name} (pid ${p.child.pid})`)
            .join(', ')}`,
        );
        return { storeUrl, cli: new OpenstackCli(authUrl, { timeoutMs: 240_000 }) };
      },
    );

    const hypervisors = await steps.run('openstack hypervisor list (admin)', async (say) => {
      const list = await cli.json<Row[]>(ADMIN, ['hypervisor', 'list']);
      for (const h of list) say(`${h['Hypervisor Hostname']}  ${h.State}  ${h['Host IP'] ?? ''}`);
      if (list.length !== HOSTS)
        throw new NubesError('Internal', `expected ${HOSTS} hypervisors, got ${list.length}`);
      return list;
    });

    // ---------------------------------------------------------------- a tenant
    await steps.run('A new project and user with the member role', async (say) => {
      await cli.json(ADMIN, ['project', 'create', '--description', 'the demo tenant', ALICE.project]);
      await cli.json(ADMIN, [
        'user',
        'create',
        '--password',
        ALICE.password,
        '--project',
        ALICE.project,
        ALICE.user,
      ]);
      await cli.quiet(ADMIN, ['role', 'add', '--user', ALICE.user, '--project', ALICE.project, 'member']);
      await cli.quiet(ADMIN, ['quota', 'set', '--instances', '2', ALICE.project]);
      say(`project ${ALICE.project}, user ${ALICE.user} (member), quota: 2 instances`);
      const token = await cli.json(ALICE, ['token', 'issue']);
      say(`alice logs in: token for project ${token.project_id}, expires ${token.expires}`);
    });

    const imageId = await steps.run(
      'Upload a tiny bootable image (kernel + ramdisk + disk, linked by kernel_id and ramdisk_id)',
      async (say) => {
        const files = await buildGuestFiles(join(dir, 'guest'));
        const { kernel, ramdisk, disk } = await uploadTinyImage(cli, ALICE, files);
        // The CLI prints the record it created before the upload; show what the upload made of each.
        for (const created of [kernel, ramdisk, disk]) {
          const i = await cli.json(ALICE, ['image', 'show', String(created.id)]);
          say(`${i.name}: ${i.status}, ${i.disk_format}, ${i.size} bytes, md5 ${i.checksum}`);
        }
        return disk.id as string;
      },
    );

    await steps.run('Network, subnet and router; a security group allowing ICMP and TCP 22', async (say) => {
      const { network, subnet } = await createTenantNetwork(cli, ALICE, {
        network: 'demo-net',
        subnet: 'demo-subnet',
        router: 'demo-router',
        group: 'web',
      });
      say(
        `network ${network.id} (${subnet.cidr}, gateway ${subnet.gateway_ip}); router demo-router on it; group web: icmp, tcp/22`,
      );
    });

    const group = await steps.run('A server group with the anti-affinity policy', async (say) => {
      const g = await cli.json(ALICE, ['server', 'group', 'create', '--policy', 'anti-affinity', 'spread']);
      say(`server group spread: ${g.id} (${g.policy ?? g.policies})`);
      return g.id as string;
    });

    const boot = (name: string, extra: string[] = []) =>
      bootServer(cli, ALICE, {
        name,
        image: imageId,
        network: 'demo-net',
        securityGroup: 'web',
        serverGroup: group,
        extra,
      });
    const hostOf = async (id: string): Promise<string> => {
      const s = await cli.json(ADMIN, ['server', 'show', id]);
      return String(s['OS-EXT-SRV-ATTR:host']);
    };

    const [vm1, vm2] = await steps.run(
      'Boot two servers in the group: they land on different hosts',
      async (say) => {
        const vm1 = await boot('vm1');
        const ip1 = addressOf(vm1);
        // vm2's guest pings vm1 from boot on (the demo guest reads `nubes_ping` from the server's metadata).
        const vm2 = await boot('vm2', ['--property', `nubes_ping=${ip1}`]);
        for (const s of [vm1, vm2])
          say(`${s.name}: ${s.status} on ${await hostOf(String(s.id))}, ${addressOf(s)}`);
        const [h1, h2] = [await hostOf(String(vm1.id)), await hostOf(String(vm2.id))];
        if (h1 === h2) throw new NubesError('Internal', `anti-affinity broken: both on ${h1}`);
        return [vm1, vm2];
      },
    );

    const pings = (): Promise<number[]> => pingSequence(cli, ALICE, String(vm2.id));
    await steps.run('vm2 pings vm1 over the VXLAN overlay (openstack console log show vm2)', async (say) => {
      const deadline = Date.now() + 60_000;
      let seqs = await pings();
      while (seqs.length < 3 && Date.now() < deadline) {
        await sleep(1000);
        seqs = await pings();
      }
      const r = await cli.run(ALICE, ['console', 'log', 'show', '--lines', '200', String(vm2.id)], false);
      for (const line of r.stdout
        .split('\n')
        .filter((l) => l.includes('seq='))
        .slice(-3))
        say(line.trim());
      if (seqs.length < 3) throw new NubesError('Internal', 'vm2 never got a ping reply from vm1');
    });

    await steps.run('Live-migrate vm1 to the third host while vm2 keeps pinging it', async (say) => {
      const used = new Set([await hostOf(String(vm1.id)), await hostOf(String(vm2.id))]);
      const target = hypervisors
        .map((h) => String(h['Hypervisor Hostname']))
        .find((h) => !used.has(h)) as string;
      const before = await pings();
      const t0 = Date.now();
      await cli.quiet(ADMIN, [
        '--os-compute-api-version',
        '2.30',
        'server',
        'migrate',
        '--live-migration',
        '--host',
        target,
        '--wait',
        String(vm1.id),
      ]);
      const took = Date.now() - t0;
      await sleep(3000);
      const after = await pings();
      const newer = after.filter((s) => s > Math.max(-1, ...before));
      const last = Math.max(...after);
      const lost = Math.max(0, last - Math.max(-1, ...before) - newer.length);
      say(`vm1 now on ${await hostOf(String(vm1.id))} (migration took ${seconds(took)})`);
      say(`ping: ${before.length} replies before, ${newer.length} during and after, ${lost} lost`);
      if (newer.length === 0)
        throw new NubesError('Internal', 'the ping did not continue after the migration');
    });

    await steps.run('Quota: usage, then a third server over the limit', async (say) => {
      const limits = await cli.json<Row[]>(ALICE, ['limits', 'show', '--absolute']);
      for (const l of limits.filter((x) => /Instances|Cores|RAM/.test(String(x.Name))))
        say(`${l.Name}: ${l.Value}`);
      const r = await cli.run(ALICE, [
        'server',
        'create',
        '--flavor',
        'm1.nano',
        '--image',
        imageId,
        '--network',
        'demo-net',
        'vm3',
      ]);
      if (r.exitCode === 0) throw new NubesError('Internal', 'a third server was accepted over the quota');
      say(`refused: ${r.stderr.trim().split('\n').pop()}`);
    });

    await steps.run('The rebalancing planner over the hosts (a plan only; nothing moves)', async (say) => {
      const store = openStore(storeUrl);
      try {
        const plan = planBalance(await new Inventory(store).snapshot(), { targetStdDev: 0.01 });
        const loads = Object.entries(plan.before.perHost).map(([h, l]) => `${h} ${(l * 100).toFixed(1)}%`);
        say(`host load: ${loads.join(', ')} (std dev ${plan.before.stdDev.toFixed(3)})`);
        say(`after the plan: std dev ${plan.after.stdDev.toFixed(3)}`);
        for (const m of plan.moves) say(`move ${m.instanceId} ${m.from} -> ${m.to}: ${m.reason}`);
        if (plan.moves.length === 0) say(`no move (${plan.stoppedBecause})`);
      } finally {
        await store.close();
      }
    });

    await steps.run('Tear down: servers, router, network, security group, images', async (say) => {
      await cli.quiet(ALICE, ['server', 'delete', '--wait', String(vm1.id), String(vm2.id)]);
      await cli.quiet(ALICE, ['server', 'group', 'delete', group]);
      await cli.quiet(ALICE, ['router', 'remove', 'subnet', 'demo-router', 'demo-subnet']);
      await cli.quiet(ALICE, ['router', 'delete', 'demo-router']);
      await cli.quiet(ALICE, ['subnet', 'delete', 'demo-subnet']);
      await cli.quiet(ALICE, ['network', 'delete', 'demo-net']);
      await cli.quiet(ALICE, ['security', 'group', 'delete', 'web']);
      await cli.quiet(ALICE, ['image', 'delete', 'tiny', 'tiny-kernel', 'tiny-ramdisk']);
      const left = await cli.json<Row[]>(ALICE, ['server', 'list']);
      say(`servers left: ${left.length}`);
    });
    cleanExit = true;
  } finally {
    await teardown(steps, processes, hosts, owner, dir, pg, cleanExit);
  }
}

/** Stops everything and proves nothing is left: no namespace, interface, QEMU process or nftables table. */
async function teardown(
  steps: Steps,
  processes: CloudProcess[],
  hosts: SimulatedHosts | undefined,
  owner: string,
  dir: string,
  pg: TestPostgres | undefined,
  checked: boolean,
): Promise<void> {
  const run = async () => {
    for (const p of processes.slice().reverse()) await p.stop();
    await hosts?.destroy();
    await pg?.stop();
  };
  if (!checked) {
    await run().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  await steps.run('Stop the agents and the API, remove the hosts; check what is left', async (say) => {
    await run();
    const namespaces = (await runCommand('ip', ['netns', 'list'])).stdout
      .split('\n')
      .filter((l) => l.startsWith(owner));
    const links = (await runCommand('ip', ['-o', 'link', 'show'])).stdout
      .split('\n')
      .filter((l) => l.includes(owner));
    const qemu = (await runCommand('pgrep', ['-f', dir], { okExitCodes: [0, 1] })).stdout
      .trim()
      .split('\n')
      .filter(Boolean);
    const tables = (await runCommand('nft', ['list', 'tables'])).stdout
      .split('\n')
      .filter((l) => l.includes(owner));
    say(
      `namespaces: ${namespaces.length}, interfaces: ${links.length}, QEMU processes: ${qemu.length}, nftables tables: ${tables.length}`,
    );
    rmSync(dir, { recursive: true, force: true });
    if (namespaces.length + links.length + qemu.length + tables.length > 0)
      throw new NubesError(
        'Internal',
        `left behind: ${[...namespaces, ...links, ...qemu, ...tables].join('; ')}`,
      );
  });
  console.log(`\nThe demo finished in ${steps.elapsed()}.`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
