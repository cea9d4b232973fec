import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, PostgresStore, SqliteStore, type Store } from '@nubes/core';
import { testPostgresUrl } from '@nubes/testing';
import { AuthService, type AuthServiceOptions } from '../src/index.js';

/** A cheap scrypt cost so tests stay fast; the default cost is tested once on its own. */
export const FAST_SCRYPT = { N: 2 ** 10, r: 8, p: 1 };

/** A clock tests move by hand. */
export function manualClock(start = Date.UTC(2025, 0, 1)): {
  now: () => number;
  advance: (ms: number) => void;
} {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** An AuthService over `store` with fast hashing. */
export function openAuth(store: Store, options: Partial<AuthServiceOptions> = {}): Promise<AuthService> {
  return AuthService.open(store, {
    issuer: 'https://auth.test',
    audience: 'nubes',
    passwordHashing: FAST_SCRYPT,
    ...options,
  });
}

/** Backends to run identity suites on. */
export const backends: { name: string; open: () => Store; postgres?: boolean }[] = (() => {
  let dir: string | undefined;
  let n = 0;
  process.on('exit', () => dir && rmSync(dir, { recursive: true, force: true }));
  return [
    { name: 'MemoryStore', open: () => new MemoryStore() },
    {
      name: 'SqliteStore',
      open: () => {
        dir ??= mkdtempSync(join(tmpdir(), 'nubes-auth-'));
        return new SqliteStore({ path: join(dir, `auth-${n++}.db`), pollIntervalMs: 20 });
      },
    },
    {
      name: 'PostgresStore',
      postgres: true,
      open: () =>
        new PostgresStore({
          connectionString: testPostgresUrl() as string,
          table: `auth_${process.pid}_${n++}`,
          pollIntervalMs: 50,
        }),
    },
  ];
})();
