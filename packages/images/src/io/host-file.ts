import { type FileHandle, open } from 'node:fs/promises';
import { NubesError } from '@nubes/core';
import { badImage } from '../errors.js';

/**
 * One open host file: positional reads and writes with the file's size tracked in memory, so
 * the qcow2 engine can allocate at the end without an fstat per cluster.
 */
export class HostFile {
  private constructor(
    /** The path the file was opened with (used in error messages). */
    readonly path: string,
    private readonly handle: FileHandle,
    /** Whether writes are allowed. */
    readonly writable: boolean,
    private length: number,
  ) {}

  /** Opens `path` for reading, or for reading and writing. A missing file is `NotFound`. */
  static async open(path: string, writable: boolean): Promise<HostFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, writable ? 'r+' : 'r');
    } catch (cause) {
      throw hostError(path, cause);
    }
    const stat = await handle.stat();
    if (stat.isDirectory()) {
      await handle.close();
      throw new NubesError('InvalidInput', `${path}: is a directory`, { details: { file: path } });
    }
    return new HostFile(path, handle, writable, stat.size);
  }

  /** Creates (or truncates) `path` and opens it for reading and writing. */
  static async create(path: string, exclusive = false): Promise<HostFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, exclusive ? 'wx+' : 'w+');
    } catch (cause) {
      throw hostError(path, cause);
    }
    return new HostFile(path, handle, true, 0);
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
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buffer;
  }

  /** Writes all of `data` at `offset`, growing the file when needed. */
  async writeAt(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (offset + data.length > this.length) this.length = offset + data.length;
  }

  /** Sets the file's length (grows sparsely, or cuts). */
  async truncate(length: number): Promise<void> {
    await this.handle.truncate(length);
    this.length = length;
  }

  /** Bytes the file occupies on disk (what qemu-img calls actual-size). */
  async allocatedBytes(): Promise<number> {
    const stat = await this.handle.stat();
    return stat.blocks * 512;
  }

  /** Flushes data and metadata to stable storage. */
  async sync(): Promise<void> {
    await this.handle.sync();
  }

  /** Closes the handle; further calls fail. */
  async close(): Promise<void> {
    await this.handle.close();
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
