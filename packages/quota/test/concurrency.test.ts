import type { Store } from '@nubes/core';
import { beforeAll, expect, it } from 'vitest';
import { Quota } from '../src/index.js';
import { describeBackends, startWorker } from './backends.js';
import { type RaceResult, raceReservers } from './race.js';

const sum = (xs: number[] = []) => xs.reduce((a, b) => a + b, 0);

function merge(results: RaceResult[]): RaceResult {
  const out: RaceResult = { committed: {}, refused: 0, rolledBack: 0 };
  for (const r of results) {
    out.refused += r.refused;
    out.rolledBack += r.rolledBack;
    for (const [p, sizes] of Object.entries(r.committed))
      out.committed[p] = [...(out.committed[p] ?? []), ...sizes];
  }
  return out;
}

describeBackends('concurrent reservations', (backend) => {
  let store: Store;
  let n = 0;

  beforeAll(() => {
    store = backend.open();
  });

  /**
   * 64 reservers in 4 groups: for PostgreSQL each group is its own process; otherwise each group has its own
   * store handle (MemoryStore: the one store). A monitor keeps reading usage while they race.
   */
  async function race(keyPrefix: string, projects: string[], seed: number): Promise<RaceResult> {
    const args = backend.name === 'postgres' ? backend.processArgs(store) : undefined;
    if (args) {
      const workers = Array.from({ length: 4 }, (_, g) =>
        startWorker(['race', ...args, keyPrefix, projects.join(','), '16', String(seed + g)]),
      );
      const outputs = await Promise.all(workers.map((w) => w.done));
      return merge(outputs.map((o) => JSON.parse(o.trim().split('\n').at(-1) as string) as RaceResult));
    }
    const groups = Array.from({ length: 4 }, (_, g) =>
      raceReservers(new Quota(backend.peer(store), { keyPrefix }), projects, 16, seed + g),
    );
    return merge(await Promise.all(groups));
  }

  it('64 reservers racing for a limit of 100 never exceed it; usage is the sum of commits', async () => {
    const keyPrefix = `race${n++}/`;
    const quota = new Quota(store, { keyPrefix });
    await quota.setLimits('race', { vcpus: 100 });
    let monitoring = true;
    let samples = 0;
    const monitor = (async () => {
      while (monitoring) {
        const { vcpus } = (await quota.usage('race')).resources;
        expect((vcpus?.inUse ?? 0) + (vcpus?.reserved ?? 0)).toBeLessThanOrEqual(100);
        samples += 1;
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const result = await race(keyPrefix, ['race'], 1000 + n).finally(() => {
      monitoring = false;
    });
    await monitor;
    const usage = (await quota.usage('race')).resources.vcpus;
    expect(usage?.reserved).toBe(0);
    expect(usage?.inUse).toBe(sum(result.committed.race));
    expect(usage?.inUse).toBeLessThanOrEqual(100);
    // Sizes average 5.5, so 64 callers ask for far more than 100: some must have been refused.
    expect(result.refused).toBeGreaterThan(0);
    expect(sum(result.committed.race)).toBeGreaterThan(50);
    expect(samples).toBeGreaterThan(0);
  });

  it('a strict parent limit holds while its children reserve concurrently', async () => {
    const keyPrefix = `tree${n++}/`;
    const quota = new Quota(store, { keyPrefix });
    await quota.setEnforcementModel('strict-two-level');
    await quota.setLimits('org', { vcpus: 100 });
    const children = ['c1', 'c2', 'c3', 'c4'];
    for (const child of children) {
      await quota.setLimits(child, { vcpus: 40 });
      await quota.setParent(child, 'org');
    }
    const result = await race(keyPrefix, children, 2000 + n);
    const tree = await quota.treeUsage('org');
    const committed = children.map((c) => sum(result.committed[c]));
    expect(tree.children.map((c) => c.resources.vcpus?.inUse ?? 0)).toEqual(committed);
    for (const used of committed) expect(used).toBeLessThanOrEqual(40);
    expect(tree.total.vcpus?.inUse).toBe(sum(committed));
    expect(tree.total.vcpus?.inUse).toBeLessThanOrEqual(100);
    expect(tree.total.vcpus?.reserved).toBe(0);
    // The stored children total agrees with the children themselves: repair finds nothing to fix.
    expect((await quota.repair(() => ({}))).fixed).toEqual([]);
  });
});
