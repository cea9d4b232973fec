import { createHash, randomBytes } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { MemoryStore, type NubesError, PostgresStore, SqliteStore, type Store } from '@nubes/core';
import {
  canTransition,
  createImage,
  IMAGE_STATUSES,
  IMAGE_TRANSITIONS,
  type ImageRecord,
  ImageStore,
  openImage,
} from '@nubes/images';
import { describeWith, testPostgresUrl } from '@nubes/testing';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { qemuCheck, qemuImg } from './helpers.js';

const MIB = 1024 * 1024;
const prefix = `nbi-${process.pid}-`;

async function failure(fn: () => Promise<unknown>): Promise<NubesError & { reason?: string }> {
  try {
    await fn();
  } catch (error) {
    return error as NubesError;
  }
  throw new Error('expected a failure');
}

/** A small qcow2 image with a recognizable first sector, as bytes. */
async function qcow2Bytes(dir: string, name: string, options: { backing?: string } = {}): Promise<Buffer> {
  const path = join(dir, name);
  if (options.backing) await createImage(path, { backingFile: options.backing, backingFormat: 'qcow2' });
  else {
    await createImage(path, { size: 4 * MIB });
    const image = await openImage(path, { writable: true });
    await image.write(0, Buffer.from(`boot sector of ${name}`));
    await image.write(MIB, randomBytes(64 * 1024));
    await image.close();
  }
  return readFileSync(path);
}

function files(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

describe('image status machine', () => {
  it('follows Glance: queued -> saving -> active, killed on failure, deactivate and back, deleted is final', () => {
    expect(canTransition('queued', 'saving')).toBe(true);
    expect(canTransition('saving', 'active')).toBe(true);
    expect(canTransition('saving', 'killed')).toBe(true);
    expect(canTransition('queued', 'uploading')).toBe(true);
    expect(canTransition('uploading', 'importing')).toBe(true);
    expect(canTransition('importing', 'active')).toBe(true);
    expect(canTransition('active', 'deactivated')).toBe(true);
    expect(canTransition('deactivated', 'active')).toBe(true);
    expect(canTransition('active', 'pending_delete')).toBe(true);
    expect(canTransition('pending_delete', 'deleted')).toBe(true);
    expect(canTransition('queued', 'active')).toBe(false);
    expect(canTransition('active', 'saving')).toBe(false);
    expect(canTransition('killed', 'active')).toBe(false);
    expect(canTransition('active', 'killed')).toBe(false);
    for (const s of IMAGE_STATUSES) {
      expect(canTransition('deleted', s)).toBe(false);
      for (const t of IMAGE_TRANSITIONS[s]) expect(IMAGE_STATUSES).toContain(t);
      if (s !== 'deleted') expect(canTransition(s, 'deleted')).toBe(true);
    }
  });
});

interface Backend {
  name: string;
  open(): Store;
}

const backends: Backend[] = [
  { name: 'MemoryStore', open: () => new MemoryStore() },
  {
    name: 'SqliteStore',
    open: () => {
      const dir = mkdtempSync(join(tmpdir(), `${prefix}sqlite-`));
      const store = new SqliteStore({ path: join(dir, 'images.db'), durability: 'normal' });
      const close = store.close.bind(store);
      store.close = async () => {
        await close();
        rmSync(dir, { recursive: true, force: true });
      };
      return store;
    },
  },
];

let pgTables = 0;
function suite(backend: Backend): void {
  let dir: string;
  let store: Store;
  let images: ImageStore;
  let work: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}store-`));
    work = join(dir, 'work');
    mkdirSync(work);
    store = backend.open();
    images = new ImageStore({ store, dir: join(dir, 'images') });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const blobFiles = () => files(join(dir, 'images', 'blobs', 'sha256'));
  const tempFiles = () => files(join(dir, 'images', 'blobs', 'tmp'));

  it('uploads a qcow2 image: hashed, inspected, stored as a read-only content-addressed blob, downloadable by range', async () => {
    const data = await qcow2Bytes(work, 'base.qcow2');
    const created = await images.create({
      name: 'debian',
      owner: 'p1',
      diskFormat: 'qcow2',
      tags: ['linux'],
    });
    expect(created.status).toBe('queued');
    const progress: number[] = [];
    const active = await images.upload(
      created.id,
      Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
      {
        onProgress: (e) => progress.push(e.done),
      },
    );
    expect(active).toMatchObject({
      status: 'active',
      size: data.length,
      virtualSize: 4 * MIB,
      checksum: createHash('md5').update(data).digest('hex'),
      osHashAlgo: 'sha512',
      osHashValue: createHash('sha512').update(data).digest('hex'),
      digest: `sha256:${createHash('sha256').update(data).digest('hex')}`,
    });
    expect(progress.at(-1)).toBe(data.length);
    expect(await images.get(created.id)).toEqual(active);
    const [blob] = blobFiles();
    expect(blobFiles()).toHaveLength(1);
    expect(readFileSync(blob as string).equals(data)).toBe(true);
    expect(statSync(blob as string).mode & 0o777).toBe(0o444);
    expect(tempFiles()).toEqual([]);

    const whole = await images.download(created.id);
    expect((await buffer(whole.stream)).equals(data)).toBe(true);
    const part = await images.download(created.id, { start: 100, end: 199 });
    expect(part).toMatchObject({ range: { start: 100, end: 199 }, contentLength: 100, size: data.length });
    expect((await buffer(part.stream)).equals(data.subarray(100, 200))).toBe(true);
    const tail = await images.download(created.id, { start: data.length - 10 });
    expect((await buffer(tail.stream)).equals(data.subarray(-10))).toBe(true);
    expect((await failure(() => images.download(created.id, { start: data.length }))).code).toBe(
      'InvalidInput',
    );
    expect((await failure(() => images.download(created.id, { start: 5, end: 2 }))).details.field).toBe(
      'range.end',
    );
  });

  it('refuses a qcow2 upload that names a backing file: the image is killed and no blob is left', async () => {
    await qcow2Bytes(work, 'base.qcow2');
    const overlay = await qcow2Bytes(work, 'evil.qcow2', { backing: 'base.qcow2' });
    const image = await images.create({ owner: 'p1', diskFormat: 'qcow2' });
    const error = await failure(() => images.upload(image.id, Readable.from([overlay])));
    expect(error.code).toBe('InvalidInput');
    expect(error.reason).toBe('backing-file');
    expect((await images.get(image.id)).status).toBe('killed');
    expect(blobFiles()).toEqual([]);
    expect(tempFiles()).toEqual([]);
    // killed is final but for deletion
    expect((await failure(() => images.upload(image.id, Readable.from([overlay])))).code).toBe('Conflict');
    await images.delete(image.id);
    expect((await failure(() => images.get(image.id))).code).toBe('NotFound');
  });

  it('refuses data of another format than declared, and data over the size cap', async () => {
    const data = await qcow2Bytes(work, 'base.qcow2');
    const claimedRaw = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const mismatch = await failure(() => images.upload(claimedRaw.id, Readable.from([data])));
    expect(mismatch).toMatchObject({ code: 'InvalidInput', details: { declared: 'raw', detected: 'qcow2' } });
    expect((await images.get(claimedRaw.id)).status).toBe('killed');

    // A kernel image (aki) is plain bytes: raw data is what it must be, and a qcow2 is refused as for raw.
    const kernel = await images.create({ owner: 'p1', diskFormat: 'aki', containerFormat: 'aki' });
    expect((await images.upload(kernel.id, Readable.from([Buffer.alloc(4096, 7)]))).status).toBe('active');
    const fakeKernel = await images.create({ owner: 'p1', diskFormat: 'aki', containerFormat: 'aki' });
    const notRaw = await failure(() => images.upload(fakeKernel.id, Readable.from([data])));
    expect(notRaw).toMatchObject({ code: 'InvalidInput', details: { declared: 'aki', detected: 'qcow2' } });
    await images.delete(kernel.id);

    const big = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const tooLarge = await failure(() =>
      images.upload(big.id, Readable.from([Buffer.alloc(MIB), Buffer.alloc(MIB)]), { maxBytes: MIB + 1 }),
    );
    expect(tooLarge.code).toBe('PayloadTooLarge');
    expect((await images.get(big.id)).status).toBe('killed');
    expect(blobFiles()).toEqual([]);
    expect(tempFiles()).toEqual([]);
  });

  it('validates input with typed errors naming the field, and changes nothing', async () => {
    const bad = await failure(() => images.create({ owner: 'p1', diskFormat: 'qed' as never }));
    expect(bad).toMatchObject({ code: 'InvalidInput', details: { field: 'image.diskFormat' } });
    expect((await failure(() => images.create({ owner: '', diskFormat: 'raw' }))).details.field).toBe(
      'image.owner',
    );
    expect(
      (
        await failure(() =>
          images.create({ owner: 'p', diskFormat: 'raw', properties: { os_glance_x: 'y' } }),
        )
      ).details.field,
    ).toBe('image.properties.os_glance_x');
    expect((await failure(() => images.get('not-a-uuid'))).details.field).toBe('imageId');
    expect((await images.list()).images).toEqual([]);
    const image = await images.create({ owner: 'p1', diskFormat: 'raw' });
    expect((await failure(() => images.update(image.id, { minDisk: -1 }))).details.field).toBe(
      'patch.minDisk',
    );
    expect((await failure(() => images.deactivate(image.id))).code).toBe('Conflict');
    expect(await images.get(image.id)).toEqual(image);
  });

  it('deactivates and reactivates; delete refuses protected and in-use images; identical data shares one blob', async () => {
    const data = Buffer.concat([Buffer.from('raw disk'), randomBytes(MIB)]);
    const a = await images.create({ owner: 'p1', diskFormat: 'raw', protected: true });
    const b = await images.create({ owner: 'p2', diskFormat: 'raw' });
    await images.upload(a.id, Readable.from([data]));
    await images.upload(b.id, Readable.from([data]));
    expect(blobFiles()).toHaveLength(1);

    expect((await images.deactivate(a.id)).status).toBe('deactivated');
    expect((await failure(() => images.download(a.id))).code).toBe('Conflict');
    expect((await images.reactivate(a.id)).status).toBe('active');

    const protectedErr = await failure(() => images.delete(a.id));
    expect(protectedErr).toMatchObject({ code: 'Conflict', details: { reason: 'protected' } });
    expect((await images.get(a.id)).status).toBe('active');
    await images.update(a.id, { protected: false });

    expect(await images.acquire(a.id, 'volume-1')).toBe(1);
    expect(await images.acquire(a.id, 'volume-2')).toBe(2);
    const inUse = await failure(() => images.delete(a.id));
    expect(inUse).toMatchObject({ code: 'Conflict', details: { reason: 'in-use' } });
    expect(await images.release(a.id, 'volume-1')).toBe(1);
    expect(await images.release(a.id, 'volume-2')).toBe(0);

    expect((await images.delete(a.id)).status).toBe('deleted');
    expect(blobFiles()).toHaveLength(1); // b still has these bytes
    expect((await buffer((await images.download(b.id)).stream)).equals(data)).toBe(true);
    expect((await images.delete(b.id, { delayed: true })).status).toBe('pending_delete');
    expect(blobFiles()).toHaveLength(1);
    const swept = await images.sweep({ olderThanMs: 0 });
    expect(swept.scrubbedImages).toEqual([b.id]);
    expect(blobFiles()).toEqual([]);
    expect((await images.list({ status: 'pending_delete' })).images).toEqual([]);
  });

  it('stages and imports (glance-direct): queued -> uploading -> importing -> active', async () => {
    const data = await qcow2Bytes(work, 'base.qcow2');
    const image = await images.create({ owner: 'p1', diskFormat: 'qcow2' });
    expect((await images.stage(image.id, Readable.from([data]))).status).toBe('uploading');
    expect((await images.get(image.id)).status).toBe('uploading');
    expect(blobFiles()).toEqual([]);
    const active = await images.importStaged(image.id);
    expect(active.status).toBe('active');
    expect(active.size).toBe(data.length);
    expect(blobFiles()).toHaveLength(1);
    expect(files(join(dir, 'images', 'staging'))).toEqual([]);
    expect((await failure(() => images.importStaged(image.id))).code).toBe('Conflict');
  });

  it('lists with filters, sorting and marker pagination; shares show once accepted', async () => {
    let t = Date.parse('2025-01-01T00:00:00Z');
    images = new ImageStore({ store, dir: join(dir, 'images'), now: () => (t += 1000) });
    const made: ImageRecord[] = [];
    for (let i = 0; i < 7; i++)
      made.push(
        await images.create({
          name: `img-${i}`,
          owner: i % 2 ? 'odd' : 'even',
          diskFormat: 'raw',
          visibility: i === 0 ? 'public' : i === 6 ? 'private' : 'shared',
          tags: i % 3 === 0 ? ['gold', 'linux'] : ['linux'],
        }),
      );
    const ids = (page: { images: { id: string }[] }) => page.images.map((i) => i.id);
    expect(ids(await images.list())).toEqual(made.map((m) => m.id).reverse());
    expect(ids(await images.list({ owner: 'odd', sortKey: 'name', sortDir: 'asc' }))).toEqual(
      [1, 3, 5].map((i) => made[i]?.id),
    );
    expect(ids(await images.list({ tags: ['gold', 'linux'], sortDir: 'asc' }))).toEqual(
      [0, 3, 6].map((i) => made[i]?.id),
    );
    expect(ids(await images.list({ name: 'img-4' }))).toEqual([made[4]?.id]);
    expect(ids(await images.list({ visibility: 'private' }))).toEqual([made[6]?.id]);
    expect((await images.list({ status: 'active' })).images).toEqual([]);

    const seen: string[] = [];
    let page = await images.list({ limit: 3, sortKey: 'name', sortDir: 'asc' });
    seen.push(...ids(page));
    while (page.next) {
      page = await images.list({ limit: 3, sortKey: 'name', sortDir: 'asc', marker: page.next });
      seen.push(...ids(page));
    }
    expect(seen).toEqual(made.map((m) => m.id));
    expect(
      (await failure(() => images.list({ marker: made[1]?.id as string, owner: 'even' }))).details.field,
    ).toBe('options.marker');

    // visibleTo: own + public + accepted shares
    const shared = made[1]?.id as string;
    expect((await failure(() => images.addMember(made[6]?.id as string, 'even'))).code).toBe('Conflict');
    expect((await images.addMember(shared, 'even')).status).toBe('pending');
    const evenSees = async () =>
      (await images.list({ visibleTo: 'even', sortDir: 'asc' })).images.map((i) => i.name);
    expect(await evenSees()).toEqual(['img-0', 'img-2', 'img-4', 'img-6']);
    await images.setMemberStatus(shared, 'even', 'accepted');
    expect(await evenSees()).toEqual(['img-0', 'img-1', 'img-2', 'img-4', 'img-6']);
    expect((await images.listMembers(shared)).map((m) => m.status)).toEqual(['accepted']);
    await images.removeMember(shared, 'even');
    expect(await evenSees()).toEqual(['img-0', 'img-2', 'img-4', 'img-6']);
    expect(await images.projectUsage('odd')).toEqual({ images: 3, bytes: 0 });
  });
}

for (const backend of backends) describe(`image store on ${backend.name}`, () => suite(backend));
describeWith(['postgres'], 'image store on PostgresStore', () =>
  suite({
    name: 'PostgresStore',
    open: () =>
      new PostgresStore({
        connectionString: testPostgresUrl() as string,
        table: `nbi_${process.pid}_${pgTables++}`,
      }),
  }),
);

describeWith(['qemu-img'], 'instance disks', () => {
  let dir: string;
  let store: MemoryStore;
  let images: ImageStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}disks-`));
    store = new MemoryStore();
    images = new ImageStore({ store, dir: join(dir, 'images') });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prepares 10 qcow2 overlays sharing one base, checked by qemu-img; flattens and releases them', async () => {
    mkdirSync(join(dir, 'work'));
    const data = await qcow2Bytes(join(dir, 'work'), 'base.qcow2');
    const image = await images.create({ owner: 'p1', diskFormat: 'qcow2', minDisk: 0 });
    const active = await images.upload(image.id, Readable.from([data]));
    const base = images.blobs.blobPath(active.digest as string);

    const disks = [];
    for (let i = 0; i < 10; i++)
      disks.push(await images.prepareInstanceDisk(image.id, { instanceId: `vm${i}` }));
    expect(await images.uses(image.id)).toHaveLength(10);
    for (const disk of disks) {
      const info = JSON.parse(await qemuImg('info', '--output=json', disk.path));
      expect(info).toMatchObject({ format: 'qcow2', 'virtual-size': 4 * MIB, 'backing-filename': base });
      expect(info['backing-filename-format'] ?? info['full-backing-filename']).toBeTruthy();
      expect(await qemuCheck(disk.path)).toMatchObject({ 'check-errors': 0 });
      expect(statSync(disk.path).size).toBeLessThan(data.length);
    }
    expect((await failure(() => images.prepareInstanceDisk(image.id, { instanceId: 'vm0' }))).code).toBe(
      'Conflict',
    );
    expect(
      (await failure(() => images.prepareInstanceDisk(image.id, { instanceId: '../x' }))).details.field,
    ).toBe('options.instanceId');

    // A write in one instance stays there: the base and the sibling see the original sector.
    const vm0 = await openImage(disks[0]?.path as string, { writable: true });
    await vm0.write(0, Buffer.from('instance 0 was here'));
    await vm0.close();
    const read = async (path: string) => {
      const img = await openImage(path);
      try {
        return (await img.read(0, 19)).toString();
      } finally {
        await img.close();
      }
    };
    expect(await read(disks[0]?.path as string)).toBe('instance 0 was here');
    expect(await read(disks[1]?.path as string)).toBe('boot sector of base');
    expect(readFileSync(base).equals(data)).toBe(true);

    expect((await failure(() => images.delete(image.id))).details.reason).toBe('in-use');
    const flat = await images.flattenInstanceDisk('vm0');
    expect(flat.backingFile).toBeNull();
    const flatInfo = JSON.parse(await qemuImg('info', '--output=json', flat.path));
    expect(flatInfo['backing-filename']).toBeUndefined();
    expect(await qemuCheck(flat.path)).toMatchObject({ 'check-errors': 0 });
    expect(await read(flat.path)).toBe('instance 0 was here');
    expect((await readGuest(flat.path, MIB)).equals(await readGuest(base, MIB))).toBe(true);

    for (let i = 1; i < 10; i++) await images.releaseInstanceDisk(`vm${i}`);
    await images.releaseInstanceDisk('vm0');
    expect(await images.uses(image.id)).toEqual([]);
    expect(files(join(dir, 'images', 'instances'))).toEqual([]);
    await images.delete(image.id);
  });

  it('grows a disk to the size asked for, refuses one below minDisk, and refuses formats that cannot back an overlay', async () => {
    const image = await images.create({ owner: 'p1', diskFormat: 'raw', minDisk: 1 });
    await images.upload(image.id, Readable.from([Buffer.alloc(MIB, 1)]));
    const disk = await images.prepareInstanceDisk(image.id);
    expect(disk.virtualSize).toBe(1024 * MIB);
    const info = JSON.parse(await qemuImg('info', '--output=json', disk.path));
    expect(info['virtual-size']).toBe(1024 * MIB);
    expect(info['backing-filename-format']).toBe('raw');
    const small = await failure(() => images.prepareInstanceDisk(image.id, { size: MIB }));
    expect(small.details.field).toBe('options.size');
    expect(await images.listInstanceDisks(image.id)).toHaveLength(1);

    const iso = await images.create({ owner: 'p1', diskFormat: 'iso' });
    const isoData = Buffer.alloc(0x9000);
    isoData.write('CD001', 0x8001, 'latin1');
    await images.upload(iso.id, Readable.from([isoData]));
    expect((await failure(() => images.prepareInstanceDisk(iso.id))).code).toBe('Unsupported');
  });
});

async function readGuest(path: string, offset: number): Promise<Buffer> {
  const img = await openImage(path);
  try {
    return await img.read(offset, 65536);
  } finally {
    await img.close();
  }
}

describe('web-download', () => {
  let dir: string;
  let store: MemoryStore;
  let images: ImageStore;
  let server: Server;
  let base: string;
  const body = Buffer.concat([Buffer.from('raw image over http '), randomBytes(3 * MIB)]);
  const stalls = new Set<() => void>();

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/image.raw') {
        res.writeHead(200, { 'content-length': body.length });
        // In pieces, so progress is reported more than once.
        let at = 0;
        const next = () => {
          if (at >= body.length) return res.end();
          res.write(body.subarray(at, at + 512 * 1024), next);
          at += 512 * 1024;
        };
        next();
      } else if (req.url === '/chunked.raw') {
        res.writeHead(200);
        res.write(Buffer.alloc(MIB));
        res.end(Buffer.alloc(MIB));
      } else if (req.url === '/redirect') {
        res.writeHead(302, { location: '/image.raw' });
        res.end();
      } else if (req.url === '/stall') {
        res.writeHead(200, { 'content-length': 10 * MIB });
        res.write(Buffer.alloc(1024));
        stalls.add(() => res.destroy());
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const stop of stalls) stop();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}web-`));
    store = new MemoryStore();
    images = new ImageStore({ store, dir: join(dir, 'images') });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('imports from a URL with progress events, following a redirect', async () => {
    const image = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const events: { done: number; total: number }[] = [];
    const active = await images.importFromUrl(image.id, {
      url: `${base}/redirect`,
      onProgress: (e) => events.push({ done: e.done, total: e.total }),
    });
    expect(active).toMatchObject({ status: 'active', size: body.length });
    expect(active.osHashValue).toBe(createHash('sha512').update(body).digest('hex'));
    expect(events.at(-1)).toEqual({ done: body.length, total: body.length });
    expect(events.length).toBeGreaterThan(1);
    expect((await buffer((await images.download(image.id)).stream)).equals(body)).toBe(true);
  });

  it('enforces the size cap (declared and streamed), the deadline, and HTTP errors', async () => {
    const declared = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const e1 = await failure(() =>
      images.importFromUrl(declared.id, { url: `${base}/image.raw`, maxBytes: MIB }),
    );
    expect(e1.code).toBe('PayloadTooLarge');
    expect((await images.get(declared.id)).status).toBe('killed');

    const streamed = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const e2 = await failure(() =>
      images.importFromUrl(streamed.id, { url: `${base}/chunked.raw`, maxBytes: MIB }),
    );
    expect(e2.code).toBe('PayloadTooLarge');
    expect((await images.get(streamed.id)).status).toBe('killed');

    const slow = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const e3 = await failure(() => images.importFromUrl(slow.id, { url: `${base}/stall`, timeoutMs: 300 }));
    expect(e3.code).toBe('Timeout');
    expect((await images.get(slow.id)).status).toBe('queued');

    const missing = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const e4 = await failure(() => images.importFromUrl(missing.id, { url: `${base}/nothing` }));
    expect(e4).toMatchObject({ code: 'Unavailable', details: { status: 404 } });
    expect((await images.get(missing.id)).status).toBe('queued');

    const e5 = await failure(() => images.importFromUrl(missing.id, { url: 'file:///etc/passwd' }));
    expect(e5.details.field).toBe('options.url');
    expect(files(join(dir, 'images', 'blobs'))).toEqual([]);
  });
});

describe('sweeper', () => {
  let dir: string;
  let store: MemoryStore;
  let images: ImageStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}sweep-`));
    store = new MemoryStore();
    images = new ImageStore({ store, dir: join(dir, 'images') });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('removes what a crash leaves: temp files, unreferenced blobs, stuck transfers, stray and lost disk files', async () => {
    const keep = await images.create({ owner: 'p1', diskFormat: 'raw' });
    await images.upload(keep.id, Readable.from([Buffer.from('keep me')]));

    // A process died mid-upload: its record says saving, its temp file is half written.
    const stuck = await images.create({ owner: 'p1', diskFormat: 'raw' });
    const record = (await store.get(`images/records/${stuck.id}`))?.value as Record<string, unknown>;
    await store.put(`images/records/${stuck.id}`, {
      ...record,
      status: 'saving',
      transferStartedAt: new Date(0).toISOString(),
    });
    const temp = join(dir, 'images', 'blobs', 'tmp', 'crashed.part');
    writeFileSync(temp, 'half');
    // ... and another died between the blob rename and the record update.
    const orphan = images.blobs.blobPath(`sha256:${createHash('sha256').update('orphan').digest('hex')}`);
    mkdirSync(join(orphan, '..'), { recursive: true });
    writeFileSync(orphan, 'orphan');
    // A disk file whose record never landed, and a record whose file is gone.
    mkdirSync(join(dir, 'images', 'instances'), { recursive: true });
    writeFileSync(join(dir, 'images', 'instances', 'ghost.qcow2'), 'x');
    const disk = {
      instanceId: 'lost',
      imageId: keep.id,
      path: join(dir, 'nowhere.qcow2'),
      backingFile: null,
    };
    await store.put('images/disks/lost', {
      ...disk,
      backingFormat: 'raw',
      virtualSize: 1,
      createdAt: new Date(0).toISOString(),
    });
    await store.put(`images/uses/${keep.id}/instance-lost`, {
      holder: 'instance-lost',
      since: new Date(0).toISOString(),
    });

    // A fresh temp file (an upload in progress elsewhere) is left alone.
    const fresh = join(dir, 'images', 'blobs', 'tmp', 'in-progress.part');
    writeFileSync(fresh, 'busy');
    for (const f of [temp, orphan, join(dir, 'images', 'instances', 'ghost.qcow2')]) utimesSync(f, 0, 0);

    const report = await images.sweep({ olderThanMs: 60_000 });
    expect(report.tempFiles).toEqual([temp]);
    expect(report.orphanBlobs).toEqual([`sha256:${createHash('sha256').update('orphan').digest('hex')}`]);
    expect(report.killedImages).toEqual([stuck.id]);
    expect(report.lostDisks).toEqual(['lost']);
    expect(report.strayFiles).toEqual([join(dir, 'images', 'instances', 'ghost.qcow2')]);
    expect(report.missingBlobs).toEqual([]);
    expect((await images.get(stuck.id)).status).toBe('killed');
    expect(await images.uses(keep.id)).toEqual([]);
    expect(files(join(dir, 'images', 'blobs', 'tmp'))).toEqual([fresh]);
    expect((await buffer((await images.download(keep.id)).stream)).toString()).toBe('keep me');
    const again = await images.sweep({ olderThanMs: 60_000 });
    expect(Object.values(again).flat()).toEqual([]);
  });
});
