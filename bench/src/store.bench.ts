import { join } from 'node:path';
import { MemoryStore, PostgresStore, SqliteStore, type Store } from '@nubes/core';
import Database from 'better-sqlite3';
import pg from 'pg';
import { type BenchCase, type BenchGroup, defineBenchmarks } from './harness.js';

/** The three Store operations, measured on one store. */
function storeCases(store: Store, tag: string): { put: BenchCase; get: BenchCase; tx: BenchCase } {
  let i = 0;
  return {
    put: {
      name: `${tag} put`,
      fn: () => store.put(`bench/put/${i++ % 1000}`, { i, name: 'vm-1', vcpus: 2 }),
    },
    get: { name: `${tag} get`, fn: () => store.get('bench/get') },
    tx: {
      name: `${tag} 1-key transaction`,
      fn: () =>
        store.transaction(async (t) => {
          const n = (await t.get<number>('bench/tx'))?.value ?? 0;
          t.put('bench/tx', n + 1);
        }),
    },
  };
}

export default defineBenchmarks({
  name: 'Store operations per second, each backend against the raw driver doing the same SQL work',
  async setup(ctx) {
    const groups: BenchGroup[] = [];
    const closers: (() => Promise<void> | void)[] = [];

    // Memory: against a plain Map, the floor of what a store can cost.
    const memory = new MemoryStore();
    const map = new Map<string, unknown>();
    const m = storeCases(memory, 'MemoryStore');
    await memory.put('bench/get', { name: 'vm-1' });
    let mi = 0;
    groups.push({
      name: 'memory put',
      cases: [{ name: 'Map.set', reference: true, fn: () => map.set(`k${mi++ % 1000}`, { mi }) }, m.put],
    });
    groups.push({
      name: 'memory get',
      cases: [{ name: 'Map.get', reference: true, fn: () => map.get('k1') }, m.get],
    });
    groups.push({ name: 'memory transaction', cases: [m.tx] });
    closers.push(() => memory.close());

    // SQLite: against better-sqlite3 with the same pragmas running one upsert per commit.
    for (const durability of ['full', 'normal'] as const) {
      const path = join(ctx.tmpDir, `store-${durability}.db`);
      const store = new SqliteStore({ path, durability });
      await store.put('bench/get', { name: 'vm-1' });
      const raw = new Database(join(ctx.tmpDir, `raw-${durability}.db`));
      raw.pragma('journal_mode = WAL');
      raw.pragma(`synchronous = ${durability === 'full' ? 'FULL' : 'NORMAL'}`);
      raw.exec('CREATE TABLE kv (key BLOB PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID');
      const upsert = raw.prepare(
        'INSERT INTO kv VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      );
      const select = raw.prepare('SELECT value FROM kv WHERE key = ?');
      upsert.run(Buffer.from('bench/get'), '{"name":"vm-1"}');
      const rmw = raw.transaction(() => {
        const row = select.get(Buffer.from('bench/tx')) as { value: string } | undefined;
        upsert.run(Buffer.from('bench/tx'), String(Number(row?.value ?? 0) + 1));
      }).immediate;
      const s = storeCases(store, `SqliteStore(${durability})`);
      let ri = 0;
      groups.push({
        name: `sqlite ${durability} put`,
        cases: [
          {
            name: 'better-sqlite3 upsert',
            reference: true,
            fn: () =>
              upsert.run(
                Buffer.from(`bench/put/${ri++ % 1000}`),
                JSON.stringify({ ri, name: 'vm-1', vcpus: 2 }),
              ),
          },
          s.put,
        ],
      });
      groups.push({
        name: `sqlite ${durability} get`,
        cases: [
          { name: 'better-sqlite3 select', reference: true, fn: () => select.get(Buffer.from('bench/get')) },
          s.get,
        ],
      });
      groups.push({
        name: `sqlite ${durability} transaction`,
        cases: [{ name: 'better-sqlite3 read-modify-write', reference: true, fn: rmw }, s.tx],
      });
      closers.push(
        () => store.close(),
        () => {
          raw.close();
        },
      );
    }

    // PostgreSQL: against node-postgres running the same statements, one client and eight.
    if (ctx.postgresUrl) {
      const url = ctx.postgresUrl;
      const store = new PostgresStore({ connectionString: url, table: 'bench_one', poolSize: 1 });
      await store.put('bench/get', { name: 'vm-1' });
      const raw = new pg.Client({ connectionString: url });
      await raw.connect();
      await raw.query('CREATE TABLE IF NOT EXISTS raw_kv (key bytea PRIMARY KEY, value text NOT NULL)');
      await raw.query("INSERT INTO raw_kv VALUES ('bench/get', '{}') ON CONFLICT DO NOTHING");
      // Named (prepared) statements, as PostgresStore uses, so the comparison is like for like.
      const UPSERT =
        'INSERT INTO raw_kv VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value';
      const rawUpsert = (client: pg.Client, key: string) =>
        client.query({ name: 'upsert', text: UPSERT, values: [Buffer.from(key), '{"name":"vm-1"}'] });
      const rawRmw = async (client: pg.Client, key: string) => {
        await client.query('BEGIN');
        const r = await client.query<{ value: string }>({
          name: 'lock',
          text: 'SELECT value FROM raw_kv WHERE key = $1 FOR UPDATE',
          values: [Buffer.from(key)],
        });
        const next = String(Number(r.rows[0]?.value ?? 0) + 1);
        await client.query({ name: 'upsert', text: UPSERT, values: [Buffer.from(key), next] });
        await client.query('COMMIT');
      };
      const s = storeCases(store, 'PostgresStore');
      let pi = 0;
      groups.push({
        name: 'postgres put',
        cases: [
          { name: 'pg upsert', reference: true, fn: () => rawUpsert(raw, `bench/put/${pi++ % 1000}`) },
          s.put,
        ],
      });
      groups.push({
        name: 'postgres get',
        cases: [
          {
            name: 'pg select',
            reference: true,
            fn: () =>
              raw.query({
                name: 'raw_select',
                text: 'SELECT value FROM raw_kv WHERE key = $1',
                values: [Buffer.from('bench/get')],
              }),
          },
          s.get,
        ],
      });
      groups.push({
        name: 'postgres transaction',
        cases: [{ name: 'pg read-modify-write', reference: true, fn: () => rawRmw(raw, 'bench/tx') }, s.tx],
      });

      // Eight concurrent clients, each its own connection, each writing its own keys.
      const stores = Array.from(
        { length: 8 },
        () => new PostgresStore({ connectionString: url, table: 'bench_eight', poolSize: 1 }),
      );
      const raws = Array.from({ length: 8 }, () => new pg.Client({ connectionString: url }));
      await Promise.all(raws.map((c) => c.connect()));
      let ci = 0;
      groups.push({
        name: 'postgres put, 8 clients',
        cases: [
          {
            name: 'pg upsert x8',
            reference: true,
            opsPerRun: 8,
            fn: () => Promise.all(raws.map((c, k) => rawUpsert(c, `bench/c${k}/${ci++ % 100}`))),
          },
          {
            name: 'PostgresStore put x8',
            opsPerRun: 8,
            fn: () => Promise.all(stores.map((st, k) => st.put(`bench/c${k}/${ci++ % 100}`, { ci }))),
          },
        ],
      });
      groups.push({
        name: 'postgres transaction, 8 clients',
        cases: [
          {
            name: 'pg read-modify-write x8',
            reference: true,
            opsPerRun: 8,
            fn: () => Promise.all(raws.map((c, k) => rawRmw(c, `bench/tx${k}`))),
          },
          {
            name: 'PostgresStore 1-key transaction x8',
            opsPerRun: 8,
            fn: () =>
              Promise.all(
                stores.map((st, k) =>
                  st.transaction(async (t) => {
                    const n = (await t.get<number>(`bench/tx${k}`))?.value ?? 0;
                    t.put(`bench/tx${k}`, n + 1);
                  }),
                ),
              ),
          },
        ],
      });
      closers.push(
        () => store.close(),
        () => raw.end(),
        ...stores.map((st) => () => st.close()),
        ...raws.map((c) => () => c.end()),
      );
    } else {
      console.warn('[bench] PostgreSQL unavailable: skipping the PostgresStore groups');
    }

    return {
      groups,
      teardown: async () => {
        for (const close of closers) await close();
      },
    };
  },
});
