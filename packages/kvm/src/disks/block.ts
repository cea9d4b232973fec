import { NubesError } from '@nubes/core';
import type { BlockInfo, BlockStats, JobStatus, QmpCommands } from '../qmp/commands.js';
import type { QmpEvent } from '../qmp/events.js';

/** I/O statistics of one drive. */
export interface DriveStats {
  /** The drive's device id. */
  id: string;
  readBytes: number;
  writtenBytes: number;
  readOps: number;
  writeOps: number;
  flushOps: number;
  /** Total time spent in reads, writes and flushes, in nanoseconds. */
  readTimeNs: number;
  writeTimeNs: number;
  flushTimeNs: number;
}

function qdevMatches(qdev: string | undefined, id: string): boolean {
  if (!qdev) return false;
  return qdev === id || qdev === `/machine/peripheral/${id}` || qdev.startsWith(`/machine/peripheral/${id}/`);
}

/** The `query-block` entry of the device `id` (drives added with -blockdev have no `device` name). */
export async function blockInfo(qmp: QmpCommands, id: string): Promise<BlockInfo> {
  const found = (await qmp.queryBlock()).find((b) => qdevMatches(b.qdev, id) || b.device === id);
  if (!found?.inserted)
    throw new NubesError('NotFound', `no drive "${id}" in this VM`, { details: { drive: id } });
  return found;
}

/** The node the device `id` reads and writes through right now (changes with snapshots and pivots). */
export async function topNode(qmp: QmpCommands, id: string): Promise<string> {
  const info = await blockInfo(qmp, id);
  const name = info.inserted?.['node-name'];
  if (!name) throw new NubesError('Internal', `drive "${id}" has no node name`, { details: { drive: id } });
  return name;
}

/** Per-drive I/O counters from `query-blockstats`, keyed by device id. */
export async function driveStats(qmp: QmpCommands, ids: readonly string[]): Promise<DriveStats[]> {
  const all: BlockStats[] = await qmp.queryBlockstats();
  const out: DriveStats[] = [];
  for (const id of ids) {
    const entry = all.find((s) => qdevMatches(s.qdev, id));
    if (!entry) continue;
    const s = entry.stats;
    out.push({
      id,
      readBytes: s.rd_bytes,
      writtenBytes: s.wr_bytes,
      readOps: s.rd_operations,
      writeOps: s.wr_operations,
      flushOps: s.flush_operations,
      readTimeNs: s.rd_total_time_ns,
      writeTimeNs: s.wr_total_time_ns,
      flushTimeNs: s.flush_total_time_ns,
    });
  }
  return out;
}

/** Resolves with a job's status event once it reaches one of `statuses` (create it before starting the job). */
export function waitForJobStatus(
  qmp: QmpCommands,
  jobId: string,
  statuses: readonly JobStatus[],
  timeoutMs: number,
): Promise<QmpEvent> {
  return qmp.events.waitFor('JOB_STATUS_CHANGE', {
    timeoutMs,
    match: (e) => e.data.id === jobId && statuses.includes(e.data.status as JobStatus),
  });
}

/**
 * Waits for a job (started with `auto-dismiss: false`) to conclude, dismisses it and throws
 * `CommandFailed` with QEMU's reason if it failed.
 */
export async function concludeJob(
  qmp: QmpCommands,
  jobId: string,
  concluded: Promise<QmpEvent>,
): Promise<void> {
  await concluded;
  const job = (await qmp.queryJobs()).find((j) => j.id === jobId);
  await qmp.jobDismiss(jobId);
  if (job?.error)
    throw new NubesError('CommandFailed', `block job ${jobId} failed: ${job.error}`, {
      details: { job: jobId, error: job.error },
    });
}

/** Waits until a job is ready (or concluded early, which means it failed). */
export async function awaitReady(qmp: QmpCommands, jobId: string, ready: Promise<QmpEvent>): Promise<void> {
  const event = await ready;
  if (event.data.status === 'concluded') {
    const job = (await qmp.queryJobs()).find((j) => j.id === jobId);
    await qmp.jobDismiss(jobId).catch(() => {});
    throw new NubesError(
      'CommandFailed',
      `block job ${jobId} failed: ${job?.error ?? 'concluded before ready'}`,
      {
        details: { job: jobId, error: job?.error },
      },
    );
  }
}
