import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeWith, testPostgresUrl } from '@nubes/testing';
import { afterAll, describe } from 'vitest';
import { MemoryStore, PostgresStore, SqliteStore } from '../src/index.js';
import { storeConformance } from './store-conformance.js';

describe('MemoryStore conformance', () => {
  storeConformance({
    open: async () => new MemoryStore(),
    peers: async (store, count) => Array.from({ length: count }, () => store),
  });
});

describe('SqliteStore conformance', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nubes-sqlite-'));
  const paths = new Map<unknown, string>();
  let n = 0;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  storeConformance({
    open: async () => {
      const path = join(dir, `store-${n++}.db`);
      const store = new SqliteStore({ path, pollIntervalMs: 20 });
      paths.set(store, path);
      return store;
    },
    // Separate handles on one file behave like separate processes: separate connections and locks.
    peers: async (store, count) =>
      Array.from(
        { length: count },
        () => new SqliteStore({ path: paths.get(store) as string, pollIntervalMs: 20 }),
      ),
  });
});

describeWith(['postgres'], 'PostgresStore conformance', () => {
  const tables = new Map<unknown, string>();
  let n = 0;
  storeConformance({
    open: async () => {
      const table = `conf_${process.pid}_${n++}`;
      const store = new PostgresStore({
        connectionString: testPostgresUrl() as string,
        table,
        pollIntervalMs: 200,
      });
      tables.set(store, table);
      return store;
    },
    // Each peer is its own pool of one connection: 8 peers are 8 separate PostgreSQL sessions.
    peers: async (store, count) =>
      Array.from(
        { length: count },
        () =>
          new PostgresStore({
            connectionString: testPostgresUrl() as string,
            table: tables.get(store) as string,
            poolSize: 1,
            pollIntervalMs: 200,
          }),
      ),
  });
});
