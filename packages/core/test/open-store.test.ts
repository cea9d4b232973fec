import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isNubesError, MemoryStore, openStore, PostgresStore, SqliteStore } from '../src/index.js';

describe('openStore', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nubes-open-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('picks the backend from the URL', async () => {
    const memory = openStore('memory:');
    expect(memory).toBeInstanceOf(MemoryStore);
    const sqlite = openStore(`sqlite:${join(dir, 'a.db')}`);
    expect(sqlite).toBeInstanceOf(SqliteStore);
    const bare = openStore(join(dir, 'b.db'));
    expect(bare).toBeInstanceOf(SqliteStore);
    // Constructing a PostgresStore connects lazily, so no server is needed to check the choice.
    const postgres = openStore('postgres://nobody@127.0.0.1:1/none');
    expect(postgres).toBeInstanceOf(PostgresStore);
    await Promise.all([memory.close(), sqlite.close(), bare.close(), postgres.close()]);
  });

  it('refuses unknown schemes and empty URLs with InvalidInput', () => {
    for (const url of ['', 'redis://localhost']) {
      try {
        openStore(url);
        expect.unreachable();
      } catch (error) {
        expect(isNubesError(error, 'InvalidInput')).toBe(true);
      }
    }
  });

  it('reports a file it cannot open as Unavailable, and a dead server as Unavailable on first use', async () => {
    expect(() => new SqliteStore(join(dir, 'missing-dir', 'x.db'))).toThrow(
      expect.objectContaining({ code: 'Unavailable' }),
    );
    const store = new PostgresStore('postgres://nobody@127.0.0.1:1/none');
    await expect(store.get('k')).rejects.toMatchObject({ code: 'Unavailable' });
    await store.close();
  });

  it('refuses use after close', async () => {
    const store = new MemoryStore();
    await store.close();
    await expect(store.get('k')).rejects.toMatchObject({ code: 'Unavailable' });
  });
});
