import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeWith, testPostgresUrl } from '@nubes/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { PostgresStore, SqliteStore, type Store } from '../src/index.js';

const tsx = createRequire(import.meta.url).resolve('tsx');
const writer = join(import.meta.dirname, 'fixtures', 'crash-writer.ts');

/** Starts the writer, lets it commit a few batches, SIGKILLs it at a random moment, and returns the last reported batch. */
async function killMidTransaction(args: string[]): Promise<number> {
  const child = spawn(process.execPath, ['--import', tsx, writer, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let last = 0;
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.on('exit', (_code, signal) => resolve(signal)),
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      for (const m of d.toString().matchAll(/committed (\d+)/g)) last = Number(m[1]);
      if (last >= 3) resolve();
    });
    child.on('exit', () => reject(new Error(`writer exited early: ${stderr}`)));
  });
  // Most of the writer's time is spent inside a commit, so a random delay lands mid-transaction.
  await new Promise((r) => setTimeout(r, Math.random() * 15));
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  return last;
}

async function expectWholeBatches(store: Store, lastReported: number): Promise<void> {
  const { items } = await store.list('crash/');
  expect(items).toHaveLength(200);
  const batches = new Set(items.map((e) => e.value));
  const revisions = new Set(items.map((e) => e.revision));
  expect(batches.size, `keys hold mixed batches ${[...batches].join(',')}`).toBe(1);
  expect(revisions.size).toBe(1);
  const batch = items[0]?.value as number;
  // The batch being committed when the kill came may or may not have landed, but nothing reported may be lost.
  expect(batch).toBeGreaterThanOrEqual(lastReported);
  expect(batch).toBeLessThanOrEqual(lastReported + 1);
  expect(await store.revision()).toBe(items[0]?.revision);
}

describe('SqliteStore survives SIGKILL mid-transaction', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nubes-crash-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('leaves only whole transactions, kill after kill', async () => {
    const path = join(dir, 'crash.db');
    for (let round = 0; round < 3; round++) {
      const reported = await killMidTransaction(['sqlite', path]);
      const store = new SqliteStore({ path });
      await expectWholeBatches(store, reported);
      await store.close();
    }
  });
});

describeWith(['postgres'], 'PostgresStore survives SIGKILL mid-transaction', () => {
  it('leaves only whole transactions, kill after kill', async () => {
    const url = testPostgresUrl() as string;
    const table = `crash_${process.pid}`;
    for (let round = 0; round < 3; round++) {
      const reported = await killMidTransaction(['postgres', url, table]);
      const store = new PostgresStore({ connectionString: url, table });
      await expectWholeBatches(store, reported);
      await store.close();
    }
  });
});
