import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type JsonValue, NubesError, notFound, parseInput, type Store, type Transaction } from '@nubes/core';
import { z } from 'zod';
import type { Mount } from './lowerdir.js';

/** What a snapshot is: writable and in use, read-only and in use, or committed (immutable, shareable). */
export type SnapshotKind = 'active' | 'view' | 'committed';

/** A snapshot's metadata, as `stat` and `walk` report it. */
export interface SnapshotDetails {
  /** The key (active, view) or name (committed). */
  key: string;
  kind: SnapshotKind;
  /** The committed snapshot this one stacks on, if any. */
  parent: string | null;
  labels: Record<string, string>;
  createdAt: string;
  updatedAt: string;
}

/** Disk use of one snapshot's own layer (not its parents'), as containerd reports it. */
export interface SnapshotUsage {
  /** Bytes allocated (blocks), hard links counted once. */
  size: number;
  inodes: number;
}

/**
 * containerd's snapshotter interface: prepare a writable snapshot (or a read-only view) on a committed
 * parent, get its mounts as data, commit it under a name so others can stack on it, remove it.
 */
export interface Snapshotter {
  prepare(key: string, parent?: string, options?: { labels?: Record<string, string> }): Promise<Mount[]>;
  view(key: string, parent?: string, options?: { labels?: Record<string, string> }): Promise<Mount[]>;
  mounts(key: string): Promise<Mount[]>;
  commit(name: string, key: string, options?: { labels?: Record<string, string> }): Promise<void>;
  remove(key: string): Promise<void>;
  stat(key: string): Promise<SnapshotDetails>;
  list(): Promise<SnapshotDetails[]>;
  usage(key: string): Promise<SnapshotUsage>;
}

interface SnapshotRecord {
  id: number;
  kind: SnapshotKind;
  parent: string | null;
  labels: Record<string, string>;
  createdAt: string;
  updatedAt: string;
  /** Measured at commit: a committed layer never changes. */
  usage?: SnapshotUsage;
}

const keySchema = z
  .string()
  .min(1)
  .max(1024)
  .refine((k) => !k.includes('\0'), 'must not contain NUL');
const labelsSchema = z.record(z.string().min(1).max(4096), z.string().max(4096)).default({});
const optionsSchema = z.object({
  store: z.custom<Store>((v) => typeof v === 'object' && v !== null && 'transaction' in v, 'must be a Store'),
  root: z
    .string()
    .min(1)
    .refine((r) => !/[,:\s]/.test(r), 'must not contain commas, colons or spaces (they split mount options)'),
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9._-]*\/$/, 'must end with / and hold no other /')
    .default('snapshots/'),
  now: z.custom<() => number>((v) => typeof v === 'function').default(() => () => Date.now()),
});

/** Settings of an {@link OverlaySnapshotter}. */
export type OverlaySnapshotterOptions = z.input<typeof optionsSchema>;

/**
 * containerd's overlay snapshotter in TypeScript: metadata in a {@link Store}, each snapshot a numbered
 * directory (`<root>/snapshots/<id>/fs` and `work`) so lowerdir paths stay short, mounts returned as
 * data ({@link mountAll} performs them). Committed snapshots are immutable and shared by every child;
 * removing one that has children is refused.
 *
 * A snapshot's directory is made before its record and removed after it, so a crash leaves at worst a
 * directory without a record, which {@link OverlaySnapshotter.cleanup} removes.
 */
export class OverlaySnapshotter implements Snapshotter {
  /** The directory holding every snapshot. */
  readonly root: string;
  private readonly o: z.output<typeof optionsSchema>;

  constructor(options: OverlaySnapshotterOptions) {
    this.o = parseInput(optionsSchema, options, 'options');
    this.root = resolve(this.o.root);
  }

  private key(key: string): string {
    return `${this.o.prefix}keys/${encodeURIComponent(key)}`;
  }

  private get counter(): string {
    return `${this.o.prefix}next-id`;
  }

  /** The directory of snapshot number `id`. */
  private dir(id: number): string {
    return join(this.root, 'snapshots', String(id));
  }

  private now(): string {
    return new Date(this.o.now()).toISOString();
  }

  /** Creates a writable snapshot on `parent` (a committed snapshot) and returns its mounts. */
  prepare(key: string, parent?: string, options: { labels?: Record<string, string> } = {}): Promise<Mount[]> {
    return this.create('active', key, parent, options);
  }

  /** Creates a read-only snapshot of `parent` and returns its mounts. */
  view(key: string, parent?: string, options: { labels?: Record<string, string> } = {}): Promise<Mount[]> {
    return this.create('view', key, parent, options);
  }

  private async create(
    kind: 'active' | 'view',
    key: string,
    parent: string | undefined,
    options: { labels?: Record<string, string> },
  ): Promise<Mount[]> {
    const k = parseInput(keySchema, key, 'key');
    const p = parent === undefined ? null : parseInput(keySchema, parent, 'parent');
    const labels = parseInput(labelsSchema, options.labels, 'options.labels');
    const id = await this.o.store.transaction(async (tx) => {
      if (await tx.get(this.key(k)))
        throw new NubesError('Conflict', `snapshot ${k} already exists`, { details: { key: k } });
      if (p !== null) await this.committed(tx, p, 'parent');
      const next = ((await tx.get<number>(this.counter))?.value ?? 0) + 1;
      tx.put(this.counter, next);
      return next;
    });
    const dir = this.dir(id);
    await mkdir(join(dir, 'fs'), { recursive: true });
    if (kind === 'active') await mkdir(join(dir, 'work'), { recursive: true });
    try {
      await this.o.store.transaction(async (tx) => {
        if (await tx.get(this.key(k)))
          throw new NubesError('Conflict', `snapshot ${k} already exists`, { details: { key: k } });
        if (p !== null) await this.committed(tx, p, 'parent');
        const now = this.now();
        const record: SnapshotRecord = { id, kind, parent: p, labels, createdAt: now, updatedAt: now };
        tx.put(this.key(k), record as unknown as JsonValue);
      });
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
    return this.mounts(k);
  }

  private async committed(tx: Transaction, name: string, field: string): Promise<SnapshotRecord> {
    const entry = await tx.get<SnapshotRecord>(this.key(name));
    if (!entry)
      throw new NubesError('NotFound', `${field}: snapshot ${name} not found`, {
        details: { field, key: name },
      });
    if (entry.value.kind !== 'committed')
      throw new NubesError(
        'InvalidInput',
        `${field}: snapshot ${name} is ${entry.value.kind}, not committed`,
        {
          details: { field, key: name, kind: entry.value.kind },
        },
      );
    return entry.value;
  }

  private async record(key: string): Promise<SnapshotRecord> {
    const entry = await this.o.store.get<SnapshotRecord>(this.key(key));
    if (!entry) throw notFound('snapshot', key);
    return entry.value;
  }

  /** Directories of `parent` and its ancestors, nearest first (overlayfs's lowerdir order). */
  private async lowers(parent: string | null): Promise<string[]> {
    const out: string[] = [];
    const seen = new Set<string>();
    for (let p = parent; p !== null; ) {
      if (seen.has(p)) throw new NubesError('Internal', `snapshot chain loops at ${p}`);
      seen.add(p);
      const r = await this.record(p);
      out.push(join(this.dir(r.id), 'fs'));
      p = r.parent;
    }
    return out;
  }

  /**
   * The mounts of an active snapshot or a view, as data. Active: a bind of its directory when it has no
   * parent, else overlay with `lowerdir` (nearest parent first), `upperdir` and `workdir`. View: a
   * read-only bind of its single parent (or of an empty directory), or a read-only overlay of several.
   */
  async mounts(key: string): Promise<Mount[]> {
    const k = parseInput(keySchema, key, 'key');
    const r = await this.record(k);
    if (r.kind === 'committed')
      throw new NubesError(
        'InvalidInput',
        `key: snapshot ${k} is committed; prepare or view a child to mount it`,
        {
          details: { field: 'key', key: k },
        },
      );
    const own = this.dir(r.id);
    const lowers = await this.lowers(r.parent);
    if (r.kind === 'active') {
      if (lowers.length === 0) return [{ type: 'bind', source: join(own, 'fs'), options: ['rw', 'rbind'] }];
      return [
        {
          type: 'overlay',
          source: 'overlay',
          options: [
            'index=off',
            `workdir=${join(own, 'work')}`,
            `upperdir=${join(own, 'fs')}`,
            `lowerdir=${lowers.join(':')}`,
          ],
        },
      ];
    }
    if (lowers.length <= 1)
      return [{ type: 'bind', source: lowers[0] ?? join(own, 'fs'), options: ['ro', 'rbind'] }];
    return [
      { type: 'overlay', source: 'overlay', options: ['index=off', 'ro', `lowerdir=${lowers.join(':')}`] },
    ];
  }

  /**
   * Commits active snapshot `key` as `name`: from now on it is immutable and may be the parent of other
   * snapshots. Its usage is measured once here. The active key is gone afterwards.
   */
  async commit(name: string, key: string, options: { labels?: Record<string, string> } = {}): Promise<void> {
    const n = parseInput(keySchema, name, 'name');
    const k = parseInput(keySchema, key, 'key');
    const labels =
      options.labels === undefined ? undefined : parseInput(labelsSchema, options.labels, 'options.labels');
    const before = await this.record(k);
    if (before.kind !== 'active')
      throw new NubesError(
        'InvalidInput',
        `key: snapshot ${k} is ${before.kind}; only active snapshots commit`,
        {
          details: { field: 'key', key: k, kind: before.kind },
        },
      );
    const usage = await measure(join(this.dir(before.id), 'fs'));
    await this.o.store.transaction(async (tx) => {
      const entry = await tx.get<SnapshotRecord>(this.key(k));
      if (entry?.value.kind !== 'active' || entry.value.id !== before.id)
        throw notFound('active snapshot', k);
      if (await tx.get(this.key(n)))
        throw new NubesError('Conflict', `snapshot ${n} already exists`, { details: { key: n } });
      const record: SnapshotRecord = {
        ...entry.value,
        kind: 'committed',
        labels: labels ?? entry.value.labels,
        updatedAt: this.now(),
        usage,
      };
      tx.delete(this.key(k));
      tx.put(this.key(n), record as unknown as JsonValue);
    });
    // The work directory is only for mounting this snapshot writable, which will not happen again.
    await rm(join(this.dir(before.id), 'work'), { recursive: true, force: true });
  }

  /** Removes a snapshot; one that other snapshots stack on is refused (`Conflict`). */
  async remove(key: string): Promise<void> {
    const k = parseInput(keySchema, key, 'key');
    const id = await this.o.store.transaction(async (tx) => {
      const entry = await tx.get<SnapshotRecord>(this.key(k));
      if (!entry) throw notFound('snapshot', k);
      const children = (await this.scan(tx)).filter((s) => s.value.parent === k).map((s) => s.key);
      if (children.length)
        throw new NubesError('Conflict', `snapshot ${k} has ${children.length} child snapshot(s)`, {
          details: { key: k, children, reason: 'has-children' },
        });
      tx.delete(this.key(k));
      return entry.value.id;
    });
    await rm(this.dir(id), { recursive: true, force: true });
  }

  private async scan(reader: Pick<Store, 'list'>): Promise<{ key: string; value: SnapshotRecord }[]> {
    const prefix = `${this.o.prefix}keys/`;
    const out: { key: string; value: SnapshotRecord }[] = [];
    let startAfter: string | undefined;
    do {
      const page = await reader.list<SnapshotRecord>(prefix, {
        limit: 1000,
        ...(startAfter ? { startAfter } : {}),
      });
      for (const e of page.items)
        out.push({ key: decodeURIComponent(e.key.slice(prefix.length)), value: e.value });
      startAfter = page.next;
    } while (startAfter);
    return out;
  }

  private info(key: string, r: SnapshotRecord): SnapshotDetails {
    return {
      key,
      kind: r.kind,
      parent: r.parent,
      labels: r.labels,
      createdAt: r.createdAt,
      updatedAt: r.updatedAt,
    };
  }

  /** One snapshot's metadata. */
  async stat(key: string): Promise<SnapshotDetails> {
    const k = parseInput(keySchema, key, 'key');
    return this.info(k, await this.record(k));
  }

  /** Whether a snapshot exists (a committed layer already unpacked, say). */
  async exists(key: string): Promise<boolean> {
    const k = parseInput(keySchema, key, 'key');
    return (await this.o.store.get(this.key(k))) !== undefined;
  }

  /** Every snapshot, in key order (containerd's `Walk`). */
  async list(): Promise<SnapshotDetails[]> {
    return (await this.scan(this.o.store)).map((s) => this.info(s.key, s.value));
  }

  /** Bytes and inodes of the snapshot's own layer (measured at commit for committed ones). */
  async usage(key: string): Promise<SnapshotUsage> {
    const k = parseInput(keySchema, key, 'key');
    const r = await this.record(k);
    return r.usage ?? measure(join(this.dir(r.id), 'fs'));
  }

  /**
   * Removes snapshot directories that no record names (left by a crash between making a directory and
   * recording it, or between dropping a record and removing its directory) and returns them. Directories
   * younger than `olderThanMs` are left alone: a prepare in flight makes its directory before its record.
   */
  async cleanup(options: { olderThanMs?: number } = {}): Promise<string[]> {
    const o = parseInput(
      z.object({ olderThanMs: z.number().int().min(0).default(60_000) }),
      options,
      'options',
    );
    const known = new Set((await this.scan(this.o.store)).map((s) => String(s.value.id)));
    const removed: string[] = [];
    const base = join(this.root, 'snapshots');
    const cutoff = Date.now() - o.olderThanMs;
    for (const name of await readdir(base).catch(() => [] as string[])) {
      if (known.has(name)) continue;
      const s = await lstat(join(base, name)).catch(() => undefined);
      if (!s || s.mtimeMs > cutoff) continue;
      await rm(join(base, name), { recursive: true, force: true });
      removed.push(join(base, name));
    }
    return removed;
  }
}

/** Allocated bytes and inodes under `dir`, not following symlinks, hard links counted once. */
async function measure(dir: string): Promise<SnapshotUsage> {
  const seen = new Set<string>();
  let size = 0;
  let inodes = 0;
  const walk = async (path: string): Promise<void> => {
    const s = await lstat(path, { bigint: false });
    const id = `${s.dev}:${s.ino}`;
    if (seen.has(id)) return;
    seen.add(id);
    inodes++;
    size += s.blocks * 512;
    if (s.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
  };
  await walk(dir);
  return { size, inodes };
}
