import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A scratch directory named `nbk-<pid>-…` (host-global names carry the prefix so parallel work can tell them apart). */
export function scratchDir(tag: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `nbk-${process.pid}-${tag}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Starts a bare QEMU (`-machine none`) with QMP on `qmp` (a unix path, or `tcp:host:port`). */
export function startBareQemu(qmp: string): ChildProcess {
  const address = qmp.startsWith('tcp:') ? qmp : `unix:${qmp}`;
  return spawn(
    'qemu-system-x86_64',
    [
      '-machine',
      'none',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-qmp',
      `${address},server=on,wait=off`,
    ],
    { stdio: 'ignore' },
  );
}

/** Kills a child QEMU if it still runs and waits for it to be gone. */
export async function killChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await gone;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Retries `fn` until it resolves or `ms` pass. */
export async function eventually<T>(fn: () => Promise<T>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(10);
    }
  }
}
