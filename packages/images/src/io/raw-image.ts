import { NubesError } from '@nubes/core';
import type { DiskImage, Extent } from '../types.js';
import { HostFile } from './host-file.js';

const ZERO_CHUNK = 1 << 20;

/** A raw image: guest offset equals file offset, the virtual size is the file size. */
export class RawImage implements DiskImage {
  readonly format = 'raw' as const;
  readonly backing = undefined;

  constructor(
    private readonly file: HostFile,
    readonly readOnly: boolean,
  ) {}

  /** Opens a raw file. */
  static async open(path: string, readOnly: boolean): Promise<RawImage> {
    return new RawImage(await HostFile.open(path, !readOnly), readOnly);
  }

  get path(): string {
    return this.file.path;
  }

  get virtualSize(): number {
    return this.file.size;
  }

  /** The underlying host file (for actual-size). */
  get host(): HostFile {
    return this.file;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    return this.file.readAt(offset, length);
  }

  /**
   * Fills `out` with the bytes at `offset` (no copy: what a qcow2 overlay calls on its raw backing
   * file, and what convert reads into reused buffers); without `zeroed`, bytes past the end of the
   * file are cleared. The range must lie inside the file; {@link read} is the checked entry point.
   * @internal
   */
  async readInto(out: Buffer, offset: number, zeroed = true): Promise<void> {
    const n = await this.file.readInto(out, offset);
    if (!zeroed && n < out.length) out.fill(0, n);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, data.length);
    await this.file.writeAt(offset, data);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    const zero = Buffer.alloc(Math.min(length, ZERO_CHUNK));
    for (let at = 0; at < length; at += zero.length) {
      await this.file.writeAt(offset + at, zero.subarray(0, Math.min(zero.length, length - at)));
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    // Node has no hole punching; zeros are what a discarded raw range reads as under QEMU.
    await this.writeZeroes(offset, length);
  }

  async status(offset: number, length: number): Promise<Extent> {
    this.checkRange(offset, length);
    return { offset, length, kind: 'data', hostOffset: offset };
  }

  /** Grows or shrinks the file. */
  async resize(size: number): Promise<void> {
    this.checkWritable();
    await this.file.truncate(size);
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.file.sync();
  }

  async close(): Promise<void> {
    await this.file.close();
  }

  private checkWritable(): void {
    if (this.readOnly) throw new NubesError('Conflict', `${this.path}: image is open read-only`);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      throw new NubesError('InvalidInput', `${this.path}: bad range ${offset}+${length}`, {
        details: { field: 'offset' },
      });
    if (offset + length > this.virtualSize)
      throw new NubesError(
        'InvalidInput',
        `${this.path}: range ${offset}+${length} is past the virtual size ${this.virtualSize}`,
        {
          details: { field: 'offset', file: this.path },
        },
      );
  }
}
