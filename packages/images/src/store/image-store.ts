import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import {
  type JsonValue,
  NubesError,
  newId,
  notFound,
  parseInput,
  type Store,
  type Transaction,
} from '@nubes/core';
import type { Dispatcher } from 'undici';
import { z } from 'zod';
import { type InspectOptions, inspectImage } from '../inspector/inspect.js';
import { createImage } from '../operations/create.js';
import { convertImage } from '../operations/transfer.js';
import type { ProgressListener } from '../types.js';
import { type ByteRange, LocalBlobStore, type StagedBlob } from './blob-store.js';
import {
  type CreateImageRecordInput,
  createImageRecordSchema,
  type ImagePage,
  type ImageRecord,
  inspectedFormatOf,
  type ListImagesOptions,
  listImagesSchema,
  type MemberRecord,
  type MemberStatus,
  selectImages,
  type UpdateImageRecordInput,
  updateImageRecordSchema,
} from './records.js';
import { assertTransition, type ImageStatus } from './status.js';
import { openWebDownload } from './web-download.js';

const GIB = 1024 ** 3;

const optionsSchema = z.object({
  store: z.custom<Store>((v) => typeof v === 'object' && v !== null && 'transaction' in v, 'must be a Store'),
  dir: z.string().min(1),
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9._-]*\/$/, 'must end with / and hold no other /')
    .default('images/'),
  maxImageBytes: z
    .number()
    .int()
    .positive()
    .default(2 ** 40),
  checksum: z.enum(['md5', 'none']).default('md5'),
  inspect: z.custom<InspectOptions>().optional(),
  webDownload: z
    .object({
      timeoutMs: z.number().int().positive().default(600_000),
      maxRedirections: z.number().int().min(0).max(20).default(3),
      allowUrl: z.custom<(url: URL) => boolean>((v) => typeof v === 'function').optional(),
      dispatcher: z.custom<Dispatcher>().optional(),
    })
    .default({ timeoutMs: 600_000, maxRedirections: 3 }),
  now: z.custom<() => number>((v) => typeof v === 'function').default(() => () => Date.now()),
});

/** Settings of an {@link ImageStore}. */
export type ImageStoreOptions = z.input<typeof optionsSchema>;

const imageId = z.uuid();
const safeName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be 1-128 letters, digits, dot, dash or underscore');
const project = z.string().min(1).max(255);
const transferSchema = z.object({
  /** Per-call cap (the store's `maxImageBytes` still applies). */
  maxBytes: z.number().int().positive().optional(),
  onProgress: z.custom<ProgressListener>((v) => typeof v === 'function').optional(),
});

/** Options of {@link ImageStore.upload} and {@link ImageStore.stage}. */
export type UploadOptions = z.input<typeof transferSchema>;

const webImportSchema = transferSchema.extend({
  url: z.url({ protocol: /^https?$/ }),
  timeoutMs: z.number().int().positive().optional(),
});

/** Options of {@link ImageStore.importFromUrl}. */
export type WebImportOptions = z.input<typeof webImportSchema>;

const rangeSchema = z
  .object({ start: z.number().int().min(0), end: z.number().int().min(0).optional() })
  .refine((r) => r.end === undefined || r.end >= r.start, { message: 'end is before start', path: ['end'] });

/** A byte range to download; `end` is inclusive and defaults to the last byte. */
export type DownloadRange = z.input<typeof rangeSchema>;

/** Image data being downloaded. */
export interface ImageDownload {
  stream: Readable;
  /** Bytes of the whole image. */
  size: number;
  /** The range served, when one was asked for (for a `Content-Range` header). */
  range?: ByteRange;
  /** Bytes `stream` will carry. */
  contentLength: number;
  /** Glance's `Content-MD5`, when computed. */
  checksum: string | null;
}

const diskSchema = z.object({
  /** Names the disk (and its file); a new id when absent. */
  instanceId: safeName.optional(),
  /** Virtual size in bytes (at least the image's and `minDisk`); the image's by default. */
  size: z
    .number()
    .int()
    .positive()
    .max(2 ** 50)
    .optional(),
  /** Where to create the overlay (an absolute path); `<dir>/instances/<instanceId>.qcow2` by default. */
  path: z.string().refine(isAbsolute, 'must be absolute').optional(),
});

/** Options of {@link ImageStore.prepareInstanceDisk}. */
export type PrepareDiskOptions = z.input<typeof diskSchema>;

/** A copy-on-write disk of one instance, backed by an image's blob. */
export interface InstanceDisk {
  instanceId: string;
  imageId: string;
  /** The qcow2 overlay the instance writes to. */
  path: string;
  /** The read-only base (the image's blob); absent once flattened. */
  backingFile: string | null;
  backingFormat: 'qcow2' | 'raw';
  virtualSize: number;
  createdAt: string;
}

/** What {@link ImageStore.sweep} found and fixed. */
export interface SweepReport {
  /** Temporary upload files of crashed uploads, removed. */
  tempFiles: string[];
  /** Blobs no image refers to, removed. */
  orphanBlobs: string[];
  /** Images stuck in `saving` or `importing` (their upload died with the process), now `killed`. */
  killedImages: string[];
  /** Images stuck in `uploading` with nothing staged, back to `queued`. */
  requeuedImages: string[];
  /** `pending_delete` images deleted for good (as Glance's scrubber does). */
  scrubbedImages: string[];
  /** Staged files with no image waiting for them, and instance-disk files with no record, removed. */
  strayFiles: string[];
  /** Instance-disk records whose file is gone, removed (with their use of the image). */
  lostDisks: string[];
  /** Images whose blob is missing: nothing safe can be done automatically; they are reported. */
  missingBlobs: string[];
}

interface BlobRef {
  images: string[];
}

interface UseRecord {
  holder: string;
  since: string;
}

interface StagingRecord extends Omit<StagedBlob, 'path'> {
  file: string;
}

function json(value: unknown): JsonValue {
  return value as JsonValue;
}

function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

/**
 * A Glance-like image store: records in a {@link Store}, data in content-addressed blobs on a local
 * directory. Uploads are checked by the safe inspector against the declared disk format before they
 * become blobs, so a refused upload leaves nothing but a `killed` record. Instance disks are qcow2
 * overlays on the blob itself, so any number of instances share one base file.
 *
 * Ordering keeps the store consistent across crashes: a blob is on disk (fsynced, renamed) before a
 * record refers to it, and a record stops referring to a blob before the blob is removed; what a
 * crash can leave (temporary files, unreferenced blobs, transfers that never finished) is what
 * {@link ImageStore.sweep} cleans up.
 */
export class ImageStore {
  /** The blob backend (its files are the bases of instance disks). */
  readonly blobs: LocalBlobStore;
  private readonly o: z.output<typeof optionsSchema>;
  private readonly store: Store;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(options: ImageStoreOptions) {
    this.o = parseInput(optionsSchema, options, 'options');
    this.store = this.o.store;
    this.blobs = new LocalBlobStore(join(resolve(this.o.dir), 'blobs'));
  }

  // ---- keys ----

  private key(kind: string, ...parts: string[]): string {
    return `${this.o.prefix}${kind}/${parts.join('/')}`;
  }

  private now(): string {
    return new Date(this.o.now()).toISOString();
  }

  private get stagingDir(): string {
    return join(resolve(this.o.dir), 'staging');
  }

  private get instancesDir(): string {
    return join(resolve(this.o.dir), 'instances');
  }

  // ---- records ----

  /** Registers a new image in `queued`, with no data yet. */
  async create(input: CreateImageRecordInput): Promise<ImageRecord> {
    const i = parseInput(createImageRecordSchema, input, 'image');
    const now = this.now();
    const record: ImageRecord = {
      id: i.id ?? newId(),
      name: i.name ?? null,
      owner: i.owner,
      status: 'queued',
      visibility: i.visibility,
      protected: i.protected,
      diskFormat: i.diskFormat,
      containerFormat: i.containerFormat,
      size: null,
      virtualSize: null,
      checksum: null,
      osHashAlgo: null,
      osHashValue: null,
      digest: null,
      minDisk: i.minDisk,
      minRam: i.minRam,
      tags: [...new Set(i.tags)],
      properties: i.properties,
      createdAt: now,
      updatedAt: now,
      transferStartedAt: null,
    };
    await this.store.transaction(async (tx) => {
      if (await tx.get(this.key('records', record.id)))
        throw new NubesError('Conflict', `image ${record.id} already exists`, {
          details: { imageId: record.id },
        });
      tx.put(this.key('records', record.id), json(record));
    });
    return record;
  }

  /** One image (`NotFound` once deleted). */
  async get(id: string): Promise<ImageRecord> {
    const key = this.key('records', parseInput(imageId, id, 'imageId'));
    const entry = await this.store.get<ImageRecord>(key);
    if (!entry) throw notFound('image', id);
    return entry.value;
  }

  private async read(tx: Transaction, id: string): Promise<ImageRecord> {
    const entry = await tx.get<ImageRecord>(this.key('records', id));
    if (!entry) throw notFound('image', id);
    return entry.value;
  }

  /** Moves an image through the state machine inside `tx`, refusing illegal moves. */
  private async move(
    tx: Transaction,
    id: string,
    to: ImageStatus,
    change: Partial<ImageRecord> = {},
    expect?: readonly ImageStatus[],
  ): Promise<ImageRecord> {
    const record = await this.read(tx, id);
    if (expect && !expect.includes(record.status))
      throw new NubesError('Conflict', `image ${id} is ${record.status}, expected ${expect.join(' or ')}`, {
        details: { imageId: id, status: record.status, reason: 'illegal-transition' },
      });
    if (record.status !== to) assertTransition(id, record.status, to);
    const next = { ...record, ...change, status: to, updatedAt: this.now() };
    tx.put(this.key('records', id), json(next));
    return next;
  }

  /** Changes what a client may change: name, visibility, protection, minimums, tags, properties. */
  async update(id: string, patch: UpdateImageRecordInput): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    const p = parseInput(updateImageRecordSchema, patch, 'patch');
    return this.store.transaction(async (tx) => {
      const record = await this.read(tx, id);
      if (record.status === 'pending_delete')
        throw new NubesError('Conflict', `image ${id} is pending deletion`, { details: { imageId: id } });
      const properties = { ...record.properties };
      for (const [k, v] of Object.entries(p.properties ?? {})) {
        if (v === null) delete properties[k];
        else properties[k] = v;
      }
      const next: ImageRecord = {
        ...record,
        ...(p.name !== undefined ? { name: p.name } : {}),
        ...(p.visibility ? { visibility: p.visibility } : {}),
        ...(p.protected !== undefined ? { protected: p.protected } : {}),
        ...(p.minDisk !== undefined ? { minDisk: p.minDisk } : {}),
        ...(p.minRam !== undefined ? { minRam: p.minRam } : {}),
        ...(p.tags ? { tags: [...new Set(p.tags)] } : {}),
        properties,
        updatedAt: this.now(),
      };
      tx.put(this.key('records', id), json(next));
      return next;
    });
  }

  /** Filters (owner, visibility, status, tags, name, visibleTo), sorts and pages with marker + limit. */
  async list(options: ListImagesOptions = {}): Promise<ImagePage> {
    const o = parseInput(listImagesSchema, options, 'options');
    const records = (await this.all<ImageRecord>(this.key('records', ''))).map((e) => e.value);
    const accepted = new Set<string>();
    if (o.visibleTo)
      for (const { value } of await this.all<MemberRecord>(this.key('members', '')))
        if (value.memberId === o.visibleTo && value.status === 'accepted') accepted.add(value.imageId);
    return selectImages(records, accepted, o);
  }

  private async all<T>(prefix: string): Promise<{ key: string; value: T }[]> {
    const out: { key: string; value: T }[] = [];
    let startAfter: string | undefined;
    do {
      const page = await this.store.list<T>(prefix, { limit: 1000, ...(startAfter ? { startAfter } : {}) });
      out.push(...page.items.map((e) => ({ key: e.key, value: e.value })));
      startAfter = page.next;
    } while (startAfter);
    return out;
  }

  /** Bytes and count of a project's images (every status but deleted), for a caller's quota reservation. */
  async projectUsage(owner: string): Promise<{ images: number; bytes: number }> {
    const o = parseInput(project, owner, 'owner');
    const mine = (await this.all<ImageRecord>(this.key('records', ''))).filter((e) => e.value.owner === o);
    return { images: mine.length, bytes: mine.reduce((n, e) => n + (e.value.size ?? 0), 0) };
  }

  // ---- data in ----

  private cap(maxBytes: number | undefined): number {
    return Math.min(maxBytes ?? this.o.maxImageBytes, this.o.maxImageBytes);
  }

  /**
   * Uploads image data (`queued` -> `saving` -> `active`). The data is hashed (sha256 for the blob
   * name, sha512 for `osHashValue`, MD5 for `checksum`) and inspected before it becomes a blob: a
   * format other than the declared one, or a dangerous image (a qcow2 naming a backing file, say),
   * or more than the size cap, sends the image to `killed` and leaves no blob.
   */
  async upload(
    id: string,
    data: AsyncIterable<Uint8Array> | Readable,
    options: UploadOptions = {},
  ): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    const o = parseInput(transferSchema, options, 'options');
    await this.store.transaction((tx) =>
      this.move(tx, id, 'saving', { transferStartedAt: this.now() }, ['queued']),
    );
    let staged: StagedBlob;
    try {
      staged = await this.blobs.stage(data, {
        maxBytes: this.cap(o.maxBytes),
        md5: this.o.checksum === 'md5',
        onBytes: (done) => o.onProgress?.({ operation: 'upload', done, total: 0 }),
      });
    } catch (error) {
      await this.abandon(id, 'saving', 'killed');
      throw error;
    }
    return this.ingest(id, 'saving', staged, 'killed');
  }

  /**
   * Stages data for an interoperable import (`queued` -> `uploading`); {@link ImageStore.importStaged}
   * then checks it and makes it the image's data. A failed stage returns the image to `queued`.
   */
  async stage(
    id: string,
    data: AsyncIterable<Uint8Array> | Readable,
    options: UploadOptions = {},
  ): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    const o = parseInput(transferSchema, options, 'options');
    const record = await this.store.transaction((tx) =>
      this.move(tx, id, 'uploading', { transferStartedAt: this.now() }, ['queued']),
    );
    try {
      const staged = await this.blobs.stage(data, {
        maxBytes: this.cap(o.maxBytes),
        md5: this.o.checksum === 'md5',
        onBytes: (done) => o.onProgress?.({ operation: 'stage', done, total: 0 }),
      });
      await mkdir(this.stagingDir, { recursive: true });
      const file = join(this.stagingDir, id);
      await rename(staged.path, file);
      const { path: _, ...facts } = staged;
      await this.store.transaction(async (tx) => {
        const current = await this.read(tx, id);
        if (current.status !== 'uploading')
          throw new NubesError('Conflict', `image ${id} left uploading while staging`, {
            details: { imageId: id },
          });
        tx.put(this.key('staging', id), json({ ...facts, file } satisfies StagingRecord));
      });
    } catch (error) {
      await rm(join(this.stagingDir, id), { force: true });
      await this.abandon(id, 'uploading', 'queued');
      throw error;
    }
    return { ...record };
  }

  /** Imports staged data (glance-direct): `uploading` -> `importing` -> `active`, or `killed` if refused. */
  async importStaged(id: string): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    const staging = await this.store.transaction(async (tx) => {
      const entry = await tx.get<StagingRecord>(this.key('staging', id));
      await this.move(tx, id, 'importing', { transferStartedAt: this.now() }, ['uploading']);
      if (!entry)
        throw new NubesError('Conflict', `image ${id} has no staged data`, { details: { imageId: id } });
      tx.delete(this.key('staging', id));
      return entry.value;
    });
    const { file, ...facts } = staging;
    return this.ingest(id, 'importing', { ...facts, path: file }, 'killed');
  }

  /**
   * Imports from an http(s) URL (web-download): `queued` -> `importing` -> `active`. The transfer has a
   * deadline (`Timeout`) and a size cap (`PayloadTooLarge`, checked against Content-Length first);
   * progress events report bytes received. A transport failure returns the image to `queued` (a client
   * may retry, as in Glance); data that is refused sends it to `killed`.
   */
  async importFromUrl(id: string, options: WebImportOptions): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    const o = parseInput(webImportSchema, options, 'options');
    const url = new URL(o.url);
    if (this.o.webDownload.allowUrl && !this.o.webDownload.allowUrl(url))
      throw new NubesError('Forbidden', `web-download from ${url.host} is not allowed`, {
        details: { field: 'options.url', url: url.href },
      });
    await this.store.transaction((tx) =>
      this.move(tx, id, 'importing', { transferStartedAt: this.now() }, ['queued']),
    );
    const maxBytes = this.cap(o.maxBytes);
    let staged: StagedBlob;
    try {
      const download = await openWebDownload(url, {
        timeoutMs: o.timeoutMs ?? this.o.webDownload.timeoutMs,
        maxBytes,
        maxRedirections: this.o.webDownload.maxRedirections,
        ...(this.o.webDownload.dispatcher ? { dispatcher: this.o.webDownload.dispatcher } : {}),
      });
      try {
        const total = download.contentLength ?? 0;
        staged = await this.blobs.stage(download.body, {
          maxBytes,
          md5: this.o.checksum === 'md5',
          signal: download.signal,
          onBytes: (done) => o.onProgress?.({ operation: 'web-download', done, total }),
        });
      } finally {
        await download.close();
      }
    } catch (error) {
      const refused = error instanceof NubesError && error.code === 'PayloadTooLarge';
      await this.abandon(id, 'importing', refused ? 'killed' : 'queued');
      throw error;
    }
    return this.ingest(id, 'importing', staged, 'killed');
  }

  /** Moves an image whose transfer failed, if it is still where the transfer left it. */
  private async abandon(id: string, from: ImageStatus, to: ImageStatus): Promise<void> {
    await this.store
      .transaction(async (tx) => {
        const entry = await tx.get<ImageRecord>(this.key('records', id));
        if (entry?.value.status === from) await this.move(tx, id, to, { transferStartedAt: null });
      })
      .catch(() => {
        // The transfer's own error is the one the caller needs; the sweeper fixes a record left behind.
      });
  }

  /** Inspects staged data, makes it a blob and the image active; on refusal, `killed` and no blob. */
  private async ingest(
    id: string,
    from: 'saving' | 'importing',
    staged: StagedBlob,
    onRefusal: ImageStatus,
  ): Promise<ImageRecord> {
    let virtualSize: number;
    try {
      const record = await this.get(id);
      const found = await inspectImage(staged.path, this.o.inspect ?? {});
      if (found.format !== inspectedFormatOf(record.diskFormat))
        throw new NubesError(
          'InvalidInput',
          `image ${id}: declared ${record.diskFormat} but the data is ${found.format}`,
          { details: { field: 'diskFormat', declared: record.diskFormat, detected: found.format } },
        );
      virtualSize = found.virtualSize;
    } catch (error) {
      await this.blobs.discard(staged);
      await this.abandon(id, from, onRefusal);
      throw error;
    }
    return this.withBlobLock(staged.digest, async () => {
      await this.blobs.commit(staged);
      try {
        return await this.store.transaction(async (tx) => {
          const next = await this.move(
            tx,
            id,
            'active',
            {
              size: staged.size,
              virtualSize,
              checksum: staged.md5,
              osHashAlgo: 'sha512',
              osHashValue: staged.sha512,
              digest: staged.digest,
              transferStartedAt: null,
            },
            [from],
          );
          const ref = (await tx.get<BlobRef>(this.key('blobs', hexOf(staged.digest))))?.value ?? {
            images: [],
          };
          tx.put(
            this.key('blobs', hexOf(staged.digest)),
            json({ images: [...new Set([...ref.images, id])] }),
          );
          return next;
        });
      } catch (error) {
        // The image moved on (deleted mid-upload): the blob must not outlive every reference.
        await this.dropBlobIfUnused(staged.digest);
        throw error;
      }
    });
  }

  /** Serializes reference changes and file operations on one blob within this process. */
  private async withBlobLock<T>(digest: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(digest) ?? Promise.resolve();
    const run = previous.catch(() => {}).then(fn);
    this.locks.set(digest, run);
    try {
      return await run;
    } finally {
      if (this.locks.get(digest) === run) this.locks.delete(digest);
    }
  }

  private async dropBlobIfUnused(digest: string): Promise<boolean> {
    const ref = await this.store.get<BlobRef>(this.key('blobs', hexOf(digest)));
    if (ref && ref.value.images.length > 0) return false;
    await this.blobs.remove(digest);
    return true;
  }

  // ---- data out ----

  /** Streams an active image's data, whole or a byte range (for HTTP 206 answers). */
  async download(id: string, range?: DownloadRange): Promise<ImageDownload> {
    const record = await this.get(id);
    const r = range === undefined ? undefined : parseInput(rangeSchema, range, 'range');
    if (record.status !== 'active' || !record.digest || record.size === null)
      throw new NubesError('Conflict', `image ${id} is ${record.status}: no data to download`, {
        details: { imageId: id, status: record.status },
      });
    let served: ByteRange | undefined;
    if (r) {
      if (r.start >= record.size)
        throw new NubesError('InvalidInput', `range: starts at ${r.start}, past the end (${record.size})`, {
          details: { field: 'range.start', size: record.size },
        });
      served = { start: r.start, end: Math.min(r.end ?? record.size - 1, record.size - 1) };
    }
    if (!(await this.blobs.has(record.digest)))
      throw new NubesError('NotFound', `image ${id}: its data (${record.digest}) is missing`, {
        details: { imageId: id, digest: record.digest },
      });
    return {
      stream: this.blobs.read(record.digest, served),
      size: record.size,
      ...(served ? { range: served } : {}),
      contentLength: served ? served.end - served.start + 1 : record.size,
      checksum: record.checksum,
    };
  }

  // ---- lifecycle ----

  /** `active` -> `deactivated`: no downloads and no new instance disks until reactivated. */
  async deactivate(id: string): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    return this.store.transaction((tx) => this.move(tx, id, 'deactivated', {}, ['active', 'deactivated']));
  }

  /** `deactivated` -> `active`. */
  async reactivate(id: string): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    return this.store.transaction((tx) => this.move(tx, id, 'active', {}, ['deactivated', 'active']));
  }

  /** Records that `holder` uses the image (a boot volume, a running instance); delete is refused meanwhile. */
  async acquire(id: string, holder: string): Promise<number> {
    parseInput(imageId, id, 'imageId');
    const h = parseInput(safeName, holder, 'holder');
    return this.store.transaction(async (tx) => {
      const record = await this.read(tx, id);
      if (record.status === 'pending_delete')
        throw new NubesError('Conflict', `image ${id} is pending deletion`, { details: { imageId: id } });
      tx.put(this.key('uses', id, h), json({ holder: h, since: this.now() } satisfies UseRecord));
      const page = await tx.list(this.key('uses', id, ''), { limit: 10_000 });
      return page.items.length;
    });
  }

  /** Drops `holder`'s use; returns the uses left. */
  async release(id: string, holder: string): Promise<number> {
    parseInput(imageId, id, 'imageId');
    const h = parseInput(safeName, holder, 'holder');
    return this.store.transaction(async (tx) => {
      tx.delete(this.key('uses', id, h));
      const page = await tx.list(this.key('uses', id, ''), { limit: 10_000 });
      return page.items.length;
    });
  }

  /** Who holds the image now. */
  async uses(id: string): Promise<string[]> {
    parseInput(imageId, id, 'imageId');
    return (await this.all<UseRecord>(this.key('uses', id, ''))).map((e) => e.value.holder);
  }

  /**
   * Deletes an image. Protected images and images in use are refused (`Conflict`, nothing changes).
   * `delayed` leaves it `pending_delete`, data kept until {@link ImageStore.sweep} scrubs it, as
   * Glance's delayed delete does; otherwise the record goes and the blob with it unless another image
   * has the same bytes.
   */
  async delete(id: string, options: { delayed?: boolean } = {}): Promise<ImageRecord> {
    parseInput(imageId, id, 'imageId');
    const o = parseInput(z.object({ delayed: z.boolean().default(false) }), options, 'options');
    const result = await this.store.transaction(async (tx) => {
      const record = await this.read(tx, id);
      if (record.protected)
        throw new NubesError('Conflict', `image ${id} is protected`, {
          details: { imageId: id, reason: 'protected' },
        });
      const uses = await tx.list<UseRecord>(this.key('uses', id, ''), { limit: 10_000 });
      if (uses.items.length > 0)
        throw new NubesError('Conflict', `image ${id} is in use by ${uses.items.length} holder(s)`, {
          details: { imageId: id, reason: 'in-use', holders: uses.items.map((u) => u.value.holder) },
        });
      if (o.delayed && record.status !== 'pending_delete')
        return { record: await this.move(tx, id, 'pending_delete'), digest: null };
      return { record: await this.forget(tx, record), digest: record.digest };
    });
    await this.afterForget(id, result.digest);
    return result.record;
  }

  /** Removes an image's keys inside `tx` and drops its blob reference; the caller removes files after. */
  private async forget(tx: Transaction, record: ImageRecord): Promise<ImageRecord> {
    assertTransition(record.id, record.status, 'deleted');
    tx.delete(this.key('records', record.id));
    tx.delete(this.key('staging', record.id));
    const members = await tx.list(this.key('members', record.id, ''), { limit: 10_000 });
    for (const m of members.items) tx.delete(m.key);
    if (record.digest) {
      const refKey = this.key('blobs', hexOf(record.digest));
      const ref = (await tx.get<BlobRef>(refKey))?.value ?? { images: [] };
      const images = ref.images.filter((i) => i !== record.id);
      if (images.length) tx.put(refKey, json({ images }));
      else tx.delete(refKey);
    }
    return { ...record, status: 'deleted', updatedAt: this.now() };
  }

  private async afterForget(id: string, digest: string | null): Promise<void> {
    await rm(join(this.stagingDir, id), { force: true });
    if (digest) await this.withBlobLock(digest, () => this.dropBlobIfUnused(digest));
  }

  // ---- members ----

  /** Offers a `shared` image to another project (`pending` until that project accepts). */
  async addMember(id: string, memberId: string): Promise<MemberRecord> {
    parseInput(imageId, id, 'imageId');
    const m = parseInput(project, memberId, 'memberId');
    return this.store.transaction(async (tx) => {
      const record = await this.read(tx, id);
      if (record.visibility !== 'shared')
        throw new NubesError('Conflict', `image ${id} is ${record.visibility}, not shared`, {
          details: { imageId: id, visibility: record.visibility },
        });
      if (m === record.owner)
        throw new NubesError('InvalidInput', 'memberId: is the owner', { details: { field: 'memberId' } });
      if (await tx.get(this.key('members', id, m)))
        throw new NubesError('Conflict', `${m} is already a member of image ${id}`, {
          details: { imageId: id, memberId: m },
        });
      const now = this.now();
      const member: MemberRecord = {
        imageId: id,
        memberId: m,
        status: 'pending',
        createdAt: now,
        updatedAt: now,
      };
      tx.put(this.key('members', id, m), json(member));
      return member;
    });
  }

  /** The member project's answer: `accepted` (the image shows in its listing) or `rejected`. */
  async setMemberStatus(id: string, memberId: string, status: MemberStatus): Promise<MemberRecord> {
    parseInput(imageId, id, 'imageId');
    const m = parseInput(project, memberId, 'memberId');
    const s = parseInput(z.enum(['pending', 'accepted', 'rejected']), status, 'status');
    return this.store.transaction(async (tx) => {
      const entry = await tx.get<MemberRecord>(this.key('members', id, m));
      if (!entry) throw notFound('member', `${id}/${m}`);
      const member = { ...entry.value, status: s, updatedAt: this.now() };
      tx.put(this.key('members', id, m), json(member));
      return member;
    });
  }

  /** Withdraws a share. */
  async removeMember(id: string, memberId: string): Promise<void> {
    parseInput(imageId, id, 'imageId');
    const m = parseInput(project, memberId, 'memberId');
    const existed = await this.store.delete(this.key('members', id, m));
    if (!existed) throw notFound('member', `${id}/${m}`);
  }

  /** The projects an image is shared with. */
  async listMembers(id: string): Promise<MemberRecord[]> {
    await this.get(id);
    return (await this.all<MemberRecord>(this.key('members', id, ''))).map((e) => e.value);
  }

  // ---- instance disks ----

  /**
   * A fresh qcow2 overlay on the image's blob for one instance: the blob is the shared read-only base,
   * so preparing a disk writes a few hundred KiB whatever the image's size. The disk holds a use of
   * the image (delete is refused) until {@link ImageStore.releaseInstanceDisk} or a flatten.
   */
  async prepareInstanceDisk(id: string, options: PrepareDiskOptions = {}): Promise<InstanceDisk> {
    parseInput(imageId, id, 'imageId');
    const o = parseInput(diskSchema, options, 'options');
    const instanceId = o.instanceId ?? newId();
    const path = o.path ?? join(this.instancesDir, `${instanceId}.qcow2`);
    const useName = `instance-${instanceId}`;
    const disk = await this.store.transaction(async (tx) => {
      const record = await this.read(tx, id);
      if (record.status !== 'active' || !record.digest || record.virtualSize === null)
        throw new NubesError('Conflict', `image ${id} is ${record.status}: it cannot back a disk`, {
          details: { imageId: id, status: record.status },
        });
      const backingFormat = inspectedFormatOf(record.diskFormat);
      if (backingFormat !== 'qcow2' && backingFormat !== 'raw')
        throw new NubesError(
          'Unsupported',
          `image ${id}: ${record.diskFormat} images cannot back a qcow2 overlay`,
          {
            details: { imageId: id, diskFormat: record.diskFormat },
          },
        );
      const size = o.size ?? Math.max(record.virtualSize, record.minDisk * GIB);
      if (size < record.virtualSize || size < record.minDisk * GIB)
        throw new NubesError('InvalidInput', `options.size: smaller than the image (or its minDisk)`, {
          details: { field: 'options.size', virtualSize: record.virtualSize, minDisk: record.minDisk },
        });
      if (await tx.get(this.key('disks', instanceId)))
        throw new NubesError('Conflict', `instance ${instanceId} already has a disk`, {
          details: { instanceId },
        });
      const disk: InstanceDisk = {
        instanceId,
        imageId: id,
        path,
        backingFile: this.blobs.blobPath(record.digest),
        backingFormat,
        virtualSize: size,
        createdAt: this.now(),
      };
      tx.put(this.key('disks', instanceId), json(disk));
      tx.put(
        this.key('uses', id, useName),
        json({ holder: useName, since: disk.createdAt } satisfies UseRecord),
      );
      return disk;
    });
    try {
      if (!o.path) await mkdir(this.instancesDir, { recursive: true });
      await createImage(path, {
        backingFile: disk.backingFile as string,
        backingFormat: disk.backingFormat,
        size: disk.virtualSize,
      });
    } catch (error) {
      await this.store.transaction((tx) => {
        tx.delete(this.key('disks', instanceId));
        tx.delete(this.key('uses', id, useName));
      });
      throw error;
    }
    return disk;
  }

  /** One instance disk. */
  async instanceDisk(instanceId: string): Promise<InstanceDisk> {
    const i = parseInput(safeName, instanceId, 'instanceId');
    const entry = await this.store.get<InstanceDisk>(this.key('disks', i));
    if (!entry) throw notFound('instance disk', i);
    return entry.value;
  }

  /** Every instance disk, optionally only those of one image. */
  async listInstanceDisks(imageIdFilter?: string): Promise<InstanceDisk[]> {
    const disks = (await this.all<InstanceDisk>(this.key('disks', ''))).map((e) => e.value);
    return imageIdFilter ? disks.filter((d) => d.imageId === imageIdFilter) : disks;
  }

  /**
   * Copies the base into the overlay so the disk stands alone (`qemu-img convert` of the chain into a
   * new file, renamed over the overlay), and drops its use of the image.
   */
  async flattenInstanceDisk(instanceId: string): Promise<InstanceDisk> {
    const disk = await this.instanceDisk(instanceId);
    if (disk.backingFile === null) return disk;
    const temp = `${disk.path}.flatten-${process.pid}.tmp`;
    try {
      await convertImage(disk.path, temp, { outputFormat: 'qcow2', sourceFormat: 'qcow2', overwrite: true });
      await rename(temp, disk.path);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    const flat: InstanceDisk = { ...disk, backingFile: null };
    await this.store.transaction((tx) => {
      tx.put(this.key('disks', instanceId), json(flat));
      tx.delete(this.key('uses', disk.imageId, `instance-${instanceId}`));
    });
    return flat;
  }

  /** Removes an instance's disk file and its record, and drops its use of the image. */
  async releaseInstanceDisk(instanceId: string): Promise<void> {
    const disk = await this.instanceDisk(instanceId);
    // Record first: a crash after it leaves a file with no record, which the sweeper removes.
    await this.store.transaction((tx) => {
      tx.delete(this.key('disks', instanceId));
      tx.delete(this.key('uses', disk.imageId, `instance-${instanceId}`));
    });
    await rm(disk.path, { force: true });
  }

  // ---- crash recovery ----

  /**
   * Finds and fixes what a crash can leave, older than `olderThanMs` (so transfers in progress in
   * another process are left alone): temporary files, blobs no record refers to, transfers that never
   * finished (-> `killed`), staged files without their image, instance-disk files without a record and
   * records without a file. Also scrubs `pending_delete` images. Safe to run at any time.
   */
  async sweep(options: { olderThanMs?: number } = {}): Promise<SweepReport> {
    const o = parseInput(
      z.object({ olderThanMs: z.number().int().min(0).default(3_600_000) }),
      options,
      'options',
    );
    const cutoff = this.o.now() - o.olderThanMs;
    const report: SweepReport = {
      tempFiles: [],
      orphanBlobs: [],
      killedImages: [],
      requeuedImages: [],
      scrubbedImages: [],
      strayFiles: [],
      lostDisks: [],
      missingBlobs: [],
    };
    for (const t of await this.blobs.listTemp())
      if (t.mtimeMs <= cutoff) {
        await rm(t.path, { force: true });
        report.tempFiles.push(t.path);
      }

    const records = (await this.all<ImageRecord>(this.key('records', ''))).map((e) => e.value);
    for (const r of records) {
      const started = r.transferStartedAt ? Date.parse(r.transferStartedAt) : 0;
      if ((r.status === 'saving' || r.status === 'importing') && started <= cutoff) {
        await this.store.transaction(async (tx) => {
          const now = await this.read(tx, r.id);
          if (now.status === r.status && now.transferStartedAt === r.transferStartedAt)
            await this.move(tx, r.id, 'killed', { transferStartedAt: null });
        });
        report.killedImages.push(r.id);
      }
      if (r.status === 'uploading' && started <= cutoff) {
        // A stage that died before its staged file was recorded: the client may stage again.
        const reset = await this.store.transaction(async (tx) => {
          const now = await this.read(tx, r.id);
          if (now.status !== 'uploading' || (await tx.get(this.key('staging', r.id)))) return false;
          await this.move(tx, r.id, 'queued', { transferStartedAt: null });
          return true;
        });
        if (reset) report.requeuedImages.push(r.id);
      }
      if (r.status === 'pending_delete') {
        const scrubbed = await this.store
          .transaction(async (tx) => {
            const now = await this.read(tx, r.id);
            const uses = await tx.list(this.key('uses', r.id, ''), { limit: 1 });
            if (now.status !== 'pending_delete' || uses.items.length > 0) return false;
            await this.forget(tx, now);
            return true;
          })
          .catch(() => false);
        if (scrubbed) {
          await this.afterForget(r.id, r.digest);
          report.scrubbedImages.push(r.id);
        }
      }
      if (
        (r.status === 'active' || r.status === 'deactivated') &&
        r.digest &&
        !(await this.blobs.has(r.digest))
      )
        report.missingBlobs.push(r.id);
    }

    const refs = new Set(
      (await this.all<BlobRef>(this.key('blobs', ''))).map((e) => `sha256:${e.key.split('/').at(-1)}`),
    );
    for (const b of await this.blobs.list())
      if (!refs.has(b.digest) && b.mtimeMs <= cutoff) {
        const removed = await this.withBlobLock(b.digest, () => this.dropBlobIfUnused(b.digest));
        if (removed) report.orphanBlobs.push(b.digest);
      }

    const staging = new Set(
      (await this.all<StagingRecord>(this.key('staging', ''))).map((e) => e.value.file),
    );
    for (const name of await readdir(this.stagingDir).catch(() => [] as string[])) {
      const file = join(this.stagingDir, name);
      if (!staging.has(file) && (await olderThan(file, cutoff))) {
        await rm(file, { force: true });
        report.strayFiles.push(file);
      }
    }

    const disks = (await this.all<InstanceDisk>(this.key('disks', ''))).map((e) => e.value);
    const diskFiles = new Set(disks.map((d) => d.path));
    for (const d of disks)
      if (Date.parse(d.createdAt) <= cutoff && !(await stat(d.path).catch(() => undefined))) {
        await this.store.transaction((tx) => {
          tx.delete(this.key('disks', d.instanceId));
          tx.delete(this.key('uses', d.imageId, `instance-${d.instanceId}`));
        });
        report.lostDisks.push(d.instanceId);
      }
    for (const name of await readdir(this.instancesDir).catch(() => [] as string[])) {
      const file = join(this.instancesDir, name);
      if (!diskFiles.has(file) && (await olderThan(file, cutoff))) {
        await rm(file, { force: true });
        report.strayFiles.push(file);
      }
    }
    return report;
  }
}

async function olderThan(path: string, cutoff: number): Promise<boolean> {
  const s = await stat(path).catch(() => undefined);
  return s !== undefined && s.mtimeMs <= cutoff;
}
