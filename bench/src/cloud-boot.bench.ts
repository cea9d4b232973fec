import { join } from 'node:path';
import { SqliteStore } from '@nubes/core';
import { Vm } from '@nubes/kvm';
import { ComputeAgent } from '../../examples/reference-cloud/src/agent/index.js';
import { ReferenceCloud } from '../../examples/reference-cloud/src/cloud.js';
import {
  buildGuestFiles,
  GUEST_COMMAND_LINE,
  GUEST_READY_MARKER,
  guestMissing,
  uploadGuestImages,
} from '../../examples/reference-cloud/src/guest/index.js';
import { SimulatedHosts } from '../../examples/reference-cloud/src/hosts/index.js';
import { type BenchGroup, defineBenchmarks } from './harness.js';

// Servers scheduled and booted through the whole cloud (API, quota, scheduler, ports, agents on three
// simulated hosts, VXLAN wiring, QEMU under TCG) until ACTIVE, then deleted until gone, against the same
// number of bare QEMU processes started with @nubes/kvm from the same kernel and ramdisk, waited for the same
// ready line, then killed. The ratio is what the cloud adds around QEMU itself. Servers per minute is
// ops/s x 60.

const SERVERS = 6;
const ADMIN = { user: 'admin', password: 'bench-admin-pw', project: 'admin' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export default defineBenchmarks({
  name: `Reference cloud: ${SERVERS} servers booted to ACTIVE and deleted across 3 simulated hosts, against ${SERVERS} bare QEMU guests started and killed`,
  async setup(context) {
    const missing = guestMissing();
    if (missing || process.getuid?.() !== 0) {
      console.warn(`[bench] cloud-boot skipped: ${missing ?? 'needs root'}`);
      return { groups: [] };
    }
    const dataDir = join(context.tmpDir, 'boot-data');
    const store = new SqliteStore({ path: join(context.tmpDir, 'boot.db'), durability: 'normal' });
    const cloud = await ReferenceCloud.open({ store, dataDir, admin: ADMIN });
    const base = `http://127.0.0.1:${await cloud.listen(0)}`;
    const hosts = await SimulatedHosts.create({ count: 3, owner: `rcb-${process.pid % 100_000}` });
    const agents: ComputeAgent[] = [];
    for (const host of hosts.hosts) {
      const agent = new ComputeAgent({ parts: cloud.parts, host, dataDir, accelerator: 'tcg' });
      await agent.start();
      agents.push(agent);
    }
    const files = await buildGuestFiles(join(context.tmpDir, 'guest'));
    const guest = await uploadGuestImages(cloud.parts.images, files, { owner: cloud.adminProjectId });
    const network = await cloud.parts.vpc.createNetwork({ tenant: cloud.adminProjectId });
    await cloud.parts.vpc.createSubnet({
      tenant: cloud.adminProjectId,
      networkId: network.id,
      cidr: '10.0.0.0/24',
    });

    const login = await fetch(`${base}/v3/auth/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        auth: {
          identity: {
            methods: ['password'],
            password: { user: { name: ADMIN.user, domain: { name: 'Default' }, password: ADMIN.password } },
          },
          scope: { project: { name: ADMIN.project, domain: { name: 'Default' } } },
        },
      }),
    });
    const token = login.headers.get('x-subject-token') as string;
    const headers = { 'x-auth-token': token, 'content-type': 'application/json' };
    const list = async (): Promise<{ id: string; status: string; fault?: { message: string } }[]> => {
      const r = await fetch(`${base}/compute/v2.1/servers/detail`, { headers });
      return ((await r.json()) as { servers: { id: string; status: string }[] }).servers;
    };

    let round = 0;
    const bootThroughCloud = async (): Promise<void> => {
      round += 1;
      const ids: string[] = [];
      for (let i = 0; i < SERVERS; i++) {
        const r = await fetch(`${base}/compute/v2.1/servers`, {
          method: 'POST',
          headers,
          body: JSON.stringify({
            server: {
              name: `b${round}-${i}`,
              flavorRef: '42',
              imageRef: guest.diskId,
              networks: [{ uuid: network.id }],
            },
          }),
        });
        if (r.status !== 202) throw new Error(`create: HTTP ${r.status} ${await r.text()}`);
        ids.push(((await r.json()) as { server: { id: string } }).server.id);
      }
      for (;;) {
        const servers = (await list()).filter((s) => ids.includes(s.id));
        const failed = servers.find((s) => s.status === 'ERROR');
        if (failed) throw new Error(`server ${failed.id} failed: ${failed.fault?.message}`);
        if (servers.every((s) => s.status === 'ACTIVE')) break;
        await sleep(100);
      }
      for (const id of ids) await fetch(`${base}/compute/v2.1/servers/${id}`, { method: 'DELETE', headers });
      while ((await list()).some((s) => ids.includes(s.id))) await sleep(100);
    };

    const bootBare = async (): Promise<void> => {
      round += 1;
      const vms = Array.from({ length: SERVERS }, (_, i) =>
        Vm.define(
          {
            name: `bare${round}-${i}`,
            accel: 'tcg',
            memoryMiB: 128,
            boot: {
              from: 'kernel',
              kernel: files.kernel,
              initrd: files.ramdisk,
              cmdline: GUEST_COMMAND_LINE,
            },
          },
          { runRoot: join(context.tmpDir, 'bare') },
        ),
      );
      // Started one after another, as the API's creates arrive, then all waited for together.
      for (const vm of vms) await vm.start();
      await Promise.all(
        vms.map((vm) => vm.console.waitFor(new RegExp(GUEST_READY_MARKER), { timeoutMs: 120_000 })),
      );
      await Promise.all(vms.map((vm) => vm.kill()));
    };

    const groups: BenchGroup[] = [
      {
        name: `${SERVERS} servers: boot to ACTIVE, then delete`,
        iterations: 3,
        timeMs: 1,
        noWarmup: true,
        cases: [
          {
            name: `bare QEMU via @nubes/kvm`,
            fn: bootBare,
            opsPerRun: SERVERS,
            reference: true,
          },
          { name: 'reference cloud API + agents', fn: bootThroughCloud, opsPerRun: SERVERS },
        ],
      },
    ];
    return {
      groups,
      async teardown() {
        for (const agent of agents) await agent.stop({ killGuests: true }).catch(() => {});
        await hosts.destroy();
        await cloud.close();
        await store.close();
      },
    };
  },
});
