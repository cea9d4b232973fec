import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';
import { strictCapabilities } from '@nubes/testing';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const tsx = createRequire(import.meta.url).resolve('tsx/cli');
const demo = join(root, 'examples', 'src', 'store-demo.ts');
const built = existsSync(join(root, 'packages', 'core', 'dist', 'index.js'));

describe.skipIf(!built && !strictCapabilities())('the store demo', () => {
  it('commits, lists, refuses a stale write and sees its changes; state carries over between runs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nubes-demo-'));
    try {
      const env = { NUBES_STORE: `sqlite:${join(dir, 'demo.db')}` };
      const first = await runCommand(process.execPath, [tsx, demo], { env, timeoutMs: 60_000 });
      expect(first.stdout).toContain('this is run 1, registered host compute-1');
      expect(first.stdout).toContain('stale compare-and-put refused: Conflict');
      expect(first.stdout).toMatch(
        /watch saw 2 change\(s\):\n {2}r1 put demo\/runs\n {2}r1 put demo\/hosts\/compute-1/,
      );
      const second = await runCommand(process.execPath, [tsx, demo], { env, timeoutMs: 60_000 });
      expect(second.stdout).toContain('at revision 1');
      expect(second.stdout).toContain('2 host(s) in the store');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
