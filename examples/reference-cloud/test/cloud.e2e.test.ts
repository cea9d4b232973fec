/**
 * The whole cloud, end to end: the API in this process, three simulated hosts with a compute agent each, real
 * QEMU guests (TCG) on VXLAN tenant networks, all driven by the real `openstack` CLI as a tenant and an admin
 * would drive it.
 */
import { join } from 'node:path';
import { runCommand } from '@nubes/core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  addressOf,
  bootServer,
  createTenantNetwork,
  pingSequence,
  uploadTinyImage,
} from '../src/demo/scenario.js';
import { buildGuestFiles } from '../src/guest/index.js';
import {
  ADMIN,
  createMember,
  describeCloud,
  startTestCloud,
  type TestCloud,
  type Who,
} from './helpers/cloud.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeCloud('reference cloud: servers booted, networked, migrated and deleted through the openstack CLI', () => {
  let t: TestCloud;
  let alice: Who;
  let imageId: string;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    t = await startTestCloud({ hosts: 3 });
    alice = await createMember(t, 'web', 'alice');
  });

  afterAll(async () => {
    await t?.close();
  });

  const show = (who: Who, id: string) => t.ok(who, ['server', 'show', id]);
  const hostOf = async (id: string) => String((await show(ADMIN, id))['OS-EXT-SRV-ATTR:host']);
  const pingSeqs = (id: string): Promise<number[]> => pingSequence(t.cli, alice, id);
  const waitFor = async <T>(
    what: string,
    probe: () => Promise<T | undefined>,
    timeoutMs = 60_000,
  ): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}\n${t.agentLog.slice(-30).join('\n')}`);
      await sleep(1000);
    }
  };

  it('uploads a kernel, a ramdisk and a disk linked by kernel_id and ramdisk_id', async () => {
    const files = await buildGuestFiles(join(t.dir, 'guest'));
    const { kernel, disk } = await uploadTinyImage(t.cli, alice, files);
    // openstackclient prints the record it created, before the upload: show what the upload made of it.
    expect(await t.ok(alice, ['image', 'show', String(disk.id)])).toMatchObject({
      status: 'active',
      disk_format: 'qcow2',
    });
    expect(await t.ok(alice, ['image', 'show', String(kernel.id)])).toMatchObject({
      status: 'active',
      disk_format: 'aki',
    });
    imageId = String(disk.id);
  }, 240_000);

  it('boots two servers of an anti-affinity group on different hosts; one pings the other over VXLAN', async () => {
    await createTenantNetwork(t.cli, alice, {
      network: 'net',
      subnet: 'subnet',
      router: 'router',
      group: 'web',
    });
    const group = await t.ok(alice, ['server', 'group', 'create', '--policy', 'anti-affinity', 'spread']);
    const boot = (name: string, extra: string[] = []) =>
      bootServer(t.cli, alice, {
        name,
        image: imageId,
        network: 'net',
        securityGroup: 'web',
        serverGroup: String(group.id),
        extra,
      });
    const vm1 = await boot('vm1');
    expect(vm1.status, t.agentLog.slice(-20).join('\n')).toBe('ACTIVE');
    const vm2 = await boot('vm2', ['--property', `nubes_ping=${addressOf(vm1)}`]);
    expect(vm2.status).toBe('ACTIVE');
    ids.vm1 = String(vm1.id);
    ids.vm2 = String(vm2.id);
    expect(await hostOf(ids.vm1)).not.toBe(await hostOf(ids.vm2));
    // A tenant never sees which host runs its server.
    expect((await show(alice, ids.vm1))['OS-EXT-SRV-ATTR:host']).toBeUndefined();

    const seqs = await waitFor('ping replies on vm2', async () => {
      const s = await pingSeqs(ids.vm2 as string);
      return s.length >= 3 ? s : undefined;
    });
    expect(seqs.length).toBeGreaterThanOrEqual(3);
  }, 240_000);

  it('live-migrates the pinged server to the third host while the ping goes on; a member may not migrate', async () => {
    const vm1 = ids.vm1 as string;
    const refused = await t.openstack(
      alice,
      ['--os-compute-api-version', '2.30', 'server', 'migrate', '--live-migration', '--host', 'h3', vm1],
      false,
    );
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain('HTTP 403');

    const used = new Set([await hostOf(vm1), await hostOf(ids.vm2 as string)]);
    const target = ['h1', 'h2', 'h3'].find((h) => !used.has(h)) as string;
    const before = Math.max(...(await pingSeqs(ids.vm2 as string)));
    const migrated = await t.openstack(
      ADMIN,
      [
        '--os-compute-api-version',
        '2.30',
        'server',
        'migrate',
        '--live-migration',
        '--host',
        target,
        '--wait',
        vm1,
      ],
      false,
    );
    expect(migrated.exitCode, `${migrated.stderr}\n${t.agentLog.slice(-20).join('\n')}`).toBe(0);
    expect(await hostOf(vm1)).toBe(target);
    expect((await show(ADMIN, vm1)).status).toBe('ACTIVE');
    const after = await waitFor('pings after the migration', async () => {
      const s = (await pingSeqs(ids.vm2 as string)).filter((n) => n > before + 2);
      return s.length >= 3 ? s : undefined;
    });
    expect(after.length).toBeGreaterThanOrEqual(3);
  }, 240_000);

  it('stops and starts a server, refuses one over the quota, and deletes leaving nothing behind', async () => {
    const vm2 = ids.vm2 as string;
    expect((await t.openstack(alice, ['server', 'stop', vm2], false)).exitCode).toBe(0);
    await waitFor('SHUTOFF', async () => ((await show(alice, vm2)).status === 'SHUTOFF' ? true : undefined));
    expect((await t.openstack(alice, ['server', 'start', vm2], false)).exitCode).toBe(0);
    await waitFor('ACTIVE', async () => ((await show(alice, vm2)).status === 'ACTIVE' ? true : undefined));

    expect((await t.openstack(ADMIN, ['quota', 'set', '--instances', '2', 'web'], false)).exitCode).toBe(0);
    const over = await t.openstack(alice, [
      'server',
      'create',
      '--flavor',
      'm1.nano',
      '--image',
      imageId,
      '--network',
      'net',
      'vm3',
    ]);
    expect(over.exitCode).not.toBe(0);
    expect(over.stderr).toMatch(/Quota exceeded for instances/);

    const deleted = await t.openstack(alice, ['server', 'delete', '--wait', ids.vm1 as string, vm2], false);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(await t.ok<unknown[]>(alice, ['server', 'list'])).toEqual([]);
    const limits = await t.ok<{ Name: string; Value: number }[]>(alice, ['limits', 'show', '--absolute']);
    expect(limits.find((l) => l.Name === 'totalInstancesUsed')?.Value).toBe(0);
    expect(limits.find((l) => l.Name === 'totalCoresUsed')?.Value).toBe(0);
    const qemu = await runCommand('pgrep', ['-f', t.dir], { okExitCodes: [0, 1] });
    expect(qemu.stdout.trim()).toBe('');
    for (const host of t.hosts?.hosts ?? []) {
      const links = await t.hosts?.exec(host.name, ['ip', '-o', 'link', 'show']);
      expect(links?.stdout ?? '').not.toMatch(/ tap/);
    }
  }, 240_000);
}, ['root', 'qemu-system', 'qemu-img', 'ip', 'nft', 'busybox']);
