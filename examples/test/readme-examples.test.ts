import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';
import { strictCapabilities } from '@nubes/testing';
import { describe, expect, it } from 'vitest';

// Every package README starts with a runnable example; this runs each one against the built packages,
// exactly as a user who copied it would.
const root = join(import.meta.dirname, '..', '..');
const tsx = createRequire(import.meta.url).resolve('tsx/cli');
const packages = ['core', 'auth', 'quota', 'scheduler', 'images', 'kvm', 'netns'];
const built = packages.every((name) => existsSync(join(root, 'packages', name, 'dist', 'index.js')));

function firstExample(readme: string): string | undefined {
  return /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
}

describe.skipIf(!built && !strictCapabilities())('README examples run as written', () => {
  if (!built) console.warn('[nubes] skipping README examples: run `npm run build` first');
  const scratch = join(root, 'examples', '.readme-check');
  for (const name of packages) {
    it(`@nubes/${name}`, async () => {
      const code = firstExample(readFileSync(join(root, 'packages', name, 'README.md'), 'utf8'));
      expect(code, `packages/${name}/README.md has no \`\`\`ts example`).toBeDefined();
      mkdirSync(scratch, { recursive: true });
      const file = join(scratch, `${name}.mts`);
      writeFileSync(file, code as string);
      const cwd = mkdtempSync(join(tmpdir(), `nubes-readme-${name}-`));
      try {
        const result = await runCommand(process.execPath, [tsx, file], { cwd, timeoutMs: 60_000 });
        expect(result.exitCode).toBe(0);
      } finally {
        rmSync(cwd, { recursive: true, force: true });
        rmSync(file, { force: true });
      }
    });
  }
});
