import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ImageApi } from '../src/api/image.js';
import { CloudServer } from '../src/api/server.js';
import {
  ADMIN,
  createMember,
  describeCloud,
  startTestCloud,
  type TestCloud,
  type Who,
} from './helpers/cloud.js';

/** What `openstack image show -f json` prints (the fields these tests read). */
interface ImageRow {
  id: string;
  name: string;
  status: string;
  visibility: string;
  disk_format: string;
  container_format: string;
  size: number;
  checksum: string;
  owner: string;
  tags: string[];
  properties: Record<string, string>;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex');

// The upload cap of the second API server the raw-HTTP test talks to.
const CAP = 64 * 1024;

describeCloud('reference cloud image API (Glance v2), driven by the real openstack CLI', () => {
  let t: TestCloud;
  let bob: Who;
  let webId: string;
  let qcow2: string;
  let qcow2Data: Buffer;
  let small: string;
  // Same cloud, same store, an image service with a small upload cap.
  let capped: CloudServer;
  let cappedBase: string;

  beforeAll(async () => {
    t = await startTestCloud();
    bob = await createMember(t, 'web', 'bob');
    webId = (await t.ok<{ id: string }>(ADMIN, ['project', 'show', 'web'])).id;
    qcow2 = join(t.dir, 'cirros.qcow2');
    await runCommand('qemu-img', ['create', '-f', 'qcow2', qcow2, '16M']);
    qcow2Data = readFileSync(qcow2);
    small = join(t.dir, 'small.raw');
    writeFileSync(small, randomBytes(4096));
    const { auth, adminProjectId, parts } = t.cloud;
    capped = new CloudServer({
      auth,
      services: [
        new ImageApi({ auth, adminProjectId, images: parts.images, quota: parts.quota, maxImageBytes: CAP }),
      ],
    });
    cappedBase = `http://127.0.0.1:${await capped.listen(0)}/image`;
  });

  afterAll(async () => {
    await capped?.close();
    await t?.close();
  });

  /** Deletes images over HTTP as the admin (cleanup: quicker than the CLI, and checked all the same). */
  const remove = async (...ids: string[]): Promise<void> => {
    const token = await t.token(ADMIN);
    for (const id of ids) {
      const r = await fetch(`${t.base}/image/v2/images/${id}`, {
        method: 'DELETE',
        headers: { 'x-auth-token': token },
      });
      expect(r.status).toBe(204);
    }
  };

  const names = async (who: Who): Promise<string[]> =>
    (await t.ok<{ Name: string }[]>(who, ['image', 'list'])).map((r) => r.Name).sort();

  it('lets an admin and a member upload, list, show, tag, download and delete qcow2 images', async () => {
    const flow = async (who: Who, name: string): Promise<void> => {
      const created = await t.ok<ImageRow>(who, [
        'image',
        'create',
        '--disk-format',
        'qcow2',
        '--container-format',
        'bare',
        '--file',
        qcow2,
        name,
      ]);
      // The CLI prints the image as the create answered it, before the upload.
      expect(created).toMatchObject({
        name,
        status: 'queued',
        disk_format: 'qcow2',
        container_format: 'bare',
      });
      expect(created.owner).toBe(who === ADMIN ? t.cloud.adminProjectId : webId);
      expect(await names(who)).toContain(name);

      // By name: the client GETs /v2/images/<name>, needs the 404, then lists with ?name=.
      const byName = await t.ok<ImageRow>(who, ['image', 'show', name]);
      const byId = await t.ok<ImageRow>(who, ['image', 'show', created.id]);
      expect(byName.id).toBe(created.id);
      expect(byId).toMatchObject({ size: qcow2Data.length, checksum: md5(qcow2Data), status: 'active' });

      const set = await t.openstack(
        who,
        ['image', 'set', '--property', 'os_distro=cirros', '--tag', 't1', name],
        false,
      );
      expect(set.exitCode, set.stderr).toBe(0);
      const after = await t.ok<ImageRow>(who, ['image', 'show', created.id]);
      expect(after.properties.os_distro).toBe('cirros');
      expect(after.tags).toEqual(['t1']);

      const out = join(t.dir, `${name}.out`);
      const saved = await t.openstack(who, ['image', 'save', '--file', out, name], false);
      expect(saved.exitCode, saved.stderr).toBe(0);
      const back = readFileSync(out);
      expect(sha256(back)).toBe(sha256(qcow2Data));
      expect(md5(back)).toBe(after.checksum);

      const deleted = await t.openstack(who, ['image', 'delete', name], false);
      expect(deleted.exitCode, deleted.stderr).toBe(0);
      const gone = await t.openstack(who, ['image', 'show', created.id]);
      expect(gone.exitCode).toBe(1);
      expect(gone.stderr).toContain('No Image found');
    };
    await Promise.all([flow(ADMIN, 'admin-cirros'), flow(bob, 'bob-cirros')]);
    expect((await t.cloud.parts.quota.usage(webId)).resources.images?.inUse).toBe(0);
  });

  it('holds the image count quota', async () => {
    const quota = t.cloud.parts.quota;
    await quota.setLimits(webId, { images: 1 });
    try {
      const args = ['image', 'create', '--disk-format', 'raw', '--container-format', 'bare', '--file', small];
      const first = await t.ok<ImageRow>(bob, [...args, 'only-one']);
      const refused = await t.openstack(bob, [...args, 'one-too-many']);
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toContain('403');
      expect(refused.stderr).toContain('images');
      expect(await names(bob)).toEqual(['only-one']);
      expect((await quota.usage(webId)).resources.images).toMatchObject({ inUse: 1, reserved: 0 });
      expect((await t.openstack(bob, ['image', 'delete', first.id], false)).exitCode).toBe(0);
      expect((await quota.usage(webId)).resources.images).toMatchObject({ inUse: 0, reserved: 0 });
    } finally {
      await quota.setLimits(webId, { images: null });
    }
  });

  it('keeps projects apart: private images are 404 to others, publicizing is admin-only, shares need accepting', async () => {
    const raw = ['--disk-format', 'raw', '--container-format', 'bare', '--file', small];
    const [secret, pub] = await Promise.all([
      t.ok<ImageRow>(ADMIN, ['image', 'create', '--private', ...raw, 'secret']),
      t.ok<ImageRow>(ADMIN, ['image', 'create', '--public', ...raw, 'pub']),
    ]);
    expect(pub.visibility).toBe('public');
    const [byName, byId, del] = await Promise.all([
      t.openstack(bob, ['image', 'show', 'secret']),
      t.openstack(bob, ['image', 'show', secret.id]),
      t.openstack(bob, ['image', 'delete', secret.id], false),
    ]);
    for (const hidden of [byName, byId]) {
      expect(hidden.exitCode).toBe(1);
      expect(hidden.stderr).toContain('No Image found');
    }
    expect(del.exitCode).toBe(1);
    // Over HTTP: the same 404 for the image and its data, not a 403 that would confirm it exists.
    const bobToken = await t.token(bob);
    for (const path of ['', '/file']) {
      const direct = await fetch(`${cappedBase}/v2/images/${secret.id}${path}`, {
        headers: { 'x-auth-token': bobToken },
      });
      expect(direct.status).toBe(404);
      expect(await direct.json()).toMatchObject({ code: '404 Not Found', title: 'Not Found' });
    }
    expect((await t.cloud.parts.images.get(secret.id)).status).toBe('active');

    expect(await names(bob)).toEqual(['pub']);
    // Visible is not writable: bob may not delete the admin's public image, nor publicize images at all.
    const [notMine, refusedCreate, mine] = await Promise.all([
      t.openstack(bob, ['image', 'delete', 'pub'], false),
      t.openstack(bob, ['image', 'create', '--public', ...raw, 'bob-public']),
      t.ok<ImageRow>(bob, ['image', 'create', ...raw, 'bob-own']),
    ]);
    expect(notMine.exitCode).toBe(1);
    expect(notMine.stderr).toContain('403');
    expect((await t.cloud.parts.images.get(pub.id)).status).toBe('active');
    expect(refusedCreate.exitCode).toBe(1);
    expect(refusedCreate.stderr).toContain('403');
    const refusedSet = await t.openstack(bob, ['image', 'set', '--public', 'bob-own'], false);
    expect(refusedSet.exitCode).toBe(1);
    expect(refusedSet.stderr).toContain('403');
    expect((await t.cloud.parts.images.get(mine.id)).visibility).toBe('shared');
    expect(await names(bob)).toEqual(['bob-own', 'pub']);
    expect(await names(ADMIN)).toEqual(['bob-own', 'pub', 'secret']);

    // A share is visible to the member at once, listed only once it accepts.
    const shared = await t.ok<ImageRow>(ADMIN, ['image', 'create', '--shared', ...raw, 'shared-with-web']);
    const added = await t.openstack(ADMIN, ['image', 'add', 'project', shared.id, 'web']);
    expect(added.exitCode, added.stderr).toBe(0);
    expect((await t.ok<ImageRow>(bob, ['image', 'show', shared.id])).name).toBe('shared-with-web');
    expect(await names(bob)).toEqual(['bob-own', 'pub']);
    const accepted = await t.openstack(bob, ['image', 'set', '--accept', shared.id], false);
    expect(accepted.exitCode, accepted.stderr).toBe(0);
    expect(await names(bob)).toEqual(['bob-own', 'pub', 'shared-with-web']);

    await remove(secret.id, pub.id, shared.id, mine.id);
  });

  it('serves a kernel/ramdisk/machine trio linked by kernel_id and ramdisk_id', async () => {
    const trio = (format: string, name: string) =>
      t.ok<ImageRow>(ADMIN, [
        'image',
        'create',
        '--disk-format',
        format,
        '--container-format',
        format,
        '--file',
        small,
        name,
      ]);
    const [kernel, ramdisk] = await Promise.all([trio('aki', 'trio-kernel'), trio('ari', 'trio-ramdisk')]);
    // Shown again: the CLI prints the create's answer, from before the upload.
    expect(await t.ok<ImageRow>(ADMIN, ['image', 'show', kernel.id])).toMatchObject({
      disk_format: 'aki',
      container_format: 'aki',
      status: 'active',
      size: 4096,
    });
    expect(await t.ok<ImageRow>(ADMIN, ['image', 'show', ramdisk.id])).toMatchObject({
      disk_format: 'ari',
      container_format: 'ari',
      status: 'active',
    });
    const machine = await t.ok<ImageRow>(ADMIN, [
      'image',
      'create',
      '--disk-format',
      'qcow2',
      '--container-format',
      'bare',
      '--file',
      qcow2,
      '--property',
      `kernel_id=${kernel.id}`,
      '--property',
      `ramdisk_id=${ramdisk.id}`,
      'trio-machine',
    ]);
    const shown = await t.ok<ImageRow>(ADMIN, ['image', 'show', 'trio-machine']);
    expect(shown.properties).toMatchObject({ kernel_id: kernel.id, ramdisk_id: ramdisk.id });
    expect(shown.id).toBe(machine.id);
    // The store keeps Glance's own format: a kernel is an aki image (plain bytes, inspected as raw).
    expect((await t.cloud.parts.images.get(kernel.id)).diskFormat).toBe('aki');
    const listed = await t.ok<{ Name: string; 'Disk Format': string }[]>(ADMIN, ['image', 'list', '--long']);
    expect(listed.map((r) => [r.Name, r['Disk Format']]).sort()).toEqual([
      ['trio-kernel', 'aki'],
      ['trio-machine', 'qcow2'],
      ['trio-ramdisk', 'ari'],
    ]);
    await remove(machine.id, kernel.id, ramdisk.id);
  });

  it('refuses bad input over HTTP with Glance errors and changes nothing', async () => {
    const token = await t.token(ADMIN);
    const auth = { 'x-auth-token': token };
    const json = { ...auth, 'content-type': 'application/json' };
    const patchType = { ...auth, 'content-type': 'application/openstack-images-v2.1-json-patch' };
    const listing = async (): Promise<unknown> => {
      const r = await fetch(`${cappedBase}/v2/images?limit=1000`, { headers: auth });
      expect(r.status).toBe(200);
      return ((await r.json()) as { images: unknown[] }).images;
    };
    const refused = async (response: Response, status: number, mention: string): Promise<void> => {
      const body = (await response.json()) as { code: string; message: string };
      expect(response.status, body.message).toBe(status);
      expect(body.code.startsWith(String(status))).toBe(true);
      expect(body.message).toContain(mention);
    };

    // Version discovery, as keystoneauth does it.
    expect((await fetch(cappedBase)).status).toBe(300);
    const versions = (await (await fetch(`${cappedBase}/versions`)).json()) as { versions: { id: string }[] };
    expect(versions.versions.map((v) => v.id)).toContain('v2.0');

    const queued = (await (
      await fetch(`${cappedBase}/v2/images`, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ name: 'q', disk_format: 'raw', container_format: 'bare' }),
      })
    ).json()) as { id: string; status: string };
    expect(queued.status).toBe('queued');
    const before = await listing();

    const post = (body: string) => fetch(`${cappedBase}/v2/images`, { method: 'POST', headers: json, body });
    await refused(await post(JSON.stringify({ name: 'x', disk_format: 'floppy' })), 400, 'disk_format');
    await refused(await post('{"name": "x",'), 400, 'body');
    await refused(await post(JSON.stringify({ name: 'x', min_ram: 'lots' })), 400, 'min_ram');
    await refused(await post(JSON.stringify({ name: 'x', ramdisk_id: 'not-an-id' })), 400, 'ramdisk_id');
    await refused(await post(JSON.stringify({ name: 'x', status: 'active' })), 403, 'read-only');
    await refused(await post(JSON.stringify({ name: 'x', os_glance_foo: 'y' })), 403, 'reserved');
    expect(await listing()).toEqual(before);

    const file = (id: string, body: Buffer, type = 'application/octet-stream') =>
      fetch(`${cappedBase}/v2/images/${id}/file`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': type },
        body,
      });
    await refused(await file(randomUUID(), randomBytes(16)), 404, 'No image found');
    await refused(await file(queued.id, randomBytes(CAP + 1)), 413, String(CAP));
    await refused(await file(queued.id, randomBytes(16), 'text/plain'), 415, 'Content-Type');
    expect(await listing()).toEqual(before);

    const patch = (body: unknown, headers: Record<string, string> = patchType) =>
      fetch(`${cappedBase}/v2/images/${queued.id}`, { method: 'PATCH', headers, body: JSON.stringify(body) });
    // One bad operation refuses the whole list: the name is not changed either.
    await refused(
      await patch([
        { op: 'replace', path: '/name', value: 'renamed' },
        { op: 'replace', path: '/min_disk', value: -1 },
      ]),
      400,
      'min_disk',
    );
    await refused(await patch([{ op: 'replace', path: '/size', value: 1 }]), 403, 'read-only');
    await refused(await patch([{ op: 'remove', path: '/name' }]), 403, 'may not be removed');
    await refused(await patch([{ op: 'remove', path: '/nope' }]), 409, 'does not exist');
    await refused(await patch([{ op: 'replace', path: '/name', value: 'r' }], json), 415, 'Content-Type');
    expect(await listing()).toEqual(before);

    // No data yet: an empty 204, as Glance answers.
    expect((await fetch(`${cappedBase}/v2/images/${queued.id}/file`, { headers: auth })).status).toBe(204);
    const data = randomBytes(10_000);
    expect((await file(queued.id, data)).status).toBe(204);
    await refused(await file(queued.id, data), 409, 'not allowed');
    const whole = await fetch(`${cappedBase}/v2/images/${queued.id}/file`, { headers: auth });
    expect(whole.headers.get('content-md5')).toBe(md5(data));
    expect(Buffer.from(await whole.arrayBuffer()).equals(data)).toBe(true);
    const part = await fetch(`${cappedBase}/v2/images/${queued.id}/file`, {
      headers: { ...auth, range: 'bytes=100-199' },
    });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-199/${data.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(data.subarray(100, 200))).toBe(true);
    const past = await fetch(`${cappedBase}/v2/images/${queued.id}/file`, {
      headers: { ...auth, range: 'bytes=20000-' },
    });
    expect(past.status).toBe(416);
    await past.arrayBuffer();

    // Paging: the next link carries the marker and continues after it.
    const second = (await (await post(JSON.stringify({ name: 'q2', disk_format: 'raw' }))).json()) as {
      id: string;
    };
    const page1 = (await (
      await fetch(`${cappedBase}/v2/images?limit=1&sort=name:asc`, { headers: auth })
    ).json()) as {
      images: { name: string }[];
      next: string;
    };
    expect(page1.images.map((i) => i.name)).toEqual(['q']);
    const page2 = (await (await fetch(`${cappedBase}${page1.next}`, { headers: auth })).json()) as {
      images: { name: string }[];
      next?: string;
    };
    expect(page2.images.map((i) => i.name)).toEqual(['q2']);
    expect(page2.next).toBeUndefined();

    for (const id of [queued.id, second.id])
      expect((await fetch(`${cappedBase}/v2/images/${id}`, { method: 'DELETE', headers: auth })).status).toBe(
        204,
      );
    expect(await listing()).toEqual([]);
  });
}, ['qemu-img']);
