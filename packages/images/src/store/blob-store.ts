import { createHash, type Hash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, link, mkdir, open, readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { NubesError } from '@nubes/core';

/** Bytes collected before one write: fewer, larger writes keep the hashing the bottleneck. */
const WRITE_BATCH = 1024 * 1024;

/** Data written to a temporary file of a {@link LocalBlobStore}, hashed, not yet a blob. */
export interface StagedBlob {
  /** `sha256:<hex>`: the blob's name once committed. */
  digest: string;
  size: number;
  sha512: string;
  /** MD5 (Glance's legacy checksum), when asked for. */
  md5: string | null;
  /** The temporary file (inspect it before committing). */
  path: string;
}

/** Options of {@link LocalBlobStore.stage}. */
export interface StageOptions {
  /** Refuse (`PayloadTooLarge`) once more than this many bytes arrive. */
  maxBytes: number;
  /** Also compute an MD5. */
  md5: boolean;
  /** Called after every write with the bytes so far. */
  onBytes?: (done: number) => void;
  /** Stops the copy (the call rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** A byte range of a blob, both ends inclusive, as HTTP ranges are. */
export interface ByteRange {
  start: number;
  end: number;
}

const DIGEST = /^sha256:([0-9a-f]{64})$/;

/**
 * Content-addressed blobs on a local directory: `sha256/<2 hex>/<64 hex>`. Data goes to `tmp/`
 * first and becomes a blob by a rename after an fsync, so a crash can leave a temporary file (the
 * sweeper's to remove) but never a partial blob under a real name. Blobs are read-only files:
 * instance disks use them as backing files.
 */
export class LocalBlobStore {
  /** The directory holding everything. */
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** The file of a blob (whether or not it exists). */
  blobPath(digest: string): string {
    const hex = DIGEST.exec(digest)?.[1];
    if (!hex) throw new NubesError('InvalidInput', `digest: not a sha256 digest: ${digest}`);
    return join(this.root, 'sha256', hex.slice(0, 2), hex);
  }

  /** The directory of temporary files. */
  get tempDir(): string {
    return join(this.root, 'tmp');
  }

  /** Copies a stream into a fresh temporary file, hashing it on the way, and fsyncs it. */
  async stage(source: AsyncIterable<Uint8Array> | Readable, options: StageOptions): Promise<StagedBlob> {
    await mkdir(this.tempDir, { recursive: true });
    const path = join(this.tempDir, `${Date.now()}-${randomBytes(8).toString('hex')}.part`);
    const sha256 = createHash('sha256');
    const sha512 = createHash('sha512');
    const md5: Hash | null = options.md5 ? createHash('md5') : null;
    const file = await open(path, 'wx', 0o600);
    let size = 0;
    try {
      let batch: Buffer[] = [];
      let batched = 0;
      const flush = async () => {
        if (batched === 0) return;
        const data = batch.length === 1 ? (batch[0] as Buffer) : Buffer.concat(batch, batched);
        batch = [];
        batched = 0;
        await file.write(data, 0, data.length);
        options.onBytes?.(size);
      };
      for await (const chunk of source) {
        options.signal?.throwIfAborted();
        const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
        size += data.length;
        if (size > options.maxBytes)
          throw new NubesError('PayloadTooLarge', `image data exceeds ${options.maxBytes} bytes`, {
            details: { limit: options.maxBytes },
          });
        sha256.update(data);
        sha512.update(data);
        md5?.update(data);
        batch.push(data);
        batched += data.length;
        if (batched >= WRITE_BATCH) await flush();
      }
      options.signal?.throwIfAborted();
      await flush();
      await file.sync();
    } catch (error) {
      await file.close().catch(() => {});
      await rm(path, { force: true });
      throw error;
    }
    await file.close();
    return {
      digest: `sha256:${sha256.digest('hex')}`,
      size,
      sha512: sha512.digest('hex'),
      md5: md5 ? md5.digest('hex') : null,
      path,
    };
  }

  /**
   * Turns a staged file into its blob. An existing blob of the same digest is kept (same bytes), and
   * link() rather than rename() never replaces one a concurrent writer just made. Returns the blob's path.
   */
  async commit(staged: StagedBlob): Promise<string> {
    const target = this.blobPath(staged.digest);
    await mkdir(join(target, '..'), { recursive: true });
    await chmod(staged.path, 0o444);
    try {
      await link(staged.path, target);
      await syncDir(join(target, '..'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      // A fresh mtime tells the sweeper this blob is wanted again, before the store's reference lands.
      const now = new Date();
      await utimes(target, now, now);
    } finally {
      await rm(staged.path, { force: true });
    }
    return target;
  }

  /** Removes a staged file that will not become a blob. */
  async discard(staged: Pick<StagedBlob, 'path'>): Promise<void> {
    await rm(staged.path, { force: true });
  }

  /** Whether a blob exists. */
  async has(digest: string): Promise<boolean> {
    try {
      await stat(this.blobPath(digest));
      return true;
    } catch {
      return false;
    }
  }

  /** Removes a blob (no error if it is gone). */
  async remove(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }

  /** Reads a blob, or a range of it. */
  read(digest: string, range?: ByteRange): Readable {
    return createReadStream(this.blobPath(digest), range ? { start: range.start, end: range.end } : {});
  }

  /** Every blob on disk with its modification time. */
  async list(): Promise<{ digest: string; mtimeMs: number }[]> {
    const out: { digest: string; mtimeMs: number }[] = [];
    for (const prefix of await readdirOrEmpty(join(this.root, 'sha256'))) {
      for (const hex of await readdirOrEmpty(join(this.root, 'sha256', prefix))) {
        const digest = `sha256:${hex}`;
        if (!DIGEST.test(digest)) continue;
        const s = await stat(join(this.root, 'sha256', prefix, hex)).catch(() => undefined);
        if (s) out.push({ digest, mtimeMs: s.mtimeMs });
      }
    }
    return out;
  }

  /** Temporary files with their modification times (a crashed upload's leftovers among them). */
  async listTemp(): Promise<{ path: string; mtimeMs: number }[]> {
    const out: { path: string; mtimeMs: number }[] = [];
    for (const name of await readdirOrEmpty(this.tempDir)) {
      const path = join(this.tempDir, name);
      const s = await stat(path).catch(() => undefined);
      if (s) out.push({ path, mtimeMs: s.mtimeMs });
    }
    return out;
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** Makes a rename or link durable: the new directory entry survives power loss only after this. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
