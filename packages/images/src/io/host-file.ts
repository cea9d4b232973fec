import { close, fstat, fsync, ftruncate, open, read, write } from 'node:fs';
import { NubesError } from '@nubes/core';
import { badImage } from '../errors.js';

/** `fs.read` as a promise of the byte count (lighter per call than `FileHandle.read`, which wraps more). */
function pread(
  fd: number,
  buffer: Uint8Array,
  at: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buffer, at, length, position, (error, bytesRead) =>
      error ? reject(error) : resolve(bytesRead),
    );
  });
}

function pwrite(fd: number, data: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    write(fd, data, at, length, position, (error, written) => (error ? reject(error) : resolve(written)));
  });
}

/** Runs one fd-taking `fs` call as a promise. */
function call<T>(fn: (done: (error: NodeJS.ErrnoException | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((error, value) => (error ? reject(error) : resolve(value as T)));
  });
}

/**
 * One open host file: positional reads and writes with the file's size tracked in memory, so
 * the qcow2 engine can allocate at the end without an fstat per cluster. It works on a plain fd
 * with the callback `fs` API: per request that is one libuv round trip and one promise, the
 * cheapest form Node offers for the many small reads and writes of random guest I/O.
 */
export class HostFile {
  private constructor(
    /** The path the file was opened with (used in error messages). */
    readonly path: string,
    private fd: number,
    /** Whether writes are allowed. */
    readonly writable: boolean,
    private length: number,
  ) {}

  /** Opens `path` for reading, or for reading and writing. A missing file is `NotFound`. */
  static async open(path: string, writable: boolean): Promise<HostFile> {
    let fd: number;
    try {
      fd = await call<number>((done) => open(path, writable ? 'r+' : 'r', done));
    } catch (cause) {
      throw hostError(path, cause);
    }
    let stat: import('node:fs').Stats;
    try {
      stat = await call((done) => fstat(fd, done));
    } catch (cause) {
      await call((done) => close(fd, done)).catch(() => {});
      throw hostError(path, cause);
    }
    if (stat.isDirectory()) {
      await call((done) => close(fd, done));
      throw new NubesError('InvalidInput', `${path}: is a directory`, { details: { file: path } });
    }
    return new HostFile(path, fd, writable, stat.size);
  }

  /** Creates (or truncates) `path` and opens it for reading and writing. */
  static async create(path: string, exclusive = false): Promise<HostFile> {
    let fd: number;
    try {
      fd = await call<number>((done) => open(path, exclusive ? 'wx+' : 'w+', done));
    } catch (cause) {
      throw hostError(path, cause);
    }
    return new HostFile(path, fd, true, 0);
  }

  /** Current length in bytes, including what this process wrote. */
  get size(): number {
    return this.length;
  }

  /** Reads exactly `length` bytes; bytes past the end of the file are an `InvalidImage` (truncated). */
  async readExact(offset: number, length: number, what = 'data'): Promise<Buffer> {
    if (offset + length > this.length)
      throw badImage(
        this.path,
        'truncated',
        `${what} at offset ${offset} (+${length}) is past the end of the file`,
      );
    return this.readAt(offset, length);
  }

  /** Reads `length` bytes; what lies past the end of the file reads as zeros, as for a sparse tail. */
  async readAt(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.alloc(length);
    await this.readInto(buffer, offset);
    return buffer;
  }

  /**
   * Fills `buffer` from `offset` (no allocation: the caller's buffer, e.g. a slice of the guest
   * buffer being read). What lies past the end of the file is left as it is in `buffer` and the
   * count of bytes actually read is returned, so callers pass a zeroed buffer for a sparse tail.
   */
  async readInto(buffer: Uint8Array, offset: number): Promise<number> {
    const length = buffer.length;
    let done = 0;
    while (done < length) {
      const n = await pread(this.fd, buffer, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** Writes all of `data` at `offset`, growing the file when needed. */
  async writeAt(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      done += await pwrite(this.fd, data, done, data.length - done, offset + done);
    }
    if (offset + data.length > this.length) this.length = offset + data.length;
  }

  /** Sets the file's length (grows sparsely, or cuts). */
  async truncate(length: number): Promise<void> {
    await call((done) => ftruncate(this.fd, length, done));
    this.length = length;
  }

  /** Bytes the file occupies on disk (what qemu-img calls actual-size). */
  async allocatedBytes(): Promise<number> {
    const stat = await call<import('node:fs').Stats>((done) => fstat(this.fd, done));
    return stat.blocks * 512;
  }

  /** Flushes data and metadata to stable storage. */
  async sync(): Promise<void> {
    await call((done) => fsync(this.fd, done));
  }

  /**
   * Closes the file; further reads and writes fail (EBADF). A second close does nothing, so a
   * recycled fd number is never closed by mistake.
   */
  async close(): Promise<void> {
    const fd = this.fd;
    if (fd < 0) return;
    this.fd = -1;
    await call((done) => close(fd, done));
  }
}

/** Maps a failed open into a typed error naming the file. */
export function hostError(path: string, cause: unknown): NubesError {
  const code = (cause as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT')
    return new NubesError('NotFound', `${path}: no such file`, { cause, details: { file: path } });
  if (code === 'EEXIST')
    return new NubesError('Conflict', `${path}: already exists`, { cause, details: { file: path } });
  return new NubesError('InvalidInput', `${path}: cannot open (${code ?? String(cause)})`, {
    cause,
    details: { file: path, errno: code },
  });
}
