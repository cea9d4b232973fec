import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';

/** A fresh scratch directory, removed by the returned cleanup. */
export function scratch(): { dir: string; path: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'nubes-images-'));
  return {
    dir,
    path: (name) => join(dir, name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Runs qemu-img with argv (never a shell string) and returns stdout. */
export async function qemuImg(...args: string[]): Promise<string> {
  return (await runCommand('qemu-img', args)).stdout;
}

/** Runs qemu-io commands against an image. */
export async function qemuIo(file: string, ...commands: string[]): Promise<void> {
  await runCommand('qemu-io', [...commands.flatMap((c) => ['-c', c]), file]);
}

/** qemu-img check as JSON, whatever its exit code (2 and 3 report problems, not failures). */
export async function qemuCheck(
  file: string,
): Promise<{ corruptions?: number; leaks?: number; 'check-errors': number }> {
  const r = await runCommand('qemu-img', ['check', '--output=json', file], { okExitCodes: [0, 2, 3] });
  return JSON.parse(r.stdout);
}

/** The guest content of an image as qemu-img sees it (convert -O raw). */
export async function qemuRaw(file: string, out: string): Promise<Buffer> {
  await qemuImg('convert', '-O', 'raw', file, out);
  const data = readFileSync(out);
  rmSync(out);
  return data;
}
