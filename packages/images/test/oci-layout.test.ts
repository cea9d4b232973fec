import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { MemoryStore, type NubesError, runCommand } from '@nubes/core';
import {
  applyLayer,
  chainIds,
  classifyEntry,
  entryPath,
  loadOciImage,
  mountAll,
  OverlaySnapshotter,
  planWhiteouts,
  symlinkStaysInside,
  unpackOciImage,
} from '@nubes/images';
import { describeWith } from '@nubes/testing';
import { pack } from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mountedTree, unmountQuietly } from './oci-helpers.js';

const prefix = `nbi-${process.pid}-`;

/** A tar entry for {@link tarOf}: a file with content, a directory, or a link. */
type TarEntry =
  | { name: string; content: string; mode?: number }
  | { name: string; type: 'directory'; mode?: number }
  | { name: string; type: 'symlink' | 'link'; linkname: string };

async function tarOf(entries: TarEntry[]): Promise<Buffer> {
  const p = pack();
  for (const e of entries) {
    const mtime = new Date(1_700_000_000_000);
    if ('content' in e) p.entry({ name: e.name, mode: e.mode ?? 0o644, mtime }, e.content);
    else if (e.type === 'directory')
      p.entry({ name: e.name, type: 'directory', mode: e.mode ?? 0o755, mtime });
    else p.entry({ name: e.name, type: e.type, linkname: e.linkname, mtime });
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of p) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

const sha = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Writes an OCI image layout with the given layer tars (gzip where asked) and returns its digests. */
function writeLayout(
  dir: string,
  layers: { tar: Buffer; gzip: boolean; mediaType?: string }[],
): { diffIds: string[]; blobs: string[] } {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = (data: Buffer | string) => {
    const digest = sha(data);
    writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
    return { digest, size: Buffer.byteLength(data) };
  };
  const descriptors = layers.map((l) => ({
    mediaType: l.mediaType ?? `application/vnd.oci.image.layer.v1.tar${l.gzip ? '+gzip' : ''}`,
    ...put(l.gzip ? gzipSync(l.tar) : l.tar),
  }));
  const diffIds = layers.map((l) => sha(l.tar));
  const config = put(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }),
  );
  const manifest = put(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: descriptors,
    }),
  );
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'latest' },
        },
      ],
    }),
  );
  return { diffIds, blobs: descriptors.map((d) => d.digest) };
}

async function failure(fn: () => Promise<unknown>): Promise<NubesError> {
  try {
    await fn();
  } catch (error) {
    return error as NubesError;
  }
  throw new Error('expected a failure');
}

describe('layer path safety and whiteout planning (pure)', () => {
  it('normalizes entry names and refuses absolute ones and any ..', () => {
    expect(entryPath('./a//b/./c/')).toBe('a/b/c');
    expect(entryPath('./')).toBe('');
    expect(() => entryPath('/etc/passwd')).toThrow(/absolute/);
    expect(() => entryPath('a/../../b')).toThrow(/climbs out/);
    expect(() => entryPath('a/..')).toThrow(/climbs out/);
    expect(() => entryPath('a\0b')).toThrow(/NUL/);
  });

  it('lets symlinks point anywhere inside the layer, and absolute ones at the container root', () => {
    expect(symlinkStaysInside('bin/sh', 'busybox')).toBe(true);
    expect(symlinkStaysInside('usr/bin/x', '../../lib/y')).toBe(true);
    expect(symlinkStaysInside('usr/bin/x', '../../../etc')).toBe(false);
    expect(symlinkStaysInside('x', '..')).toBe(false);
    expect(symlinkStaysInside('a/x', 'b/../../..')).toBe(false);
    expect(symlinkStaysInside('lib64', '/usr/lib64')).toBe(true);
  });

  it('classifies whiteouts and opaque markers', () => {
    expect(classifyEntry('etc/.wh.passwd')).toEqual({ kind: 'whiteout', target: 'etc/passwd' });
    expect(classifyEntry('.wh.usr')).toEqual({ kind: 'whiteout', target: 'usr' });
    expect(classifyEntry('var/cache/.wh..wh..opq')).toEqual({ kind: 'opaque', dir: 'var/cache' });
    expect(classifyEntry('.wh..wh..opq')).toEqual({ kind: 'opaque', dir: '' });
    expect(classifyEntry('.wh..wh.plnk/1')).toEqual({ kind: 'entry' });
    expect(classifyEntry('a/.wh..wh.plnk')).toEqual({ kind: 'reserved' });
    expect(classifyEntry('a/wh.b')).toEqual({ kind: 'entry' });
  });

  it('plans whiteouts: none without a parent, same-layer entries win, opaque directories cover what is under them', () => {
    const own = new Set(['', 'etc', 'etc/new', 'var', 'var/cache', 'var/cache/keep']);
    expect(planWhiteouts({ whiteouts: ['etc/old'], opaques: ['var'], own, hasParent: false })).toEqual([]);
    expect(
      planWhiteouts({
        whiteouts: ['etc/old', 'etc/new', 'var/cache/x', 'usr'],
        opaques: ['var/cache', 'var'],
        own,
        hasParent: true,
      }),
    ).toEqual([
      { op: 'remove', path: 'etc/old' },
      { op: 'remove', path: 'usr' },
      { op: 'hide-lower', path: 'var' },
    ]);
  });

  it('computes chain IDs as the image spec does', () => {
    const a = sha('layer a');
    const b = sha('layer b');
    expect(chainIds([a, b])).toEqual([a, sha(`${a} ${b}`)]);
  });
});

describe('hostile layers are refused and nothing is written outside the layer', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}hostile-`));
    mkdirSync(join(dir, 'layer'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const apply = (tar: Buffer) =>
    applyLayer([tar], [{ type: 'bind', source: join(dir, 'layer'), options: ['rw', 'rbind'] }], {
      scratch: join(dir, 'scratch'),
    });

  const cases: [string, TarEntry[], string][] = [
    ['path traversal', [{ name: '../escaped', content: 'x' }], 'path-traversal'],
    ['an absolute path', [{ name: '/escaped', content: 'x' }], 'absolute-path'],
    [
      'a symlink climbing out',
      [{ name: 'up', type: 'symlink', linkname: '../../../escaped' }],
      'link-escape',
    ],
    [
      'a write through a symlink',
      [
        { name: 'out', type: 'symlink', linkname: '/' },
        { name: 'out/escaped', content: 'x' },
      ],
      'through-symlink',
    ],
    [
      'a whiteout through a symlink',
      [
        { name: 'out', type: 'symlink', linkname: '/' },
        { name: 'out/.wh.escaped', content: '' },
      ],
      'through-symlink',
    ],
    ['a hard link to a host file', [{ name: 'h', type: 'link', linkname: '/etc/passwd' }], 'absolute-path'],
    [
      'a hard link to nothing in the layer',
      [{ name: 'h', type: 'link', linkname: 'missing' }],
      'hardlink-target',
    ],
    [
      'a file where a directory is needed',
      [
        { name: 'f', content: 'x' },
        { name: 'f/child', content: 'y' },
      ],
      'not-a-directory',
    ],
  ];
  for (const [what, entries, reason] of cases)
    it(`refuses ${what}`, async () => {
      const error = await failure(async () => apply(await tarOf(entries)));
      expect(error).toMatchObject({ code: 'InvalidInput', details: { reason } });
      expect(existsSync(join(dir, 'escaped'))).toBe(false);
      expect(existsSync('/escaped')).toBe(false);
    });

  it('refuses a truncated tar and a truncated gzip layer', async () => {
    const tar = await tarOf([{ name: 'big', content: randomBytes(50_000).toString('hex') }]);
    const error = await failure(() => apply(tar.subarray(0, 20_000)));
    expect(error).toMatchObject({ code: 'InvalidInput', details: { reason: 'truncated' } });

    const layout = join(dir, 'oci');
    writeLayout(layout, [{ tar, gzip: true }]);
    const blob = join(layout, 'blobs', 'sha256');
    const image = await loadOciImage(layout);
    const file = join(blob, image.layers[0]?.descriptor.digest.slice(7) as string);
    writeFileSync(file, readFileSync(file).subarray(0, 30_000));
    const store = new MemoryStore();
    const snapshots = new OverlaySnapshotter({ store, root: join(dir, 'snap') });
    const truncated = await failure(() => unpackOciImage(layout, snapshots));
    expect(truncated.code).toBe('InvalidInput');
    expect(await snapshots.list()).toEqual([]);
  });
});

describe('OCI layout reading', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}layout-`));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('verifies manifest and config digests, and refuses unknown layer media types and bad digests', async () => {
    const tar = await tarOf([{ name: 'a', content: 'a' }]);
    const { diffIds } = writeLayout(dir, [{ tar, gzip: false }]);
    const image = await loadOciImage(dir, { ref: 'latest' });
    expect(image.layers).toMatchObject([{ diffId: diffIds[0], compression: 'none' }]);
    expect((await failure(() => loadOciImage(dir, { ref: 'nope' }))).code).toBe('NotFound');

    const zstd = join(dir, 'zstd');
    writeLayout(zstd, [{ tar, gzip: false, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }]);
    expect((await failure(() => loadOciImage(zstd))).code).toBe('Unsupported');

    // A manifest edited after it was named: its digest no longer matches.
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
    const manifestFile = join(dir, 'blobs', 'sha256', index.manifests[0].digest.slice(7));
    writeFileSync(
      manifestFile,
      readFileSync(manifestFile, 'utf8').replace('"schemaVersion":2', '"schemaVersion": 2'),
    );
    index.manifests[0].size += 1;
    writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
    expect(await failure(() => loadOciImage(dir))).toMatchObject({
      code: 'InvalidInput',
      details: { reason: 'digest-mismatch' },
    });
    index.manifests[0].digest = 'sha256:../../etc/passwd';
    writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
    expect(await failure(() => loadOciImage(dir))).toMatchObject({ details: { reason: 'bad-digest' } });
  });
});

describeWith(['root'], 'OCI unpack into overlay snapshots', () => {
  let dir: string;
  let snapshots: OverlaySnapshotter;
  const mounted: string[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}unpack-`));
    snapshots = new OverlaySnapshotter({ store: new MemoryStore(), root: join(dir, 'snap') });
  });
  afterEach(async () => {
    for (const m of mounted.splice(0)) await unmountQuietly(m);
    rmSync(dir, { recursive: true, force: true });
  });

  async function mountView(key: string, parent: string): Promise<string> {
    const target = join(dir, `view-${key}`);
    mkdirSync(target);
    await mountAll(await snapshots.view(key, parent), target);
    mounted.push(target);
    return target;
  }

  it('unpacks three layers (gzip and plain) with a whiteout and an opaque directory to exactly the expected tree', async () => {
    const layer1 = await tarOf([
      { name: 'bin/', type: 'directory' },
      { name: 'bin/sh', content: '#!busybox', mode: 0o755 },
      { name: 'bin/ash', type: 'link', linkname: 'bin/sh' },
      { name: 'bin/bash', type: 'symlink', linkname: 'sh' },
      { name: 'etc/', type: 'directory' },
      { name: 'etc/config', content: 'v1' },
      { name: 'etc/doomed', content: 'bye' },
      { name: 'data/', type: 'directory', mode: 0o750 },
      { name: 'data/a', content: 'a' },
      { name: 'data/sub/c', content: 'c' },
      { name: 'usr/lib/libx.so', content: 'elf' },
    ]);
    const layer2 = await tarOf([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/.wh.doomed', content: '' },
      { name: 'etc/config', content: 'v2' },
      { name: 'data/', type: 'directory', mode: 0o750 },
      { name: 'data/new', content: 'new' },
      { name: 'data/sub/', type: 'directory' },
      { name: 'data/sub/d', content: 'd' },
      { name: 'data/.wh..wh..opq', content: '' },
    ]);
    const layer3 = await tarOf([
      { name: '.wh.usr', content: '' },
      { name: 'opt/app', content: 'app' },
    ]);
    const layout = join(dir, 'oci');
    const { diffIds } = writeLayout(layout, [
      { tar: layer1, gzip: true },
      { tar: layer2, gzip: false },
      { tar: layer3, gzip: true },
    ]);
    const image = await unpackOciImage(layout, snapshots, { ref: 'latest' });
    const chains = chainIds(diffIds);
    expect(image.snapshot).toBe(chains[2]);
    expect(image.layers.map((l) => [l.chainId, l.unpacked])).toEqual(chains.map((c) => [c, true]));
    expect(image.layers[1]?.applied).toMatchObject({ whiteouts: 1, opaques: 1 });

    const root = await mountView('check', image.snapshot);
    expect(mountedTree(root)).toEqual({
      'bin/': 'dir 755',
      'bin/ash': 'file 755 #!busybox',
      'bin/bash': 'link sh',
      'bin/sh': 'file 755 #!busybox',
      'data/': 'dir 750',
      'data/new': 'file 644 new',
      'data/sub/': 'dir 755',
      'data/sub/d': 'file 644 d',
      'etc/': 'dir 755',
      'etc/config': 'file 644 v2',
      'opt/': 'dir 755',
      'opt/app': 'file 644 app',
    });
    expect(lstatSync(join(root, 'bin/sh')).ino).toBe(lstatSync(join(root, 'bin/ash')).ino);
    // The layers below are untouched: layer 1 alone still has everything.
    const first = await mountView('first', chains[0] as string);
    expect(readFileSync(join(first, 'etc/doomed'), 'utf8')).toBe('bye');
    expect(readFileSync(join(first, 'data/a'), 'utf8')).toBe('a');

    // Unpacking again shares every layer.
    const again = await unpackOciImage(layout, snapshots);
    expect(again.layers.every((l) => !l.unpacked)).toBe(true);
    expect((await snapshots.list()).filter((s) => s.kind === 'committed')).toHaveLength(3);
  });

  it('refuses a layer whose bytes do not match its digest, and commits nothing of it', async () => {
    const good = await tarOf([{ name: 'a', content: 'a' }]);
    const bad = await tarOf([{ name: 'b', content: 'b' }]);
    const layout = join(dir, 'oci');
    const { blobs } = writeLayout(layout, [
      { tar: good, gzip: false },
      { tar: bad, gzip: true },
    ]);
    const file = join(layout, 'blobs', 'sha256', (blobs[1] as string).slice(7));
    writeFileSync(file, gzipSync(await tarOf([{ name: 'b', content: 'B' }])));
    const error = await failure(() => unpackOciImage(layout, snapshots));
    expect(error).toMatchObject({ code: 'InvalidInput' });
    expect(['digest-mismatch', 'size-mismatch']).toContain(error.details.reason);
    const left = await snapshots.list();
    expect(left.map((s) => s.kind)).toEqual(['committed']);
    expect(await snapshots.cleanup({ olderThanMs: 0 })).toEqual([]);
  });

  it('records whiteouts in the layer as overlayfs does (a 0/0 character device)', async () => {
    const layout = join(dir, 'oci');
    writeLayout(layout, [
      { tar: await tarOf([{ name: 'gone', content: 'x' }]), gzip: false },
      { tar: await tarOf([{ name: '.wh.gone', content: '' }]), gzip: false },
    ]);
    const image = await unpackOciImage(layout, snapshots);
    const out = await runCommand('find', [join(dir, 'snap', 'snapshots'), '-name', 'gone', '-type', 'c']);
    expect(out.stdout.trim().split('\n')).toHaveLength(1);
    const root = await mountView('v', image.snapshot);
    expect(existsSync(join(root, 'gone'))).toBe(false);
  });
});
