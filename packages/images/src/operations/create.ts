import { randomBytes } from 'node:crypto';
import { access, link, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { HostFile } from '../io/host-file.js';
import { writeNewQcow2 } from '../qcow2/create.js';
import type { ImageFormat } from '../types.js';
import { openImage, resolveBacking } from './open.js';

const powerOfTwo = (n: number) => Number.isInteger(Math.log2(n));

/** Options for {@link createImage}, mirroring `qemu-img create -f ... -o ...`. */
export const createImageSchema = z
  .object({
    format: z.enum(['qcow2', 'raw']).default('qcow2'),
    /** Virtual size in bytes; defaults to the backing image's size. Rounded up to 512 like qemu-img. */
    size: z
      .number()
      .int()
      .min(0)
      .max(2 ** 50)
      .optional(),
    clusterSize: z
      .number()
      .int()
      .min(512)
      .max(2 * 1024 * 1024)
      .refine(powerOfTwo, 'must be a power of two')
      .default(65536),
    version: z.union([z.literal(2), z.literal(3)]).default(3),
    refcountBits: z.number().int().min(1).max(64).refine(powerOfTwo, 'must be a power of two').default(16),
    extendedL2: z.boolean().default(false),
    lazyRefcounts: z.boolean().default(false),
    preallocation: z.enum(['off', 'metadata']).default('off'),
    backingFile: z.string().min(1).max(1023).optional(),
    backingFormat: z.enum(['qcow2', 'raw']).optional(),
    /** Replace an existing file (as qemu-img does). Default false: an existing file is a `Conflict`. */
    overwrite: z.boolean().default(false),
  })
  .superRefine((o, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    if (o.format === 'raw') {
      if (o.backingFile) issue('backingFile', 'raw images cannot have a backing file');
      if (o.preallocation !== 'off') issue('preallocation', 'raw images support only preallocation off');
    }
    if (o.version === 2) {
      if (o.refcountBits !== 16) issue('refcountBits', 'version 2 images need 16 refcount bits');
      if (o.extendedL2) issue('extendedL2', 'extended L2 entries need version 3');
      if (o.lazyRefcounts) issue('lazyRefcounts', 'lazy refcounts need version 3');
    }
    if (o.extendedL2 && o.clusterSize < 16384)
      issue('extendedL2', 'extended L2 entries need clusters of at least 16 KiB');
    if (o.size === undefined && !o.backingFile) issue('size', 'is required without a backing file');
  });

/** Input of {@link createImage}. */
export type CreateImageOptions = z.input<typeof createImageSchema>;

/** What {@link createImage} made. */
export interface CreatedImage {
  path: string;
  format: ImageFormat;
  virtualSize: number;
  backingFile?: string;
  backingFormat?: ImageFormat;
}

/**
 * Creates an empty image (or an overlay on a backing file) like `qemu-img create`. The file is
 * written under a temporary name and renamed into place, so a failure leaves nothing behind and
 * never half-overwrites an existing file. The backing file must exist; its format is probed and
 * recorded when not given, and its size is the default virtual size.
 *
 * @example
 * ```ts
 * await createImage('/tmp/base.qcow2', { size: 1 << 30 });
 * await createImage('/tmp/vm1.qcow2', { backingFile: 'base.qcow2', backingFormat: 'qcow2' });
 * ```
 */
export async function createImage(path: string, options: CreateImageOptions): Promise<CreatedImage> {
  const target = parseInput(z.string().min(1), path, 'path');
  const o = parseInput(createImageSchema, options, 'options');
  if (!o.overwrite && (await exists(target)))
    throw new NubesError('Conflict', `${target}: already exists`, { details: { file: target } });
  let size = o.size;
  let backingFormat = o.backingFormat;
  if (o.backingFile) {
    const backing = await openImage(resolveBacking(target, o.backingFile), { format: o.backingFormat });
    try {
      size ??= backing.virtualSize;
      backingFormat ??= backing.format;
    } finally {
      await backing.close();
    }
  }
  const virtualSize = Math.ceil((size ?? 0) / 512) * 512;
  const temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    if (o.format === 'raw') {
      const file = await HostFile.create(temp, true);
      try {
        await file.truncate(virtualSize);
      } finally {
        await file.close();
      }
    } else {
      await writeNewQcow2(temp, {
        size: virtualSize,
        clusterSize: o.clusterSize,
        version: o.version,
        refcountBits: o.refcountBits,
        extendedL2: o.extendedL2,
        lazyRefcounts: o.lazyRefcounts,
        preallocation: o.preallocation,
        backingFile: o.backingFile,
        backingFormat,
      });
    }
    if (o.overwrite) await rename(temp, target);
    else {
      // link() fails if the target appeared meanwhile, where rename() would silently replace it.
      await link(temp, target).catch((cause: NodeJS.ErrnoException) => {
        if (cause.code === 'EEXIST')
          throw new NubesError('Conflict', `${target}: already exists`, { details: { file: target } });
        throw cause;
      });
      await rm(temp, { force: true });
    }
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  return {
    path: target,
    format: o.format,
    virtualSize,
    ...(o.backingFile ? { backingFile: o.backingFile, backingFormat } : {}),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
