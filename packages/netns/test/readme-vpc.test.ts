import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetworkHost } from '@nubes/netns';
import { describeWith, strictCapabilities } from '@nubes/testing';
import { afterAll, expect, it } from 'vitest';

// The example of the README's "Tenant VPCs" section, run as written against the built packages, the way
// examples/test/readme-examples.test.ts runs each README's first example.
const pkg = join(import.meta.dirname, '..');
const tsx = createRequire(import.meta.url).resolve('tsx');
const built = ['netns', 'core'].every((name) => existsSync(join(pkg, '..', name, 'dist', 'index.js')));

/** The first ```ts block after the "## Tenant VPCs" heading. */
export function vpcExample(readme: string): string | undefined {
  const section = readme.split(/^## /m).find((s) => s.startsWith('Tenant VPCs'));
  return section && /```ts\n([\s\S]*?)```/.exec(section)?.[1];
}

describeWith(['root', 'ip', 'nft'], 'README "Tenant VPCs" example', () => {
  const scratch = join(pkg, '.readme-check');
  const file = join(scratch, `vpc-${process.pid}.mts`);
  const cwd = mkdtempSync(join(tmpdir(), 'nubes-readme-vpc-'));
  let childPid: number | undefined;

  afterAll(async () => {
    rmSync(file, { force: true });
    rmSync(cwd, { recursive: true, force: true });
    if (childPid === undefined) return;
    // The example cleans up after itself; this only matters when it failed half-way.
    const net = new NetworkHost({ owner: `demo-${childPid}` });
    await net.gc();
    expect((await net.listNamespaces()).filter((n) => n.startsWith(`demo-${childPid}-`))).toEqual([]);
  });

  it.skipIf(!built && !strictCapabilities())('runs as written and prints what its comments say', async () => {
    const code = vpcExample(readFileSync(join(pkg, 'README.md'), 'utf8'));
    expect(code, 'packages/netns/README.md has no ```ts example under "## Tenant VPCs"').toBeDefined();
    mkdirSync(scratch, { recursive: true });
    writeFileSync(file, code as string);
    // `node --import tsx` (not the tsx CLI) so the example's process.pid is the child's pid; the cwd has
    // no tsconfig, so `@nubes/*` resolve through node_modules to the built packages.
    const child = spawn(process.execPath, ['--import', tsx, file], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    childPid = child.pid;
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code_ = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    expect(code_, stderr).toBe(0);
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toBe('true true'); // each tenant reaches its own 10.0.0.3
    expect(lines[1]).toBe('true'); // the floating IP, from the provider network
    expect(lines[2]).toMatch(/^203\.0\.113\.\d+ true$/); // SNAT out through the router
    const net = new NetworkHost({ owner: `demo-${childPid}` });
    expect((await net.listNamespaces()).filter((n) => n.startsWith(`demo-${childPid}-`))).toEqual([]);
  });
});
