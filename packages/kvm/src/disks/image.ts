import { type CommandRunner, commandRunner, parseInput } from '@nubes/core';
import { z } from 'zod';

/** Options for {@link createDisk}. */
export interface CreateDiskOptions {
  /** Image format. Default `qcow2`. */
  format?: 'qcow2' | 'raw';
  /** Virtual size in bytes. */
  sizeBytes: number;
  /** A backing file for a copy-on-write qcow2 overlay. */
  backingFile?: string;
  /** The backing file's format (required with `backingFile`). */
  backingFormat?: 'qcow2' | 'raw';
  /** Runs `qemu-img`. Default: @nubes/core's runner. */
  runner?: CommandRunner;
}

const schema = z
  .object({
    path: z.string().min(1),
    format: z.enum(['qcow2', 'raw']).default('qcow2'),
    sizeBytes: z.number().int().positive(),
    backingFile: z.string().min(1).optional(),
    backingFormat: z.enum(['qcow2', 'raw']).optional(),
  })
  .refine((o) => !o.backingFile || (o.backingFormat && o.format === 'qcow2'), {
    message: 'a backing file needs backingFormat and a qcow2 image',
    path: ['backingFormat'],
  });

/**
 * Creates an empty disk image with `qemu-img create` (for a new drive, or the destination disks of a
 * migration without shared storage). Images come into this package as plain paths; a real image store
 * (e.g. @nubes/images) is the caller's business.
 */
export async function createDisk(path: string, options: CreateDiskOptions): Promise<void> {
  const { runner, ...rest } = options;
  const o = parseInput(schema, { path, ...rest }, 'options');
  const args = ['create', '-q', '-f', o.format];
  if (o.backingFile) args.push('-b', o.backingFile, '-F', o.backingFormat as string);
  args.push(o.path, String(o.sizeBytes));
  await (runner ?? commandRunner).run('qemu-img', args);
}
