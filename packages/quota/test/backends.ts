import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryStore, PostgresStore, SqliteStore, type Store } from '@nubes/core';
import { describeWith, testPostgresUrl } from '@nubes/testing';
import { afterAll, describe } from 'vitest';

/** How a suite gets stores of one backend. */
export interface TestBackend {
  name: 'memory' | 'sqlite' | 'postgres';
  /** A new, empty store. */
  open(): Store;
  /** A separate handle (its own connection) on the data of `store`; for MemoryStore, `store` itself. */
  peer(store: Store): Store;
  /** Arguments that let a child process open the data of `store`, where the backend allows that. */
  processArgs(store: Store): string[] | undefined;
}

function sqliteBackend(): TestBackend {
  const dir = mkdtempSync(join(tmpdir(), 'nubes-quota-'));
  const paths = new Map<Store, string>();
  const opened: Store[] = [];
  let n = 0;
  afterAll(async () => {
    for (const s of opened) await s.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });
  const make = (path: string) => {
    // `normal` durability: the tests are about isolation, not fsync, and must stay fast.
    const store = new SqliteStore({ path, durability: 'normal' });
    paths.set(store, path);
    opened.push(store);
    return store;
  };
  return {
    name: 'sqlite',
    open: () => make(join(dir, `quota-${n++}.db`)),
    peer: (store) => make(paths.get(store) as string),
    processArgs: (store) => ['sqlite', paths.get(store) as string, '-'],
  };
}

function postgresBackend(): TestBackend {
  const tables = new Map<Store, string>();
  const opened: Store[] = [];
  let n = 0;
  afterAll(async () => {
    for (const s of opened) await s.close().catch(() => {});
  });
  const make = (table: string, poolSize: number) => {
    const store = new PostgresStore({ connectionString: testPostgresUrl() as string, table, poolSize });
    tables.set(store, table);
    opened.push(store);
    return store;
  };
  return {
    name: 'postgres',
    open: () => make(`quota_${process.pid}_${n++}`, 10),
    peer: (store) => make(tables.get(store) as string, 2),
    processArgs: (store) => ['postgres', testPostgresUrl() as string, tables.get(store) as string],
  };
}

/** Runs `body` once per backend: MemoryStore, SqliteStore and (where it can start) PostgresStore. */
export function describeBackends(name: string, body: (backend: TestBackend) => void): void {
  describe(`${name} (MemoryStore)`, () => {
    body({ name: 'memory', open: () => new MemoryStore(), peer: (s) => s, processArgs: () => undefined });
  });
  describe(`${name} (SqliteStore)`, () => {
    body(sqliteBackend());
  });
  describeWith(['postgres'], `${name} (PostgresStore)`, () => {
    body(postgresBackend());
  });
}

const worker = fileURLToPath(new URL('./fixtures/quota-worker.ts', import.meta.url));

/** A child process running the quota worker fixture; `lines` collects its stdout lines. */
export interface WorkerProcess {
  lines: string[];
  /** Resolves with the first stdout line for which `match` holds. */
  waitFor(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves with all stdout when the process exits 0, rejects otherwise. */
  done: Promise<string>;
  kill(): void;
}

/** Starts the worker fixture (`test/fixtures/quota-worker.ts`) in a new Node process. */
export function startWorker(args: string[]): WorkerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', worker, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let stdout = '';
  let stderr = '';
  const waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    const parts = stdout.split('\n');
    stdout = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const done = new Promise<string>((resolve, reject) => {
    child.on('exit', (code, signal) => {
      if (code === 0) resolve(lines.join('\n'));
      else reject(new Error(`worker exited with ${code ?? signal}: ${stderr.slice(-2000)}`));
    });
  });
  done.catch(() => {});
  return {
    lines,
    done,
    kill: () => child.kill('SIGKILL'),
    waitFor(match, timeoutMs = 20_000) {
      const seen = lines.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`worker printed no matching line; stderr: ${stderr.slice(-2000)}`)),
          timeoutMs,
        );
        waiters.push({
          match,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        done.catch((error: unknown) => {
          clearTimeout(timer);
          reject(error);
        });
      });
    },
  };
}

/** A clock tests move by hand. */
export function fakeClock(start = 1_700_000_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
  };
}
