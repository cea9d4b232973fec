import { fork } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryStore, newId, PostgresStore, SqliteStore, type Store } from '@nubes/core';
import { Quota } from '@nubes/quota';
import { type BenchCase, type BenchGroup, defineBenchmarks } from './harness.js';

// Reserve+commit per second, against the bare Store doing the same reads and writes in the same two
// transactions: the ratio is what quota's validation, limit logic and bookkeeping cost on top of the store.

const RESOURCES = [
  'vcpus',
  'memoryMiB',
  'diskGiB',
  'instances',
  'volumes',
  'ports',
  'floatingIps',
  'snapshots',
];
const BIG = 1_000_000_000_000;
const deltasOf = (count: number) => Object.fromEntries(RESOURCES.slice(0, count).map((r) => [r, 1]));

async function prepare(quota: Quota): Promise<void> {
  await quota.registerResources(Object.fromEntries(RESOURCES.map((r) => [r, BIG])));
}

const time = (ms: number) => String(ms).padStart(15, '0');

/**
 * What `reserve` then `commit` read and write, done directly on the Store, with the same key layout (the
 * expiry and receipt indexes are time-ordered there too, which matters to how a store inserts keys).
 */
async function bareReserveCommit(
  store: Store,
  project: string,
  deltas: Record<string, number>,
): Promise<void> {
  const key = `bare/projects/${project}`;
  const id = newId();
  const expiresAt = Date.now() + 600_000;
  type Usage = { inUse: Record<string, number>; reserved: Record<string, number> };
  const add = (a: Record<string, number>, sign: number) => {
    const out = { ...a };
    for (const [r, n] of Object.entries(deltas)) out[r] = (out[r] ?? 0) + sign * n;
    return out;
  };
  await store.transaction(async (tx) => {
    const [config, entry] = await Promise.all([
      tx.get<Record<string, number>>('bare/config'),
      tx.get<Usage>(key),
    ]);
    const usage = entry?.value ?? { inUse: {}, reserved: {} };
    for (const [r, n] of Object.entries(deltas)) {
      if ((usage.inUse[r] ?? 0) + (usage.reserved[r] ?? 0) + n > (config?.value[r] ?? BIG))
        throw new Error('over');
    }
    tx.put(key, { ...usage, reserved: add(usage.reserved, 1) });
    tx.put(`bare/reservations/${id}`, { id, project, deltas, createdAt: Date.now(), expiresAt });
    tx.put(`bare/expiry/${time(expiresAt)}/${id}`, true);
  });
  await store.transaction(async (tx) => {
    await Promise.all([tx.get(`bare/reservations/${id}`), tx.get(`bare/receipts/settle/${id}`)]);
    const [, entry] = await Promise.all([tx.get('bare/config'), tx.get<Usage>(key)]);
    const usage = entry?.value ?? { inUse: {}, reserved: {} };
    tx.put(key, { inUse: add(usage.inUse, 1), reserved: add(usage.reserved, -1) });
    tx.delete(`bare/reservations/${id}`);
    tx.delete(`bare/expiry/${time(expiresAt)}/${id}`);
    tx.put(`bare/receipts/settle/${id}`, { outcome: 'committed', reservation: id, project, deltas });
    tx.put(`bare/receipt-expiry/${time(Date.now() + 86_400_000)}/settle/${id}`, true);
  });
}

async function quotaReserveCommit(
  quota: Quota,
  project: string,
  deltas: Record<string, number>,
): Promise<void> {
  await quota.commit(await quota.reserve(project, deltas));
}

/**
 * Single caller and 16 concurrent callers (each on its own project), with 1 and 8 resources per reservation.
 * The reference runs on stores of its own (`bare`), so neither side pays for the keys the other leaves.
 */
function groupsFor(tag: string, quotas: Quota[], bare: Store[]): BenchGroup[] {
  const groups: BenchGroup[] = [];
  for (const count of [1, 8]) {
    const deltas = deltasOf(count);
    const label = `${count} resource${count > 1 ? 's' : ''}`;
    groups.push({
      name: `${tag}, 1 caller, ${label}`,
      cases: [
        {
          name: 'bare Store transactions',
          reference: true,
          fn: () => bareReserveCommit(bare[0] as Store, 'solo', deltas),
        },
        { name: 'quota reserve+commit', fn: () => quotaReserveCommit(quotas[0] as Quota, 'solo', deltas) },
      ],
    });
    const callers = Array.from({ length: 16 }, (_, i) => i);
    groups.push({
      name: `${tag}, 16 callers, ${label}`,
      cases: [
        {
          name: 'bare Store transactions x16',
          reference: true,
          opsPerRun: 16,
          fn: () =>
            Promise.all(
              callers.map((i) => bareReserveCommit(bare[i % bare.length] as Store, `p${i}`, deltas)),
            ),
        },
        {
          name: 'quota reserve+commit x16',
          opsPerRun: 16,
          fn: () =>
            Promise.all(
              callers.map((i) => quotaReserveCommit(quotas[i % quotas.length] as Quota, `p${i}`, deltas)),
            ),
        },
      ],
    });
  }
  return groups;
}

interface WorkerRequest {
  seq: number;
  resources: number;
  bare: boolean;
}

/** PostgreSQL callers from 4 processes: each worker runs 4 concurrent reserve+commits per request. */
async function postgresProcessGroups(
  url: string,
  table: string,
): Promise<{ groups: BenchGroup[]; close: () => void }> {
  const file = fileURLToPath(import.meta.url);
  const workers = Array.from({ length: 4 }, (_, w) =>
    fork(file, [url, table, String(w)], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, QUOTA_BENCH_WORKER: '1' },
    }),
  );
  let seq = 0;
  const pending = new Map<number, { left: number; resolve: () => void; reject: (e: Error) => void }>();
  for (const worker of workers) {
    worker.on('message', (msg: { seq: number; error?: string }) => {
      const p = pending.get(msg.seq);
      if (!p) return;
      if (msg.error) p.reject(new Error(msg.error));
      else if (--p.left === 0) {
        pending.delete(msg.seq);
        p.resolve();
      }
    });
  }
  await Promise.all(workers.map((w) => new Promise((r) => w.once('message', r))));
  const run = (resources: number, bare: boolean) =>
    new Promise<void>((resolve, reject) => {
      const request: WorkerRequest = { seq: seq++, resources, bare };
      pending.set(request.seq, { left: workers.length, resolve, reject });
      for (const w of workers) w.send(request);
    });
  const groups: BenchGroup[] = [1, 8].map((count) => {
    const cases: BenchCase[] = [
      {
        name: 'bare Store transactions, 4 processes x4',
        reference: true,
        opsPerRun: 16,
        fn: () => run(count, true),
      },
      { name: 'quota reserve+commit, 4 processes x4', opsPerRun: 16, fn: () => run(count, false) },
    ];
    return { name: `postgres, 16 callers in 4 processes, ${count} resource${count > 1 ? 's' : ''}`, cases };
  });
  return {
    groups,
    close: () => {
      for (const w of workers) w.kill();
    },
  };
}

async function workerMain(): Promise<void> {
  const [url, table, w] = process.argv.slice(2);
  const store = new PostgresStore({ connectionString: url as string, table: table as string, poolSize: 4 });
  const bare = new PostgresStore({ connectionString: url as string, table: `${table}_bare`, poolSize: 4 });
  const quota = new Quota(store);
  await prepare(quota);
  const send = (msg: unknown) => process.send?.(msg);
  process.on('message', (request: WorkerRequest) => {
    const deltas = deltasOf(request.resources);
    const work = Array.from({ length: 4 }, (_, i) =>
      request.bare
        ? bareReserveCommit(bare, `w${w}-${i}`, deltas)
        : quotaReserveCommit(quota, `w${w}-${i}`, deltas),
    );
    Promise.all(work).then(
      () => send({ seq: request.seq }),
      (error: unknown) => send({ seq: request.seq, error: String(error) }),
    );
  });
  process.on(
    'disconnect',
    () => void Promise.all([store.close(), bare.close()]).finally(() => process.exit(0)),
  );
  send({ ready: true });
}

if (process.env.QUOTA_BENCH_WORKER === '1') await workerMain();

export default defineBenchmarks({
  name: 'Quota reserve+commit per second, against the bare Store doing the same reads and writes',
  async setup(ctx) {
    const groups: BenchGroup[] = [];
    const closers: (() => Promise<void> | void)[] = [];

    const memory = new MemoryStore();
    const memoryBare = new MemoryStore();
    const memoryQuota = new Quota(memory);
    await prepare(memoryQuota);
    groups.push(...groupsFor('memory', [memoryQuota], [memoryBare]));
    closers.push(
      () => memory.close(),
      () => memoryBare.close(),
    );

    // SQLite with its default (fsync per commit) durability; 16 callers share 4 handles on the file.
    const path = join(ctx.tmpDir, 'quota.db');
    const barePath = join(ctx.tmpDir, 'quota-bare.db');
    const sqlite = Array.from({ length: 4 }, () => new SqliteStore({ path }));
    const sqliteBare = Array.from({ length: 4 }, () => new SqliteStore({ path: barePath }));
    const sqliteQuotas = sqlite.map((s) => new Quota(s));
    await prepare(sqliteQuotas[0] as Quota);
    groups.push(...groupsFor('sqlite', sqliteQuotas, sqliteBare));
    closers.push(...[...sqlite, ...sqliteBare].map((s) => () => s.close()));

    if (ctx.postgresUrl) {
      const table = 'bench_quota';
      const pg = new PostgresStore({ connectionString: ctx.postgresUrl, table, poolSize: 4 });
      const pgBare = new PostgresStore({
        connectionString: ctx.postgresUrl,
        table: `${table}_bare`,
        poolSize: 4,
      });
      const pgQuota = new Quota(pg);
      await prepare(pgQuota);
      groups.push(...groupsFor('postgres', [pgQuota], [pgBare]).filter((g) => g.name.includes('1 caller')));
      const procs = await postgresProcessGroups(ctx.postgresUrl, table);
      groups.push(...procs.groups);
      closers.push(
        () => procs.close(),
        () => pg.close(),
        () => pgBare.close(),
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
