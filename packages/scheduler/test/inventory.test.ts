import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isNubesError, MemoryStore, PostgresStore, SqliteStore, type Store } from '@nubes/core';
import { describeWith, testPostgresUrl } from '@nubes/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { Inventory, Scheduler, type StoredHost } from '../src/index.js';
import { host, hosts } from './hosts.js';

const tsx = createRequire(import.meta.url).resolve('tsx');
const placer = join(import.meta.dirname, 'fixtures', 'placer.ts');

function expectWithinCapacity(stored: StoredHost[]): void {
  for (const { host: h } of stored) {
    for (const [name, used] of Object.entries(h.allocated)) {
      expect(used, `${h.id} ${name}`).toBeLessThanOrEqual(
        (h.capacity[name] ?? 0) * (h.allocationRatios[name] ?? 1),
      );
    }
    const summed = h.instances.reduce((s, i) => s + (i.resources.vcpus ?? 0), 0);
    expect(h.allocated.vcpus ?? 0).toBe(summed);
  }
}

/** The claim behaviour every store backend must show; `peers` returns handles that act like other processes. */
function claimSuite(
  open: () => Promise<{ store: Store; peers: (n: number) => Store[]; close: () => Promise<void> }>,
): void {
  it('claims, releases and moves, keeping every host within capacity', async () => {
    const { store, close } = await open();
    const inventory = new Inventory(store, { scheduler: new Scheduler({ seed: 1 }) });
    await inventory.registerHost(host('a', { capacity: { vcpus: 4, memoryMiB: 8192 } }));
    await inventory.registerHost(host('b', { capacity: { vcpus: 2, memoryMiB: 8192 } }));
    const placed = await inventory.place({ resources: { vcpus: 2, memoryMiB: 1024 }, instanceIds: ['vm-1'] });
    expect(placed.allocations).toEqual([
      { instanceId: 'vm-1', hostId: 'a', resources: { vcpus: 2, memoryMiB: 1024 }, groups: [] },
    ]);
    expect((await inventory.getHost('a')).generation).toBe(2);
    await inventory.place({ resources: { vcpus: 2 }, count: 2, instanceIds: ['vm-2', 'vm-3'] });
    await expect(inventory.place({ resources: { vcpus: 1 } })).rejects.toMatchObject({ code: 'NoValidHost' });
    // Releasing returns the capacity; a repeated release is NotFound.
    await inventory.release('vm-1');
    await expect(inventory.release('vm-1')).rejects.toMatchObject({ code: 'NotFound' });
    expect((await inventory.getHost('a')).host.allocated.vcpus ?? 0).toBe(2);
    const again = await inventory.place({ resources: { vcpus: 2 } });
    expect(again.allocations[0]?.hostId).toBe('a');
    // Moving re-checks the destination: b is full, so the move fails and nothing changes.
    const onA = (await inventory.getHost('a')).host.instances[0]?.id as string;
    await expect(inventory.move(onA, 'b')).rejects.toMatchObject({ code: 'NoValidHost' });
    await inventory.release((await inventory.getHost('b')).host.instances[0]?.id as string);
    await inventory.move(onA, 'b');
    expect((await inventory.getAllocation(onA)).hostId).toBe('b');
    expect((await inventory.getHost('a')).host.instances.map((i) => i.id)).not.toContain(onA);
    await expect(inventory.removeHost('b')).rejects.toMatchObject({ code: 'Conflict' });
    // Re-registering keeps the claims.
    await inventory.registerHost(
      host('b', { capacity: { vcpus: 2, memoryMiB: 8192 }, labels: { new: 'yes' } }),
    );
    expect((await inventory.getHost('b')).host).toMatchObject({
      labels: { new: 'yes' },
      allocated: { vcpus: 2 },
    });
    expectWithinCapacity(await inventory.listHosts());
    await close();
  });

  it('keeps anti-affinity and affinity across concurrent placements', async () => {
    const { store, peers, close } = await open();
    const inventory = new Inventory(store);
    for (const h of hosts(6)) await inventory.registerHost(h);
    const handles = peers(6).map((s, i) => new Inventory(s, { scheduler: new Scheduler({ seed: i }) }));
    const anti = await Promise.allSettled(
      handles.map((inv) =>
        inv.place({
          resources: { vcpus: 1 },
          hints: { serverGroup: { id: 'web', policy: 'anti-affinity' } },
        }),
      ),
    );
    expect(anti.every((r) => r.status === 'fulfilled')).toBe(true);
    const antiHosts = anti.map((r) => (r.status === 'fulfilled' ? r.value.allocations[0]?.hostId : ''));
    expect(new Set(antiHosts).size).toBe(6);
    const aff = await Promise.all(
      handles.map((inv) =>
        inv.place({ resources: { vcpus: 1 }, hints: { serverGroup: { id: 'db', policy: 'affinity' } } }),
      ),
    );
    expect(new Set(aff.map((p) => p.allocations[0]?.hostId)).size).toBe(1);
    await expect(
      inventory.place({
        resources: { vcpus: 1 },
        hints: { serverGroup: { id: 'web', policy: 'anti-affinity' } },
      }),
    ).rejects.toMatchObject({ code: 'NoValidHost' });
    await close();
  });

  it('never double-books under concurrency: exactly the room that exists is claimed', async () => {
    const { store, peers, close } = await open();
    const inventory = new Inventory(store);
    // 10 hosts with room for 1..10 instances: 55 in all.
    for (const h of hosts(10, (i) => ({ capacity: { vcpus: i + 1, memoryMiB: 65_536 } })))
      await inventory.registerHost(h);
    const handles = peers(4).map(
      (s, i) => new Inventory(s, { scheduler: new Scheduler({ seed: i }), maxAttempts: 50 }),
    );
    const results = await Promise.allSettled(
      Array.from({ length: 80 }, (_, i) => (handles[i % 4] as Inventory).place({ resources: { vcpus: 1 } })),
    );
    const placed = results.filter((r) => r.status === 'fulfilled').length;
    const failed = results
      .filter((r) => r.status === 'rejected')
      .map((r) => (r as PromiseRejectedResult).reason);
    expect(failed.every((e) => isNubesError(e, 'NoValidHost'))).toBe(true);
    expect(placed).toBe(55);
    const stored = await inventory.listHosts();
    expectWithinCapacity(stored);
    expect(stored.reduce((s, h) => s + h.host.instances.length, 0)).toBe(55);
    await close();
  });

  it('places a gang all or nothing', async () => {
    const { store, close } = await open();
    const inventory = new Inventory(store);
    for (const h of hosts(2, () => ({ capacity: { vcpus: 2 } }))) await inventory.registerHost(h);
    await expect(inventory.place({ resources: { vcpus: 1 }, count: 5 })).rejects.toMatchObject({
      code: 'NoValidHost',
    });
    expect((await inventory.listHosts()).every((h) => h.host.instances.length === 0)).toBe(true);
    const gang = await inventory.place({ resources: { vcpus: 1 }, count: 4 });
    expect(gang.allocations).toHaveLength(4);
    await expect(
      inventory.place({ resources: { vcpus: 1 }, instanceIds: [gang.allocations[0]?.instanceId as string] }),
    ).rejects.toMatchObject({
      code: 'NoValidHost',
    });
    await close();
  });
}

describe('Inventory on MemoryStore', () => {
  claimSuite(async () => {
    const store = new MemoryStore();
    return { store, peers: (n) => Array.from({ length: n }, () => store), close: () => store.close() };
  });
});

describe('Inventory on SqliteStore', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nubes-scheduler-'));
  let n = 0;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  claimSuite(async () => {
    const path = join(dir, `inv-${n++}.db`);
    const store = new SqliteStore({ path });
    const extra: Store[] = [];
    return {
      store,
      peers: (k) => {
        const made = Array.from({ length: k }, () => new SqliteStore({ path }));
        extra.push(...made);
        return made;
      },
      close: async () => {
        for (const s of [store, ...extra]) await s.close();
      },
    };
  });
});

describeWith(['postgres'], 'Inventory on PostgresStore', () => {
  let n = 0;
  claimSuite(async () => {
    const url = testPostgresUrl() as string;
    const table = `sched_${process.pid}_${n++}`;
    const store = new PostgresStore({ connectionString: url, table });
    const extra: Store[] = [];
    return {
      store,
      peers: (k) => {
        const made = Array.from(
          { length: k },
          () => new PostgresStore({ connectionString: url, table, poolSize: 1 }),
        );
        extra.push(...made);
        return made;
      },
      close: async () => {
        for (const s of [store, ...extra]) await s.close();
      },
    };
  });

  it('4 scheduler processes placing 2,000 instances into room for 1,500: exactly 1,500 succeed', async () => {
    const url = testPostgresUrl() as string;
    const table = `sched4_${process.pid}`;
    const store = new PostgresStore({ connectionString: url, table });
    const inventory = new Inventory(store);
    // 60 hosts of 25 vCPUs; every instance takes 1 vCPU: room for exactly 1,500.
    await Promise.all(
      hosts(60, () => ({ capacity: { vcpus: 25, memoryMiB: 1_000_000 } })).map((h) =>
        inventory.registerHost(h),
      ),
    );
    const runs = Array.from({ length: 4 }, (_, i) => {
      const child = spawn(process.execPath, ['--import', tsx, placer, url, table, '500', '4', String(i)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
      });
      return new Promise<Record<string, number>>((resolve, reject) =>
        child.on('exit', (code) =>
          code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`placer ${i} exited ${code}: ${err}`)),
        ),
      );
    });
    const outcomes = await Promise.all(runs);
    const total = (key: string) => outcomes.reduce((s, o) => s + (o[key] ?? 0), 0);
    expect(total('placed')).toBe(1500);
    expect(total('NoValidHost')).toBe(500);
    const stored = await inventory.listHosts();
    expectWithinCapacity(stored);
    expect(stored.every((h) => h.host.instances.length === 25)).toBe(true);
    expect((await store.list(`scheduler/allocations/`, { limit: 10_000 })).items).toHaveLength(1500);
    await store.close();
  }, 120_000);
});
