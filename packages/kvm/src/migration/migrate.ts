import { join } from 'node:path';
import { NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { awaitReady, topNode, waitForJobStatus } from '../disks/block.js';
import { timeoutError } from '../errors.js';
import { driveNodes } from '../qemu/argv.js';
import type { MigrationInfo } from '../qmp/commands.js';
import type { Vm } from '../vm/vm.js';

/** Options for {@link migrate}. */
export interface MigrateOptions {
  /** `unix` (a socket in the destination's run directory, the default) or `tcp` on loopback. */
  transport?: 'unix' | 'tcp';
  /** TCP port on 127.0.0.1 (with `transport: 'tcp'`). Default 49152 + a few bits of the pid. */
  port?: number;
  /**
   * `shared`: both sides open the same image files (the default). `copy`: the destination exports its own
   * (empty, same-sized) disks over NBD and the source mirrors onto them before RAM moves.
   */
  storage?: 'shared' | 'copy';
  /** Longest pause the guest may see at switch-over, in ms. QEMU's default is 300. */
  downtimeLimitMs?: number;
  /** Bandwidth cap in bytes per second. */
  maxBandwidth?: number;
  /** Throttle the guest's vCPUs when it dirties memory faster than it can be sent. */
  autoConverge?: boolean;
  /** Switch to post-copy after the first pass over RAM (both sides must support userfaultfd). */
  postcopy?: boolean;
  /** Called on every poll with the progress so far. */
  onProgress?: (progress: MigrationProgress) => void;
  /** How often to poll `query-migrate`. Default 100 ms. */
  pollIntervalMs?: number;
  /** Give up (and cancel) after this long. Default 600 000 ms. */
  timeoutMs?: number;
  /** Cancel the migration (`migrate_cancel`); the source keeps running. */
  signal?: AbortSignal;
}

/** Where a migration stands. */
export interface MigrationProgress {
  /** `mirror` while disks are copied (storage `copy`), then QEMU's migration status. */
  phase: 'mirror' | NonNullable<MigrationInfo['status']>;
  /** RAM bytes sent so far. */
  transferredBytes: number;
  /** RAM bytes left. */
  remainingBytes: number;
  /** Guest RAM size. */
  totalBytes: number;
  /** Disk bytes copied so far (storage `copy`). */
  diskCopiedBytes: number;
  /** Disk bytes to copy (storage `copy`). */
  diskTotalBytes: number;
  /** How much auto-converge is slowing the guest's vCPUs down, percent (0 when it is not). */
  cpuThrottlePercentage: number;
}

/** What a finished migration reports. */
export interface MigrationResult {
  /** Wall time of the whole migration as QEMU measured it, ms (RAM phase). */
  totalTimeMs: number;
  /** The pause the guest saw at switch-over, ms. */
  downtimeMs: number;
  /** Setup time, ms. */
  setupTimeMs: number;
  /** RAM bytes sent. */
  transferredBytes: number;
  /** Disk bytes mirrored before the RAM phase (0 with shared storage). */
  diskBytes: number;
  /** Wall time including the disk mirror, ms, as seen from here. */
  elapsedMs: number;
  /** Whether the migration switched to post-copy (`migrate-start-postcopy`) before it completed. */
  postcopy: boolean;
  /** The highest vCPU throttle auto-converge applied, percent (0 when it never had to). */
  maxCpuThrottlePercentage: number;
}

const schema = z
  .object({
    transport: z.enum(['unix', 'tcp']).default('unix'),
    port: z.number().int().min(1024).max(65535).optional(),
    storage: z.enum(['shared', 'copy']).default('shared'),
    downtimeLimitMs: z.number().int().min(1).max(2_000_000).optional(),
    maxBandwidth: z.number().int().min(1).optional(),
    autoConverge: z.boolean().default(false),
    postcopy: z.boolean().default(false),
    onProgress: z.custom<(p: MigrationProgress) => void>((v) => typeof v === 'function').optional(),
    pollIntervalMs: z.number().int().min(1).default(100),
    timeoutMs: z.number().int().positive().default(600_000),
    signal: z.instanceof(AbortSignal).optional(),
  })
  .strict();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Live-migrates `source` into `destination`, a VM with the same devices started with `incoming: true`.
 * With `storage: 'copy'` the disks move first (NBD export on the destination, `blockdev-mirror` on the
 * source, in the way libvirt does it now that `migrate -b` is gone), then RAM. After success the source
 * has exited and the destination runs; on failure or cancellation the source keeps running.
 */
export async function migrate(
  source: Vm,
  destination: Vm,
  options: MigrateOptions = {},
): Promise<MigrationResult> {
  const opts = parseInput(schema, options, 'options');
  if (source.state !== 'running' && source.state !== 'paused')
    throw new NubesError('Conflict', `source VM "${source.name}" is ${source.state}`);
  if (!destination.spec.incoming || destination.state !== 'paused')
    throw new NubesError(
      'Conflict',
      `destination VM "${destination.name}" must be started with incoming: true`,
    );
  const src = source.qmp;
  const dst = destination.qmp;
  const started = performance.now();
  const uri =
    opts.transport === 'unix'
      ? `unix:${join(destination.paths.dir, 'migrate.sock')}`
      : `tcp:127.0.0.1:${opts.port ?? 49152 + (process.pid % 8000) * 2}`;

  const capabilities = { events: true, 'auto-converge': opts.autoConverge, 'postcopy-ram': opts.postcopy };
  await src.migrateSetCapabilities(capabilities);
  await dst.migrateSetCapabilities(capabilities);
  const parameters: Record<string, number> = {};
  if (opts.downtimeLimitMs !== undefined) parameters['downtime-limit'] = opts.downtimeLimitMs;
  if (opts.maxBandwidth !== undefined) parameters['max-bandwidth'] = opts.maxBandwidth;
  if (Object.keys(parameters).length) await src.migrateSetParameters(parameters);

  const drives = opts.storage === 'copy' ? source.spec.drives.filter((d) => !d.readOnly) : [];
  const mirrors: { job: string; node: string }[] = [];
  const nbdSocket = join(destination.paths.dir, 'nbd.sock');
  let diskBytes = 0;
  const deadline = Date.now() + opts.timeoutMs;
  const cleanupStorage = async (pivotOk: boolean) => {
    for (const m of mirrors) {
      const concluded = waitForJobStatus(src, m.job, ['concluded', 'null'], 30_000).catch(() => undefined);
      await src.blockJobCancel(m.job, !pivotOk).catch(() => {});
      await concluded;
      await src.jobDismiss(m.job).catch(() => {});
      await src.blockdevDel(m.node).catch(() => {});
    }
    if (drives.length) await dst.execute('nbd-server-stop').catch(() => {});
  };

  try {
    if (drives.length) {
      await dst.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdSocket } } });
      for (const drive of drives)
        await dst.execute('nbd-server-add', {
          device: driveNodes(drive.id).format,
          name: drive.id,
          writable: true,
        });
      const readies = [];
      for (const drive of drives) {
        const node = `${drive.id}-mig`;
        await src.blockdevAdd({
          driver: 'nbd',
          'node-name': node,
          server: { type: 'unix', path: nbdSocket },
          export: drive.id,
        });
        const job = `migrate-${drive.id}`;
        const ready = waitForJobStatus(src, job, ['ready', 'concluded'], opts.timeoutMs);
        await src.blockdevMirror({
          'job-id': job,
          device: await topNode(src, drive.id),
          target: node,
          sync: 'full',
          'auto-dismiss': false,
        });
        mirrors.push({ job, node });
        readies.push(awaitReady(src, job, ready));
      }
      const allReady = Promise.all(readies);
      let done = false;
      allReady.then(
        () => {
          done = true;
        },
        () => {
          done = true;
        },
      );
      while (!done) {
        if (opts.signal?.aborted) throw timeoutError(`migration of "${source.name}"`, opts.timeoutMs, true);
        const jobs = await src.queryJobs();
        const mine = jobs.filter((j) => mirrors.some((m) => m.job === j.id));
        diskBytes = mine.reduce((sum, j) => sum + j['current-progress'], 0);
        opts.onProgress?.({
          phase: 'mirror',
          transferredBytes: 0,
          remainingBytes: 0,
          totalBytes: 0,
          diskCopiedBytes: diskBytes,
          diskTotalBytes: mine.reduce((sum, j) => sum + j['total-progress'], 0),
          cpuThrottlePercentage: 0,
        });
        await Promise.race([allReady.catch(() => {}), sleep(opts.pollIntervalMs)]);
      }
      await allReady;
      const copied = (await src.queryJobs()).filter((j) => mirrors.some((m) => m.job === j.id));
      diskBytes = copied.reduce((sum, j) => sum + j['current-progress'], 0);
    }

    await dst.migrateIncoming(uri);
    await src.migrate({ uri });
    let postcopyStarted = false;
    let maxThrottle = 0;
    for (;;) {
      const info = await src.queryMigrate();
      const ram = info.ram;
      const throttle = info['cpu-throttle-percentage'] ?? 0;
      maxThrottle = Math.max(maxThrottle, throttle);
      if (info.status)
        opts.onProgress?.({
          phase: info.status,
          transferredBytes: ram?.transferred ?? 0,
          remainingBytes: ram?.remaining ?? 0,
          totalBytes: ram?.total ?? 0,
          diskCopiedBytes: diskBytes,
          diskTotalBytes: diskBytes,
          cpuThrottlePercentage: throttle,
        });
      if (info.status === 'completed') {
        await cleanupStorage(true);
        const result: MigrationResult = {
          totalTimeMs: info['total-time'] ?? 0,
          downtimeMs: info.downtime ?? 0,
          setupTimeMs: info['setup-time'] ?? 0,
          transferredBytes: ram?.transferred ?? 0,
          diskBytes,
          elapsedMs: performance.now() - started,
          postcopy: postcopyStarted,
          maxCpuThrottlePercentage: maxThrottle,
        };
        await destination.waitForState('running', 30_000);
        source.expectExit();
        await source.quit();
        return result;
      }
      if (info.status === 'failed' || info.status === 'cancelled')
        throw new NubesError(
          'CommandFailed',
          `migration of "${source.name}" ${info.status}: ${info['error-desc'] ?? ''}`.trim(),
          {
            details: { status: info.status, error: info['error-desc'] },
          },
        );
      if (opts.signal?.aborted || Date.now() > deadline) {
        await src.migrateCancel();
        throw timeoutError(`migration of "${source.name}"`, opts.timeoutMs, Boolean(opts.signal?.aborted));
      }
      if (
        opts.postcopy &&
        !postcopyStarted &&
        info.status === 'active' &&
        (ram?.['dirty-sync-count'] ?? 0) >= 2
      ) {
        postcopyStarted = true;
        await src.execute('migrate-start-postcopy');
      }
      await sleep(opts.pollIntervalMs);
    }
  } catch (error) {
    await src.migrateCancel().catch(() => {});
    // Wait for the source to settle back so the caller gets a running (or paused) VM, not a mid-cancel one.
    for (let i = 0; i < 100; i++) {
      const status = (await src.queryMigrate().catch(() => ({ status: 'failed' }) as MigrationInfo)).status;
      if (status !== 'cancelling' && status !== 'active' && status !== 'setup') break;
      await sleep(50);
    }
    await cleanupStorage(false);
    throw error;
  }
}
