import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, type NubesError, PostgresStore, SqliteStore, type Store } from '@nubes/core';
import {
  compactOverlayOptions,
  MOUNT_OPTIONS_LIMIT,
  type Mount,
  mountAll,
  OverlaySnapshotter,
  unmount,
  writableDir,
} from '@nubes/images';
import { describeWith, testPostgresUrl } from '@nubes/testing';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unmountQuietly } from './oci-helpers.js';

const prefix = `nbi-${process.pid}-`;

async function failure(fn: () => Promise<unknown>): Promise<NubesError> {
  try {
    await fn();
  } catch (error) {
    return error as NubesError;
  }
  throw new Error('expected a failure');
}

describe('lowerdir layout (pure)', () => {
  it('leaves short options alone and makes a deep chain fit one page relative to the common directory', () => {
    const short = ['workdir=/s/2/work', 'upperdir=/s/2/fs', 'lowerdir=/s/1/fs'];
    expect(compactOverlayOptions(short)).toEqual({ options: short });
    const root = `/var/lib/${'very-long-directory-name/'.repeat(4)}snapshots`;
    const lowers = Array.from({ length: 100 }, (_, i) => `${root}/${100 - i}/fs`);
    const options = [
      'index=off',
      `workdir=${root}/101/work`,
      `upperdir=${root}/101/fs`,
      `lowerdir=${lowers.join(':')}`,
    ];
    expect(options.join(',').length).toBeGreaterThan(MOUNT_OPTIONS_LIMIT);
    const compact = compactOverlayOptions(options);
    expect(compact.cwd).toBe(root);
    expect(compact.options.join(',').length).toBeLessThan(MOUNT_OPTIONS_LIMIT);
    expect(compact.options.slice(0, 3)).toEqual(['index=off', 'workdir=101/work', 'upperdir=101/fs']);
    expect(compact.options[3]?.startsWith('lowerdir=100/fs:99/fs:98/fs')).toBe(true);
  });
});

function metadataSuite(open: () => Store): void {
  let dir: string;
  let store: Store;
  let snapshots: OverlaySnapshotter;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}snapmeta-`));
    store = open();
    snapshots = new OverlaySnapshotter({ store, root: join(dir, 'root') });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prepares, commits, stacks, views and removes, returning mounts as data', async () => {
    const m1 = await snapshots.prepare('base-active');
    expect(m1).toEqual([
      { type: 'bind', source: expect.stringMatching(/\/snapshots\/1\/fs$/), options: ['rw', 'rbind'] },
    ]);
    writeFileSync(join(writableDir(m1).dir, 'hello'), 'base');
    await snapshots.commit('base', 'base-active', { labels: { layer: '0' } });
    expect(await snapshots.stat('base')).toMatchObject({
      key: 'base',
      kind: 'committed',
      parent: null,
      labels: { layer: '0' },
    });
    expect((await failure(() => snapshots.stat('base-active'))).code).toBe('NotFound');
    expect((await snapshots.usage('base')).inodes).toBe(2);

    const m2 = await snapshots.prepare('c1', 'base');
    expect(m2[0]?.type).toBe('overlay');
    const opts = m2[0]?.options as string[];
    expect(opts).toContain('index=off');
    expect(opts.find((o) => o.startsWith('lowerdir='))).toMatch(/\/snapshots\/1\/fs$/);
    expect(opts.find((o) => o.startsWith('upperdir='))).toMatch(/\/snapshots\/2\/fs$/);
    expect(opts.find((o) => o.startsWith('workdir='))).toMatch(/\/snapshots\/2\/work$/);

    const v = await snapshots.view('v1', 'base');
    expect(v).toEqual([
      { type: 'bind', source: expect.stringMatching(/\/snapshots\/1\/fs$/), options: ['ro', 'rbind'] },
    ]);
    await snapshots.commit('layer2', 'c1');
    const deep = await snapshots.view('v2', 'layer2');
    expect(deep[0]).toMatchObject({
      type: 'overlay',
      options: ['index=off', 'ro', expect.stringMatching(/2\/fs:.*1\/fs$/)],
    });

    // Refusals: nothing changes.
    expect((await failure(() => snapshots.prepare('v1', 'base'))).code).toBe('Conflict');
    expect((await failure(() => snapshots.prepare('x', 'missing'))).code).toBe('NotFound');
    expect((await failure(() => snapshots.prepare('x', 'v1'))).details.field).toBe('parent');
    expect((await failure(() => snapshots.commit('y', 'v1'))).details.field).toBe('key');
    expect((await failure(() => snapshots.commit('layer2', 'v2'))).code).toBe('InvalidInput');
    expect((await failure(() => snapshots.mounts('base'))).details.field).toBe('key');
    expect((await failure(() => snapshots.prepare(''))).details.field).toBe('key');
    const hasChildren = await failure(() => snapshots.remove('base'));
    expect(hasChildren).toMatchObject({ code: 'Conflict', details: { reason: 'has-children' } });
    expect((await snapshots.list()).map((s) => [s.key, s.kind, s.parent])).toEqual([
      ['base', 'committed', null],
      ['layer2', 'committed', 'base'],
      ['v1', 'view', 'base'],
      ['v2', 'view', 'layer2'],
    ]);

    await snapshots.remove('v2');
    await snapshots.remove('v1');
    await snapshots.remove('layer2');
    await snapshots.remove('base');
    expect(await snapshots.list()).toEqual([]);
    expect(readdirSync(join(dir, 'root', 'snapshots'))).toEqual([]);
  });

  it('sweeps snapshot directories a crash left without a record', async () => {
    await snapshots.prepare('kept');
    mkdirSync(join(dir, 'root', 'snapshots', '77', 'fs'), { recursive: true });
    mkdirSync(join(dir, 'root', 'snapshots', '78', 'fs'), { recursive: true });
    utimesSync(join(dir, 'root', 'snapshots', '77'), 0, 0);
    expect(await snapshots.cleanup()).toEqual([join(dir, 'root', 'snapshots', '77')]);
    expect(await snapshots.cleanup({ olderThanMs: 0 })).toEqual([join(dir, 'root', 'snapshots', '78')]);
    expect(readdirSync(join(dir, 'root', 'snapshots'))).toEqual(['1']);
  });
}

describe('snapshotter metadata on MemoryStore', () => metadataSuite(() => new MemoryStore()));
describe('snapshotter metadata on SqliteStore', () => {
  const dbDir = mkdtempSync(join(tmpdir(), `${prefix}snapdb-`));
  let n = 0;
  metadataSuite(() => new SqliteStore({ path: join(dbDir, `s${n++}.db`), durability: 'normal' }));
  afterAll(() => rmSync(dbDir, { recursive: true, force: true }));
});
let pg = 0;
describeWith(['postgres'], 'snapshotter metadata on PostgresStore', () =>
  metadataSuite(
    () =>
      new PostgresStore({
        connectionString: testPostgresUrl() as string,
        table: `nbi_snap_${process.pid}_${pg++}`,
      }),
  ),
);

describeWith(['root'], 'overlay mounts', () => {
  let dir: string;
  let store: MemoryStore;
  let snapshots: OverlaySnapshotter;
  const mounted: string[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}mounts-`));
    store = new MemoryStore();
    snapshots = new OverlaySnapshotter({ store, root: join(dir, 'root') });
  });
  afterEach(async () => {
    for (const m of mounted.splice(0).reverse()) await unmountQuietly(m);
    rmSync(dir, { recursive: true, force: true });
  });

  async function mountAt(name: string, mounts: Mount[]): Promise<string> {
    const target = join(dir, name);
    mkdirSync(target, { recursive: true });
    await mountAll(mounts, target);
    mounted.push(target);
    return target;
  }

  it('keeps a container write in the container: absent from the base and from a sibling; a delete hides a base file', async () => {
    const base = await mountAt('base-rw', await snapshots.prepare('base-rw'));
    writeFileSync(join(base, 'motd'), 'hello');
    writeFileSync(join(base, 'config'), 'shared');
    await unmount(base);
    mounted.pop();
    await snapshots.commit('base', 'base-rw');

    const c1 = await mountAt('c1', await snapshots.prepare('c1', 'base'));
    const c2 = await mountAt('c2', await snapshots.prepare('c2', 'base'));
    writeFileSync(join(c1, 'motd'), 'changed in c1');
    writeFileSync(join(c1, 'new'), 'only c1');
    unlinkSync(join(c1, 'config'));

    expect(readFileSync(join(c1, 'motd'), 'utf8')).toBe('changed in c1');
    expect(existsSync(join(c1, 'config'))).toBe(false);
    expect(readFileSync(join(c2, 'motd'), 'utf8')).toBe('hello');
    expect(readFileSync(join(c2, 'config'), 'utf8')).toBe('shared');
    expect(existsSync(join(c2, 'new'))).toBe(false);
    const view = await mountAt('view', await snapshots.view('v', 'base'));
    expect(readFileSync(join(view, 'motd'), 'utf8')).toBe('hello');
    expect(readFileSync(join(view, 'config'), 'utf8')).toBe('shared');
    expect(() => writeFileSync(join(view, 'x'), 'no')).toThrow(/EROFS|read-only/);
    // The whiteout lives in c1's own layer, as overlayfs writes it: a 0/0 character device.
    const upper = writableDir(await snapshots.mounts('c1')).dir;
    expect(statSync(join(upper, 'config')).isCharacterDevice()).toBe(true);
    expect((await snapshots.usage('c1')).inodes).toBeGreaterThanOrEqual(4);
  });

  it('mounts a 100-layer chain whose absolute lowerdir would not fit in a page', async () => {
    const deepRoot = join(
      dir,
      'a-rather-long-directory-name-to-make-absolute-paths-long',
      'and-another-level-of-it',
    );
    snapshots = new OverlaySnapshotter({ store: new MemoryStore(), root: deepRoot });
    let parent: string | undefined;
    for (let i = 0; i < 100; i++) {
      const key = `layer-${i}-active`;
      const mounts = await snapshots.prepare(key, parent);
      const upper = writableDir(mounts).dir;
      writeFileSync(join(upper, `from-${i}`), String(i));
      writeFileSync(join(upper, 'top'), `layer ${i}`);
      await snapshots.commit(`layer-${i}`, key);
      parent = `layer-${i}`;
    }
    const mounts = await snapshots.prepare('container', parent);
    expect(mounts[0]?.options.join(',').length).toBeGreaterThan(MOUNT_OPTIONS_LIMIT);
    const root = await mountAt('deep', mounts);
    expect(readFileSync(join(root, 'top'), 'utf8')).toBe('layer 99');
    expect(readdirSync(root).filter((n) => n.startsWith('from-'))).toHaveLength(100);
    expect(readFileSync(join(root, 'from-0'), 'utf8')).toBe('0');
    writeFileSync(join(root, 'from-0'), 'rewritten');
    expect(readFileSync(join(writableDir(mounts).dir, 'from-0'), 'utf8')).toBe('rewritten');
    expect((await failure(() => snapshots.remove('layer-50'))).code).toBe('Conflict');
  });
});
