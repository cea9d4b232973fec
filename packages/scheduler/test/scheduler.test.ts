import { isNubesError, NubesError } from '@nubes/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type FailureExplanation,
  type Filter,
  HostSnapshot,
  hostsToFind,
  mostAllocatedWeigher,
  reject,
  Scheduler,
  type Weigher,
} from '../src/index.js';
import { host, hosts } from './hosts.js';

function failure(fn: () => unknown): FailureExplanation {
  try {
    fn();
  } catch (error) {
    if (isNubesError(error, 'NoValidHost')) return error.details.explanation as FailureExplanation;
    throw error;
  }
  throw new Error('expected NoValidHost');
}

describe('Scheduler.select', () => {
  it('explains a failure kube-scheduler style, with per-host filter and reason', () => {
    const s = new Scheduler({ seed: 1 });
    const cluster = [
      host('a', { capacity: { vcpus: 8, memoryMiB: 1024 } }),
      host('b', { capacity: { vcpus: 8, memoryMiB: 1024 } }),
      host('c', { capacity: { vcpus: 8, memoryMiB: 1024 } }),
      host('d', { labels: { tier: 'bronze' } }),
      host('e', { labels: { tier: 'bronze' } }),
      host('f', { state: 'down' }),
    ].map((h, i) => (i < 3 ? { ...h, labels: { tier: 'gold' } } : h));
    const request = {
      resources: { vcpus: 1, memoryMiB: 4096 },
      hints: {
        labelSelector: {
          matchExpressions: [{ key: 'tier', operator: 'NotIn' as const, values: ['bronze'] }],
        },
      },
    };
    let error: unknown;
    try {
      s.select(cluster, request);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(NubesError);
    expect((error as NubesError).code).toBe('NoValidHost');
    expect((error as NubesError).message).toBe(
      '0/6 hosts are available: 3 insufficient memoryMiB, 2 did not match label selector, 1 host is down.',
    );
    const explanation = failure(() => s.select(cluster, request));
    expect(explanation.reasons).toEqual({
      'insufficient memoryMiB': 3,
      'did not match label selector': 2,
      'host is down': 1,
    });
    expect(explanation.hosts.find((h) => h.hostId === 'a')).toEqual({
      hostId: 'a',
      hostName: 'a',
      filter: 'ResourceFit',
      reasons: ['insufficient memoryMiB'],
      detail: 'memoryMiB: needs 4096, 1024 free of 1024 usable',
    });
    expect(explanation.hosts.find((h) => h.hostId === 'd')?.filter).toBe('LabelSelector');
  });

  it('explains a success with the per-weigher scores of the top hosts', () => {
    const s = new Scheduler({ seed: 1 });
    const d = s.select(
      [host('a', { allocated: { vcpus: 4, memoryMiB: 8192 } }), host('b'), host('c', { state: 'disabled' })],
      {
        resources: { vcpus: 2, memoryMiB: 4096 },
      },
    );
    const pick = d.picks[0];
    expect(pick?.hostId).toBe('b');
    expect(pick?.alternates).toEqual([{ hostId: 'a', hostName: 'a' }]);
    expect(pick?.explanation).toMatchObject({
      total: 3,
      evaluated: 3,
      feasible: 2,
      rejected: { 'host is disabled': 1 },
    });
    expect(pick?.explanation.message).toBe(
      '2/3 hosts are available; chose b (score 175); 1 rejected: 1 host is disabled.',
    );
    expect(pick?.explanation.top[0]?.scores.map((x) => [x.weigher, x.weighted])).toEqual([
      ['LeastAllocated', 75],
      ['BalancedAllocation', 100],
    ]);
  });

  it('breaks ties at random, reproducibly under a seed', () => {
    const cluster = hosts(20);
    const picks = (seed: number) => {
      const s = new Scheduler({ seed });
      return Array.from(
        { length: 10 },
        () => s.select(cluster, { resources: { vcpus: 1 } }).picks[0]?.hostId,
      );
    };
    expect(picks(7)).toEqual(picks(7));
    expect(new Set(picks(7)).size).toBeGreaterThan(3);
  });

  it('picks among the best N with hostSubsetSize', () => {
    const cluster = hosts(10, (i) => ({ allocated: { vcpus: i % 8 } }));
    const s = new Scheduler({ seed: 3, hostSubsetSize: 3, explainTop: 3 });
    const chosen = new Set(
      Array.from({ length: 60 }, () => s.select(cluster, { resources: { vcpus: 1 } }).picks[0]?.hostId),
    );
    // h000 and h008 have 0 allocated, h001 and h009 have 1: the top 3 come from these four.
    expect([...chosen].every((h) => ['h000', 'h008', 'h001', 'h009'].includes(h as string))).toBe(true);
    expect(chosen.size).toBeGreaterThanOrEqual(3);
  });

  it('places a multi-instance request, consuming capacity between picks', () => {
    const s = new Scheduler({ seed: 1, weighers: [mostAllocatedWeigher()] });
    const d = s.select([host('a', { capacity: { vcpus: 4 } }), host('b', { capacity: { vcpus: 4 } })], {
      resources: { vcpus: 1 },
      count: 6,
      instanceIds: ['i1', 'i2', 'i3', 'i4', 'i5', 'i6'],
    });
    const counts: Record<string, number> = {};
    for (const p of d.picks) counts[p.hostId] = (counts[p.hostId] ?? 0) + 1;
    expect(Object.values(counts).sort()).toEqual([2, 4]);
    expect(d.picks.map((p) => p.instanceId)).toEqual(['i1', 'i2', 'i3', 'i4', 'i5', 'i6']);
  });

  it('is all-or-nothing: a gang that does not fit fails naming the instance', () => {
    const s = new Scheduler({ seed: 1 });
    const e = failure(() =>
      s.select([host('a', { capacity: { vcpus: 2 } }), host('b', { capacity: { vcpus: 2 } })], {
        resources: { vcpus: 1 },
        count: 5,
      }),
    );
    expect(e).toMatchObject({ instance: 5, count: 5, reasons: { 'insufficient vcpus': 2 } });
    expect(e.message).toBe('instance 5 of 5: 0/2 hosts are available: 2 insufficient vcpus.');
  });

  it('spreads an anti-affinity gang over distinct hosts and keeps an affinity gang together', () => {
    const s = new Scheduler({ seed: 1 });
    const anti = s.select(hosts(5), {
      resources: { vcpus: 1 },
      count: 5,
      hints: { serverGroup: { id: 'g', policy: 'anti-affinity' } },
    });
    expect(new Set(anti.picks.map((p) => p.hostId)).size).toBe(5);
    const e = failure(() =>
      s.select(hosts(5), {
        resources: { vcpus: 1 },
        count: 6,
        hints: { serverGroup: { id: 'g', policy: 'anti-affinity' } },
      }),
    );
    expect(e.reasons).toEqual({ 'violates server group anti-affinity': 5 });
    const aff = s.select(hosts(5), {
      resources: { vcpus: 1 },
      count: 4,
      hints: { serverGroup: { id: 'g', policy: 'affinity' } },
    });
    expect(new Set(aff.picks.map((p) => p.hostId)).size).toBe(1);
    const soft = s.select(hosts(5), {
      resources: { vcpus: 1 },
      count: 3,
      hints: { serverGroup: { id: 'g', policy: 'soft-affinity' } },
    });
    expect(new Set(soft.picks.map((p) => p.hostId)).size).toBe(1);
    const softAnti = s.select(hosts(5), {
      resources: { vcpus: 1 },
      count: 5,
      hints: { serverGroup: { id: 'g', policy: 'soft-anti-affinity' } },
    });
    expect(new Set(softAnti.picks.map((p) => p.hostId)).size).toBe(5);
  });

  it('runs user filters and weighers registered without forking', () => {
    const evenOnly: Filter = {
      name: 'EvenOnly',
      filter: (c) => (Number(c.host.id.slice(1)) % 2 === 0 ? true : reject('is odd', `id ${c.host.id}`)),
    };
    const highest: Weigher = { name: 'Highest', scale: 'raw', weigh: (c) => Number(c.host.id.slice(1)) };
    const s = new Scheduler({ seed: 1, filters: [evenOnly], weighers: [{ weigher: highest, weight: 3 }] });
    const d = s.select(hosts(9), { resources: {} });
    expect(d.picks[0]?.hostId).toBe('h008');
    expect(d.picks[0]?.explanation.rejected).toEqual({ 'is odd': 4 });
    expect(() => new Scheduler({ filters: [{ name: 'x' } as unknown as Filter] })).toThrow(
      /options.filters.0/,
    );
  });

  it('samples in kube-scheduler manner: looks for enough feasible hosts, starting round-robin', () => {
    expect(hostsToFind(99)).toBe(99);
    expect(hostsToFind(1000)).toBe(420);
    expect(hostsToFind(5000)).toBe(500);
    expect(hostsToFind(100_000)).toBe(5000);
    expect(hostsToFind(1000, 5)).toBe(100);
    expect(hostsToFind(1000, 100)).toBe(1000);
    const snapshot = HostSnapshot.of(hosts(1000));
    const s = new Scheduler({ seed: 1, sampling: true });
    const first = s.select(snapshot, { resources: { vcpus: 1 } }).picks[0]?.explanation;
    expect(first).toMatchObject({ total: 1000, evaluated: 420, feasible: 420 });
    expect(first?.message).toContain('(420 of 1000 evaluated)');
    // Every host gets its turn: three picks cover 1000 hosts from different starting points.
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++)
      for (const h of s.select(snapshot, { resources: { vcpus: 1 } }).picks[0]?.explanation.top ?? [])
        seen.add(h.hostId);
    expect(seen.size).toBeGreaterThan(3);
    // Failures still see every host.
    expect(failure(() => s.select(snapshot, { resources: { vcpus: 99 } })).reasons).toEqual({
      'insufficient vcpus': 1000,
    });
  });

  it('caps per-host failure details but always counts every host', () => {
    const s = new Scheduler({ maxExplainedHosts: 2 });
    const e = failure(() => s.select(hosts(5), { resources: { vcpus: 99 } }));
    expect(e.hosts).toHaveLength(2);
    expect(e.truncated).toBe(3);
    expect(e.reasons).toEqual({ 'insufficient vcpus': 5 });
  });

  it('never places beyond capacity (property)', () => {
    const hostArb = fc.record({
      vcpus: fc.integer({ min: 0, max: 16 }),
      memoryMiB: fc.integer({ min: 0, max: 8 }).map((x) => x * 1024),
      used: fc.integer({ min: 0, max: 8 }),
      ratio: fc.constantFrom(1, 1.5, 4),
    });
    fc.assert(
      fc.property(
        fc.array(hostArb, { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 4 }).map((x) => x * 512),
        fc.integer({ min: 1, max: 12 }),
        fc.constantFrom('kubernetes' as const, 'nova' as const),
        (spec, vcpus, memoryMiB, count, normalization) => {
          const cluster = spec.map((h, i) =>
            host(`h${i}`, {
              capacity: { vcpus: h.vcpus, memoryMiB: h.memoryMiB },
              allocationRatios: { vcpus: h.ratio },
              allocated: { vcpus: Math.min(h.used, h.vcpus) },
            }),
          );
          const s = new Scheduler({ seed: 1, normalization });
          let decision: ReturnType<Scheduler['select']>;
          try {
            decision = s.select(cluster, { resources: { vcpus, memoryMiB }, count });
          } catch (error) {
            if (isNubesError(error, 'NoValidHost')) return;
            throw error;
          }
          expect(decision.picks).toHaveLength(count);
          for (const [i, h] of cluster.entries()) {
            const n = decision.picks.filter((p) => p.hostId === `h${i}`).length;
            const usedV = (h.allocated?.vcpus ?? 0) + n * vcpus;
            expect(usedV).toBeLessThanOrEqual((h.capacity.vcpus ?? 0) * (h.allocationRatios?.vcpus ?? 1));
            expect(n * memoryMiB).toBeLessThanOrEqual(h.capacity.memoryMiB ?? 0);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
