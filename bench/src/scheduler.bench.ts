import { join } from 'node:path';
import { PostgresStore, SqliteStore, type Store } from '@nubes/core';
import {
  defaultFilters,
  type HostInput,
  HostSnapshot,
  Inventory,
  parseRequest,
  Scheduler,
  seededRandom,
} from '@nubes/scheduler';
import { type BenchCase, type BenchGroup, defineBenchmarks } from './harness.js';

const request = { resources: { vcpus: 2, memoryMiB: 4096, diskGiB: 20 } };

/** Random but realistic hosts: common server shapes, 0-90% used, 10 labels, a few traits, some down or disabled. */
function randomHosts(n: number, seed: number): HostInput[] {
  const r = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  return Array.from({ length: n }, (_, i) => {
    const vcpus = pick([32, 48, 64, 96, 128]);
    const memoryMiB = pick([128, 256, 512, 1024]) * 1024;
    const diskGiB = pick([960, 1920, 3840]);
    const used = r() * 0.9;
    const instances = Array.from({ length: Math.floor(r() * 8) }, (_, k) => ({
      id: `h${i}-vm${k}`,
      resources: { vcpus: 2, memoryMiB: 4096 },
      groups: r() < 0.1 ? [`g${Math.floor(r() * 100)}`] : [],
    }));
    return {
      id: `host-${i}`,
      name: `host-${i}`,
      capacity: { vcpus, memoryMiB, diskGiB },
      reserved: { vcpus: 2, memoryMiB: 8192 },
      allocationRatios: { vcpus: 4, memoryMiB: 1.5 },
      allocated: {
        vcpus: Math.floor(vcpus * 4 * used),
        memoryMiB: Math.floor(memoryMiB * used),
        diskGiB: Math.floor(diskGiB * used),
      },
      labels: Object.fromEntries(
        Array.from({ length: 10 }, (_, k) => [`label${k}`, `v${Math.floor(r() * 5)}`]),
      ),
      traits: [
        'HW_CPU_X86_AVX2',
        ...(r() < 0.3 ? ['STORAGE_DISK_SSD'] : []),
        ...(r() < 0.05 ? ['HW_GPU'] : []),
      ],
      availabilityZone: `az${i % 3}`,
      state: r() < 0.02 ? 'down' : r() < 0.02 ? 'disabled' : 'enabled',
      instances,
    };
  });
}

/**
 * The reference: a hand-written loop doing the same core work (state check, resource fit with ratios,
 * least-allocated plus balanced score, keep the best) with no plugins, no explanations and no validation.
 */
function naiveSelect(hosts: readonly HostInput[], req: typeof request): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const h of hosts) {
    if (h.state !== 'enabled') continue;
    let fits = true;
    const fractions: number[] = [];
    let least = 0;
    for (const name of ['vcpus', 'memoryMiB', 'diskGiB'] as const) {
      const usable =
        ((h.capacity[name] ?? 0) - (h.reserved?.[name] ?? 0)) * (h.allocationRatios?.[name] ?? 1);
      const requested = (h.allocated?.[name] ?? 0) + req.resources[name];
      if (requested > usable) fits = false;
      if (name !== 'diskGiB') {
        fractions.push(requested / usable);
        least += ((usable - requested) * 100) / usable;
      }
    }
    if (!fits) continue;
    const mean = ((fractions[0] ?? 0) + (fractions[1] ?? 0)) / 2;
    const std = Math.abs((fractions[0] ?? 0) - mean);
    const score = least / 2 + (1 - std) * 100;
    if (score > bestScore) {
      bestScore = score;
      best = h.id;
    }
  }
  return best;
}

async function claimGroup(store: Store, tag: string): Promise<BenchGroup> {
  // No per-host instance cap here: the benchmark keeps placing for as long as it runs.
  const scheduler = new Scheduler({ seed: 1, filters: defaultFilters({ maxInstances: { max: 1_000_000 } }) });
  const inventory = new Inventory(store, { scheduler, prefix: `bench-${tag.toLowerCase()}` });
  for (const h of randomHosts(50, 2)) {
    await inventory.registerHost({
      ...h,
      instances: [],
      allocated: {},
      state: 'enabled',
      capacity: { vcpus: 1e6, memoryMiB: 1e9, diskGiB: 1e6 },
    });
  }
  const host = (await inventory.listHosts())[0]?.host.id as string;
  const parsed = parseRequest({ ...request, instanceIds: ['x'] });
  let k = 0;
  let t = 0;
  const cases: BenchCase[] = [
    {
      name: `${tag} 1-key transaction`,
      reference: true,
      fn: () =>
        store.transaction(async (tx) => {
          const n = (await tx.get<number>('bench/tx'))?.value ?? 0;
          tx.put('bench/tx', n + 1);
        }),
    },
    {
      name: `${tag} claim a given host`,
      fn: () => inventory.claim({ ...parsed, instanceIds: [`c${t++}`] }, [host]),
    },
    {
      name: `${tag} place (list + select + claim)`,
      fn: () => inventory.place({ ...request, instanceIds: [`p${k++}`] }),
    },
  ];
  return { name: `claims through ${tag}`, cases };
}

export default defineBenchmarks({
  name: 'Scheduler decisions per second (default filters and weighers) and claims per second',
  async setup(ctx) {
    const groups: BenchGroup[] = [];
    for (const n of [1000, 5000, 20_000, 100_000]) {
      const hosts = randomHosts(n, 1);
      const snapshot = HostSnapshot.of(hosts);
      const scheduler = new Scheduler({ seed: 1 });
      // Sampling keeps its round-robin start in the scheduler, so one instance serves every run.
      const sampled = new Scheduler({ seed: 1, sampling: true });
      groups.push({
        name: `select, ${n.toLocaleString('en-US')} hosts`,
        cases: [
          { name: 'naive loop', reference: true, fn: () => naiveSelect(hosts, request) },
          { name: 'Scheduler.select', fn: () => scheduler.select(snapshot, request) },
          ...(n === 100_000
            ? [{ name: 'Scheduler.select, sampling', fn: () => sampled.select(snapshot, request) }]
            : []),
        ],
      });
    }
    const closers: (() => Promise<void>)[] = [];
    const sqlite = new SqliteStore({ path: join(ctx.tmpDir, 'scheduler.db'), durability: 'normal' });
    closers.push(() => sqlite.close());
    groups.push(await claimGroup(sqlite, 'SqliteStore'));
    if (ctx.postgresUrl) {
      const pg = new PostgresStore({ connectionString: ctx.postgresUrl, table: 'bench_scheduler' });
      closers.push(() => pg.close());
      groups.push(await claimGroup(pg, 'PostgresStore'));
    } else {
      console.warn('[bench] PostgreSQL unavailable: skipping the PostgresStore claims');
    }
    return {
      groups,
      teardown: async () => {
        for (const close of closers) await close();
      },
    };
  },
});
