/**
 * The compute API driven by the real `openstack` CLI (novaclient at 2.1, openstacksdk up to 2.64) and raw
 * HTTP. No agent runs here: hosts are registered directly, so servers stay in BUILD on their host with
 * task `spawning`, which is what the API side is responsible for.
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ServerRecord, serverKey } from '../src/compute/model.js';
import {
  ADMIN,
  createMember,
  describeCloud,
  startTestCloud,
  type TestCloud,
  type Who,
} from './helpers/cloud.js';

/** The parts of Nova's answers these tests read. */
interface NovaBody {
  flavors?: Record<string, unknown>[];
  servers?: { id: string; [key: string]: unknown }[];
  hypervisors?: { running_vms: number }[];
  itemNotFound?: { message: string };
  badRequest?: { message: string };
}

describeCloud('compute API (nova)', () => {
  let t: TestCloud;
  let alice: Who;
  let bob: Who;
  let projectA: string;
  let projectB: string;
  let imageId: string;
  let netA: string;
  let netB: string;
  const HOSTS = ['cn-1', 'cn-2', 'cn-3'];

  const record = async (id: string) => (await t.store.get<ServerRecord>(serverKey(id)))?.value;
  const servers = async () =>
    (await t.store.list<ServerRecord>('compute/servers/')).items.map((e) => e.value);
  const nova = async (
    who: Who,
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const response = await fetch(`${t.base}/compute/v2.1${path}`, {
      method,
      headers: {
        'x-auth-token': await t.token(who),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    return {
      status: response.status,
      headers: response.headers,
      body: (text ? JSON.parse(text) : {}) as NovaBody,
    };
  };
  const usage = async (who: Who, project: string) => {
    const rows = await t.ok<{ Resource: string; 'In Use': number; Reserved: number; Limit: number }[]>(who, [
      'quota',
      'list',
      '--compute',
      '--detail',
      '--project',
      project,
    ]);
    const instances = rows.find((r) => r.Resource === 'instances');
    return { instances: (instances?.['In Use'] ?? 0) + (instances?.Reserved ?? 0), limit: instances?.Limit };
  };

  beforeAll(async () => {
    t = await startTestCloud();
    const { inventory, vpc, images } = t.cloud.parts;
    for (const [i, id] of HOSTS.entries()) {
      await inventory.registerHost({ id, name: id, capacity: { vcpus: 4, memoryMiB: 4096, diskGiB: 40 } });
      await vpc.registerHost({ name: id, underlayIp: `192.0.2.${i + 1}` });
    }
    alice = await createMember(t, 'compute-a', 'alice');
    bob = await createMember(t, 'compute-b', 'bob');
    projectA = (await t.ok<{ id: string }>(ADMIN, ['project', 'show', 'compute-a'])).id;
    projectB = (await t.ok<{ id: string }>(ADMIN, ['project', 'show', 'compute-b'])).id;
    for (const [tenant, set] of [
      [
        projectA,
        (id: string) => {
          netA = id;
        },
      ],
      [
        projectB,
        (id: string) => {
          netB = id;
        },
      ],
    ] as const) {
      const net = await vpc.createNetwork({ tenant, name: `net-${tenant.slice(0, 4)}` });
      await vpc.createSubnet({ tenant, networkId: net.id, cidr: '10.10.0.0/24' });
      set(net.id);
    }
    const file = join(t.dir, 'tiny.raw');
    await runCommand('qemu-img', ['create', '-f', 'raw', file, '1M']);
    const image = await images.create({
      name: 'tiny',
      owner: t.cloud.adminProjectId,
      diskFormat: 'raw',
      containerFormat: 'bare',
      visibility: 'public',
    });
    imageId = (await images.upload(image.id, createReadStream(file))).id;
  });
  afterAll(async () => {
    await t?.close();
  });

  it('serves the version documents and negotiates microversions', async () => {
    const root = await fetch(`${t.base}/compute/`);
    expect(root.status).toBe(200);
    const doc = (await root.json()) as { versions: { id: string; version: string; min_version: string }[] };
    expect(doc.versions[0]).toMatchObject({ id: 'v2.1', version: '2.73', min_version: '2.1' });
    const tooNew = await nova(alice, 'GET', '/flavors', undefined, {
      'OpenStack-API-Version': 'compute 2.200',
    });
    expect(tooNew.status).toBe(406);
    expect(JSON.stringify(tooNew.body)).toMatch(/Version 2.200 is not supported/);
    const at61 = await nova(alice, 'GET', '/flavors/detail', undefined, {
      'OpenStack-API-Version': 'compute 2.61',
    });
    expect(at61.headers.get('openstack-api-version')).toBe('compute 2.61');
    expect(at61.headers.get('vary')).toMatch(/OpenStack-API-Version/);
    expect(at61.body.flavors?.[0]).toHaveProperty('extra_specs');
    const legacy = await nova(alice, 'GET', '/flavors', undefined, {
      'X-OpenStack-Nova-API-Version': 'latest',
    });
    expect(legacy.headers.get('x-openstack-nova-api-version')).toBe('2.73');
    expect(
      (await nova(alice, 'GET', '/flavors', undefined, { 'X-OpenStack-Nova-API-Version': 'two' })).status,
    ).toBe(400);
  });

  it('lists and shows the seeded flavors; only admins create them', async () => {
    const flavors = await t.ok<{ Name: string; RAM: number }[]>(alice, ['flavor', 'list']);
    expect(flavors.map((f) => f.Name)).toEqual(
      expect.arrayContaining(['m1.nano', 'm1.micro', 'm1.tiny', 'm1.small']),
    );
    expect(await t.ok(alice, ['flavor', 'show', 'm1.nano'])).toMatchObject({
      name: 'm1.nano',
      ram: 128,
      vcpus: 1,
      disk: 1,
    });
    const refused = await t.openstack(alice, [
      'flavor',
      'create',
      '--ram',
      '64',
      '--disk',
      '1',
      '--vcpus',
      '1',
      'mine',
    ]);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/403/);
    // Larger than any host (4 GiB) but within the default quota (50 GiB): it fails placement, not quota.
    await t.ok(ADMIN, ['flavor', 'create', '--ram', '8192', '--disk', '1', '--vcpus', '1', 'm1.huge']);
  });

  let vm1: string;
  it('creates a server on a host with a port and addresses', async () => {
    const created = await t.ok<{ id: string; status: string }>(alice, [
      'server',
      'create',
      '--flavor',
      'm1.nano',
      '--image',
      imageId,
      '--network',
      netA,
      'vm1',
    ]);
    vm1 = created.id;
    expect(created.status).toBe('BUILD');
    const r = (await record(vm1)) as ServerRecord;
    expect(HOSTS).toContain(r.host);
    expect(r).toMatchObject({
      status: 'BUILD',
      task: 'spawning',
      projectId: projectA,
      flavorId: '42',
      imageId,
    });
    expect(r.ports).toHaveLength(1);
    expect(r.ports[0]?.ip).toMatch(/^10\.10\.0\.\d+$/);
    expect(r.reservationId).toBeTruthy();
    const shown = await t.ok<{ name: string; addresses: unknown; status: string }>(alice, [
      'server',
      'show',
      'vm1',
    ]);
    expect(shown).toMatchObject({ name: 'vm1', status: 'BUILD' });
    expect(JSON.stringify(shown.addresses)).toContain(r.ports[0]?.ip as string);
    const list = await t.ok<{ Name: string; ID: string }[]>(alice, ['server', 'list', '--name', 'vm1']);
    expect(list.map((s) => s.ID)).toEqual([vm1]);
  });

  it('spreads an anti-affinity server group over hosts', async () => {
    const group = await t.ok<{ id: string }>(alice, [
      'server',
      'group',
      'create',
      '--policy',
      'anti-affinity',
      'spread',
    ]);
    const ids: string[] = [];
    for (const name of ['aa-1', 'aa-2'])
      ids.push(
        (
          await t.ok<{ id: string }>(alice, [
            'server',
            'create',
            '--flavor',
            'm1.nano',
            '--image',
            imageId,
            '--network',
            netA,
            '--hint',
            `group=${group.id}`,
            name,
          ])
        ).id,
      );
    const hosts = await Promise.all(ids.map(async (id) => (await record(id))?.host));
    expect(new Set(hosts).size).toBe(2);
    const shown = await t.ok<{ members: string; policy: string }>(alice, [
      'server',
      'group',
      'show',
      'spread',
    ]);
    expect(shown.policy).toBe('anti-affinity');
    for (const id of ids) expect(JSON.stringify(shown.members)).toContain(id);
  });

  it("hides another project's servers (404)", async () => {
    const shown = await t.openstack(bob, ['server', 'show', vm1]);
    expect(shown.exitCode).not.toBe(0);
    const raw = await nova(bob, 'GET', `/servers/${vm1}`);
    expect(raw.status).toBe(404);
    expect(raw.body.itemNotFound?.message).toMatch(/could not be found/);
    expect((await nova(bob, 'GET', '/servers/detail')).body.servers).toEqual([]);
    const all = await nova(ADMIN, 'GET', '/servers/detail?all_tenants=1');
    expect(all.body.servers?.map((s) => s.id)).toContain(vm1);
    expect(all.body.servers?.[0]).toHaveProperty('OS-EXT-SRV-ATTR:host');
    expect((await nova(bob, 'GET', '/servers/detail?all_tenants=1')).status).toBe(403);
  });

  it('refuses a server over the instances quota, cleanly and without using any', async () => {
    for (const name of ['b-1', 'b-2']) {
      const made = await nova(bob, 'POST', '/servers', {
        server: { name, imageRef: imageId, flavorRef: '42', networks: [{ uuid: netB }] },
      });
      expect(made.status).toBe(202);
    }
    const set = await t.openstack(ADMIN, ['quota', 'set', '--instances', '2', projectB], false);
    expect(set.exitCode, set.stderr).toBe(0);
    const before = await usage(ADMIN, projectB);
    expect(before).toEqual({ instances: 2, limit: 2 });
    const count = (await servers()).length;
    const third = await t.openstack(bob, [
      'server',
      'create',
      '--flavor',
      'm1.nano',
      '--image',
      imageId,
      '--network',
      netB,
      'b-3',
    ]);
    expect(third.exitCode).not.toBe(0);
    expect(third.stderr).toMatch(
      /Quota exceeded for instances: Requested 1, but already used 2 of 2 instances/,
    );
    expect(third.stderr).toMatch(/403/);
    expect(await usage(ADMIN, projectB)).toEqual(before);
    expect((await servers()).length).toBe(count);
  });

  it('puts a server no host can take in ERROR with a NoValidHost fault, gives its quota back, deletes it', async () => {
    const before = await usage(ADMIN, projectA);
    const made = await t.ok<{ id: string; status: string; fault: unknown }>(alice, [
      'server',
      'create',
      '--flavor',
      'm1.huge',
      '--image',
      imageId,
      '--network',
      netA,
      'too-big',
    ]);
    expect(made.status).toBe('ERROR');
    const r = (await record(made.id)) as ServerRecord;
    expect(r.host).toBeUndefined();
    expect(r.fault?.message).toMatch(
      /^No valid host was found\. 0\/3 hosts are available: 3 insufficient memoryMiB/,
    );
    expect(JSON.stringify(made.fault)).toMatch(/No valid host/);
    expect(await usage(ADMIN, projectA)).toEqual(before);
    const deleted = await t.openstack(alice, ['server', 'delete', made.id], false);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(await record(made.id)).toBeUndefined();
  });

  it('hands a placed server to its agent on delete, stop and live migration', async () => {
    // No agent here: pretend vm1 booted, as its agent would have recorded.
    const entry = await t.store.get<ServerRecord>(serverKey(vm1));
    const booted = {
      ...(entry?.value as ServerRecord),
      status: 'ACTIVE' as const,
      task: null,
      powerState: 1 as const,
    };
    await t.store.put(serverKey(vm1), JSON.parse(JSON.stringify(booted)), {
      ifRevision: entry?.revision ?? 0,
    });
    const migrate = { 'os-migrateLive': { host: null, block_migration: 'auto' } };
    expect((await nova(alice, 'POST', `/servers/${vm1}/action`, migrate)).status).toBe(403);
    expect((await nova(ADMIN, 'POST', `/servers/${vm1}/action`, migrate)).status).toBe(202);
    const migrating = (await record(vm1)) as ServerRecord;
    expect(migrating).toMatchObject({ status: 'MIGRATING', task: 'migrating' });
    expect(migrating.migration?.sourceHost).toBe(booted.host);
    expect(migrating.migration?.targetHost).not.toBe(booted.host);
    expect((await t.cloud.parts.inventory.getAllocation(vm1)).hostId).toBe(migrating.migration?.targetHost);
    // A task in flight refuses another.
    expect((await nova(alice, 'POST', `/servers/${vm1}/action`, { 'os-stop': null })).status).toBe(409);
    const deleted = await t.openstack(alice, ['server', 'delete', 'vm1'], false);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect((await record(vm1))?.task).toBe('deleting');
  });

  it('shows hypervisors to admins only, and availability zones to all', async () => {
    const hypervisors = await t.ok<{ 'Hypervisor Hostname': string }[]>(ADMIN, ['hypervisor', 'list']);
    expect(hypervisors.map((h) => h['Hypervisor Hostname']).sort()).toEqual(HOSTS);
    expect(await t.ok(ADMIN, ['hypervisor', 'show', 'cn-1'])).toMatchObject({
      hypervisor_hostname: 'cn-1',
      vcpus: 4,
    });
    const refused = await t.openstack(alice, ['hypervisor', 'list']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/403/);
    const detail = await nova(ADMIN, 'GET', '/os-hypervisors/detail');
    const used = (detail.body.hypervisors ?? []).reduce((n, h) => n + h.running_vms, 0);
    expect(used).toBeGreaterThanOrEqual(4);
    const zones = await t.ok<{ 'Zone Name': string; 'Zone Status': string }[]>(alice, [
      'availability',
      'zone',
      'list',
      '--compute',
    ]);
    expect(zones).toEqual([expect.objectContaining({ 'Zone Name': 'nova', 'Zone Status': 'available' })]);
  });

  it('refuses bad input with a 400 naming the field and creates nothing', async () => {
    const count = (await servers()).length;
    const post = (body: unknown) => nova(alice, 'POST', '/servers', body);
    const missing = await post({ server: { name: 'x', imageRef: imageId, networks: [{ uuid: netA }] } });
    expect(missing.status).toBe(400);
    expect(missing.body.badRequest?.message).toMatch(/server\.flavorRef/);
    const malformed = await post('{"server": ');
    expect(malformed.status).toBe(400);
    expect(malformed.body.badRequest?.message).toMatch(/body/);
    const badUuid = await post({ server: { name: 'x', imageRef: 'not-a-uuid', flavorRef: '42' } });
    expect(badUuid.body.badRequest?.message).toMatch(/server\.imageRef/);
    const badNet = await post({
      server: { name: 'x', imageRef: imageId, flavorRef: '42', networks: [{ uuid: 'zz' }] },
    });
    expect(badNet.body.badRequest?.message).toMatch(/server\.networks\.0\.uuid/);
    const noFlavor = await post({
      server: { name: 'x', imageRef: imageId, flavorRef: 'nope', networks: [{ uuid: netA }] },
    });
    expect(noFlavor.status).toBe(400);
    expect(noFlavor.body.badRequest?.message).toMatch(/Flavor nope could not be found/);
    expect((await nova(alice, 'GET', '/servers/not-a-uuid')).status).toBe(404);
    expect((await nova(alice, 'POST', `/servers/${vm1}/action`, { resize: { flavorRef: '1' } })).status).toBe(
      501,
    );
    expect((await servers()).length).toBe(count);
  });
});
