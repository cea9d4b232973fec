import { describe, expect, it } from 'vitest';
import {
  balancedAllocationWeigher,
  candidateOf,
  cycleOf,
  freeRamWeigher,
  leastAllocatedWeigher,
  metricsWeigher,
  mostAllocatedWeigher,
  parseHost,
  parseRequest,
  Scheduler,
  softAffinityWeigher,
  softAntiAffinityWeigher,
} from '../src/index.js';
import { host } from './hosts.js';

// The worked example: cpu 4000 allocatable with 1000 requested, memory 8 GiB with 6 GiB requested.
const example = candidateOf(
  parseHost({ id: 'h', name: 'h', capacity: { cpu: 4000, memory: 8 }, allocated: { cpu: 1000, memory: 6 } }),
);
const none = parseRequest({ resources: {} });
const cycle = cycleOf([example]);
const weights = { cpu: 1, memory: 1 };

describe('allocation weighers (Kubernetes formulas)', () => {
  it('least-allocated gives 50 on the worked example', () => {
    expect(leastAllocatedWeigher(weights).weigh(example, none, cycle)).toBe(50);
  });

  it('most-allocated gives 50 on the worked example', () => {
    expect(mostAllocatedWeigher(weights).weigh(example, none, cycle)).toBe(50);
  });

  it('balanced allocation gives 75 on the worked example', () => {
    expect(balancedAllocationWeigher(['cpu', 'memory']).weigh(example, none, cycle)).toBe(75);
  });

  it('counts the incoming request as requested', () => {
    const empty = candidateOf(parseHost({ id: 'h', name: 'h', capacity: { cpu: 4000, memory: 8 } }));
    const req = parseRequest({ resources: { cpu: 1000, memory: 6 } });
    expect(leastAllocatedWeigher(weights).weigh(empty, req, cycle)).toBe(50);
    expect(balancedAllocationWeigher(['cpu', 'memory']).weigh(empty, req, cycle)).toBe(75);
  });

  it('weights resources: w_cpu 3, w_memory 1 gives (3*75 + 25) / 4', () => {
    expect(leastAllocatedWeigher({ cpu: 3, memory: 1 }).weigh(example, none, cycle)).toBe(62.5);
  });

  it('scores a resource the host lacks, or would over-commit, as 0', () => {
    const c = candidateOf(
      parseHost({ id: 'h', name: 'h', capacity: { cpu: 4000 }, allocated: { cpu: 5000 } }),
    );
    expect(leastAllocatedWeigher(weights).weigh(c, none, cycle)).toBe(0);
    expect(mostAllocatedWeigher(weights).weigh(c, none, cycle)).toBe(50);
  });

  it('uses usable capacity, allocation ratios included', () => {
    const c = candidateOf(
      parseHost({
        id: 'h',
        name: 'h',
        capacity: { cpu: 2000, memory: 8 },
        allocationRatios: { cpu: 2 },
        allocated: { cpu: 1000, memory: 6 },
      }),
    );
    expect(leastAllocatedWeigher(weights).weigh(c, none, cycle)).toBe(50);
  });

  it('rejects bad resource weights', () => {
    expect(() => leastAllocatedWeigher({ cpu: -1 })).toThrow(/resources.cpu/);
    expect(() => balancedAllocationWeigher([])).toThrow(/resources/);
  });
});

describe('Nova-style and group weighers', () => {
  const req = parseRequest({ resources: {}, hints: { serverGroup: { id: 'g', policy: 'soft-affinity' } } });
  const c = candidateOf(
    parseHost(
      host('a', {
        allocated: { memoryMiB: 1024 },
        instances: [{ id: 'i1', groups: ['g'] }, { id: 'i2', groups: ['g'] }, { id: 'i3' }],
        metrics: { cpuUtilization: 0.5, memoryUtilization: 0.25 },
      }),
    ),
  );
  it('free RAM is the raw free memory', () => {
    expect(freeRamWeigher().weigh(c, req, cycleOf([c]))).toBe(16_384 - 1024);
  });
  it('soft affinity counts members, soft anti-affinity their negative', () => {
    expect(softAffinityWeigher().weigh(c, req, cycleOf([c]))).toBe(2);
    expect(softAntiAffinityWeigher().weigh(c, req, cycleOf([c]))).toBe(-2);
    expect(softAffinityWeigher().appliesTo?.(req)).toBe(true);
    expect(softAntiAffinityWeigher().appliesTo?.(req)).toBe(false);
  });
  it('metrics weigher sums ratio x utilization and punishes missing metrics', () => {
    expect(metricsWeigher().weigh(c, req, cycleOf([c]))).toBe(-0.75);
    const bare = candidateOf(parseHost(host('b')));
    expect(metricsWeigher().weigh(bare, req, cycleOf([bare]))).toBe(-10_000);
    expect(
      metricsWeigher({ ratios: { cpuUtilization: 2 }, unavailable: 0 }).weigh(c, req, cycleOf([c])),
    ).toBe(1);
  });
});

describe('normalization', () => {
  const three = [
    host('a', { allocated: { vcpus: 0, memoryMiB: 0 } }),
    host('b', { allocated: { vcpus: 4, memoryMiB: 8192 } }),
    host('c', { allocated: { vcpus: 6, memoryMiB: 12_288 } }),
  ];

  it('Kubernetes: scores used as they are, times weight, summed', () => {
    const s = new Scheduler({
      seed: 1,
      weighers: [{ weigher: leastAllocatedWeigher(), weight: 2 }],
      explainTop: 3,
    });
    const top = s.select(three, { resources: { vcpus: 2, memoryMiB: 4096 } }).picks[0]?.explanation.top ?? [];
    // a: requested 2/8 and 4096/16384 -> 75; b: 6/8 -> 25; c: 8/8 -> 0.
    expect(top.map((h) => [h.hostId, h.total])).toEqual([
      ['a', 150],
      ['b', 50],
      ['c', 0],
    ]);
    expect(top[0]?.scores[0]).toMatchObject({
      weigher: 'LeastAllocated',
      raw: 75,
      normalized: 75,
      weight: 2,
      weighted: 150,
    });
  });

  it('Kubernetes: raw weighers are rescaled to 0..100 by (w - min) / (max - min)', () => {
    const s = new Scheduler({ seed: 1, weighers: [freeRamWeigher()], explainTop: 3 });
    const top = s.select(three, { resources: { vcpus: 1 } }).picks[0]?.explanation.top ?? [];
    // Free RAM 16384, 8192, 4096: b sits a third of the way up the range.
    expect(top.map((h) => h.hostId)).toEqual(['a', 'b', 'c']);
    expect(top.map((h) => h.total)).toEqual([100, expect.closeTo(100 / 3, 10), 0]);
  });

  it('Nova: (w - min) / (max - min) per weigher, times multiplier, summed', () => {
    const s = new Scheduler({
      seed: 1,
      normalization: 'nova',
      weighers: [
        { weigher: freeRamWeigher(), weight: 1 },
        { weigher: mostAllocatedWeigher(), weight: 0.5 },
      ],
      explainTop: 3,
    });
    const top = s.select(three, { resources: { vcpus: 1 } }).picks[0]?.explanation.top ?? [];
    // Free RAM: a 16384 -> 1, b 8192 -> 1/3, c 4096 -> 0. Most-allocated grows the other way: a 0, c 1, x0.5.
    const totals = Object.fromEntries(top.map((h) => [h.hostId, h.total]));
    expect(totals.a).toBeCloseTo(1, 10);
    expect(totals.c).toBeCloseTo(0.5, 10);
    expect(top[0]?.scores[0]?.normalized).toBe(1);
  });

  it('Nova: equal weights normalize to 0 for everyone', () => {
    const s = new Scheduler({ seed: 1, normalization: 'nova', explainTop: 2 });
    const top = s.select([host('a'), host('b')], { resources: { vcpus: 1 } }).picks[0]?.explanation.top ?? [];
    expect(top.map((h) => h.total)).toEqual([0, 0]);
  });

  it('a negative multiplier stacks instead of spreading', () => {
    const s = new Scheduler({
      seed: 1,
      normalization: 'nova',
      weighers: [{ weigher: freeRamWeigher(), weight: -1 }],
    });
    expect(s.select(three, { resources: { vcpus: 1 } }).picks[0]?.hostId).toBe('c');
  });
});
