import { type CommandRunner, commandRunner, NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { compactOverlayOptions, type Mount } from './lowerdir.js';

const mountSchema = z.object({
  type: z.enum(['overlay', 'bind']),
  source: z.string().min(1),
  options: z.array(z.string().refine((o) => !o.includes(','), 'must not contain a comma')),
});

/** Options of {@link mountAll} and {@link unmount}. */
export interface MountOptions {
  /** Runs `mount`/`umount` (wrap it for sudo or a remote host). Default: the core runner. */
  runner?: CommandRunner;
}

/**
 * Performs mounts returned by a snapshotter on `target` (root needed): overlay mounts through
 * `mount -t overlay`, with options made relative to their common directory when a deep chain would
 * exceed the kernel's one-page limit; bind mounts through `mount --bind`, remounted read-only for `ro`.
 */
export async function mountAll(
  mounts: readonly Mount[],
  target: string,
  options: MountOptions = {},
): Promise<void> {
  const list = parseInput(z.array(mountSchema).min(1).max(1), mounts, 'mounts');
  const t = parseInput(z.string().min(1), target, 'target');
  const runner = options.runner ?? commandRunner;
  const m = list[0] as Mount;
  if (m.type === 'overlay') {
    const { options: opts, cwd } = compactOverlayOptions(m.options);
    if (opts.join(',').length >= 4096)
      throw new NubesError('InvalidInput', 'mounts: overlay options exceed one page even when relative', {
        details: { field: 'mounts', length: opts.join(',').length },
      });
    await runner.run('mount', ['-t', 'overlay', m.source, '-o', opts.join(','), t], cwd ? { cwd } : {});
    return;
  }
  const readOnly = m.options.includes('ro');
  await runner.run('mount', [m.options.includes('rbind') ? '--rbind' : '--bind', m.source, t]);
  if (readOnly) {
    try {
      await runner.run('mount', ['-o', 'remount,bind,ro', t]);
    } catch (error) {
      await runner.run('umount', [t]).catch(() => {});
      throw error;
    }
  }
}

/** Unmounts `target` (`umount`; `lazy` detaches a busy mount, as `umount -l`). */
export async function unmount(
  target: string,
  options: MountOptions & { lazy?: boolean } = {},
): Promise<void> {
  const t = parseInput(z.string().min(1), target, 'target');
  const runner = options.runner ?? commandRunner;
  await runner.run('umount', options.lazy ? ['-l', t] : [t]);
}
