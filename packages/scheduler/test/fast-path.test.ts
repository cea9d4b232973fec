import { isNubesError } from '@nubes/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  balancedAllocationWeigher,
  type Decision,
  defaultFilters,
  defaultWeighers,
  type Filter,
  freeRamWeigher,
  type Host,
  type HostInput,
  HostSnapshot,
  leastAllocatedWeigher,
  metricsWeigher,
  mostAllocatedWeigher,
  parseHost,
  Scheduler,
  type SchedulerOptions,
  seededRandom,
  softAntiAffinityWeigher,
  type Weigher,
  type WeigherEntry,
} from '../src/index.js';

// The built-in filters and weighers run as column kernels; the same plugins wrapped in a plain object
// run one call per host, as user plugins do. Both must decide exactly the same, explanations included.

function plainFilter(f: Filter): Filter {
  const { appliesTo } = f;
  return {
    name: f.name,
    filter: (c, r, cycle) => f.filter(c, r, cycle),
    ...(appliesTo ? { appliesTo: (r: Parameters<typeof appliesTo>[0]) => appliesTo.call(f, r) } : {}),
  };
}

function plainWeigher(w: Weigher): Weigher {
  const { appliesTo } = w;
  return {
    name: w.name,
    ...(w.scale ? { scale: w.scale } : {}),
    weigh: (c, r, cycle) => w.weigh(c, r, cycle),
    ...(appliesTo ? { appliesTo: (r: Parameters<typeof appliesTo>[0]) => appliesTo.call(w, r) } : {}),
  };
}

type ArbValue<A> = A extends fc.Arbitrary<infer T> ? T : never;

type Outcome = { ok: true; decision: Decision } | { ok: false; error: unknown };

/** Equal values, and equal JSON too: the order of keys (reasons counts) must not change either. */
function expectSame(a: Outcome, b: Outcome): void {
  expect(a).toEqual(b);
  expect(JSON.stringify(a)).toBe(JSON.stringify(b));
}

function run(scheduler: Scheduler, hosts: HostSnapshot, request: unknown): Outcome {
  try {
    return { ok: true, decision: scheduler.select(hosts, request) };
  } catch (error) {
    if (isNubesError(error, 'NoValidHost')) return { ok: false, error: error.details };
    throw error;
  }
}

const resource = fc.constantFrom('vcpus', 'memoryMiB', 'diskGiB', 'gpus');
const hostArb = fc.record({
  vcpus: fc.integer({ min: 0, max: 64 }),
  memoryMiB: fc.integer({ min: 0, max: 64 }).map((x) => x * 1024),
  diskGiB: fc.constantFrom(0, 100, 500),
  gpus: fc.constantFrom(0, 0, 0, 2),
  used: fc.double({ min: 0, max: 1.2, noNaN: true }),
  ratio: fc.constantFrom(1, 1.5, 4),
  state: fc.constantFrom('enabled', 'enabled', 'enabled', 'disabled', 'down'),
  zone: fc.constantFrom('az1', 'az2', undefined),
  rack: fc.constantFrom('r1', 'r2', 'r3'),
  ssd: fc.boolean(),
  taint: fc.constantFrom(undefined, undefined, 'NoSchedule', 'PreferNoSchedule', 'NoExecute'),
  instances: fc.array(fc.constantFrom('g1', 'g2', undefined), { maxLength: 4 }),
  cpu: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
});

function toHost(h: ArbValue<typeof hostArb>, i: number): HostInput {
  const capacity: Record<string, number> = { vcpus: h.vcpus, memoryMiB: h.memoryMiB, diskGiB: h.diskGiB };
  if (h.gpus) capacity.gpus = h.gpus;
  return {
    id: `h${i}`,
    name: `h${i}`,
    capacity,
    reserved: { vcpus: Math.min(1, h.vcpus) },
    allocationRatios: { vcpus: h.ratio },
    allocated: {
      vcpus: Math.floor(h.vcpus * h.ratio * h.used),
      memoryMiB: Math.floor(h.memoryMiB * h.used),
    },
    labels: { rack: h.rack },
    traits: h.ssd ? ['SSD'] : [],
    ...(h.zone ? { availabilityZone: h.zone } : {}),
    state: h.state as 'enabled',
    taints: h.taint ? [{ key: 'dedicated', value: 'db', effect: h.taint as 'NoSchedule' }] : [],
    instances: h.instances.map((g, k) => ({
      id: `h${i}-i${k}`,
      resources: { vcpus: 1 },
      groups: g ? [g] : [],
    })),
    ...(h.cpu === undefined ? {} : { metrics: { cpuUtilization: h.cpu } }),
  };
}

const requestArb = fc.record({
  resources: fc.dictionary(
    resource,
    fc.integer({ min: 0, max: 8 }).map((x) => x * 512),
    { maxKeys: 4 },
  ),
  count: fc.integer({ min: 1, max: 3 }),
  zone: fc.constantFrom(undefined, 'az1'),
  hostName: fc.constantFrom(undefined, undefined, undefined, 'h1'),
  rack: fc.constantFrom(undefined, 'r1'),
  ssd: fc.constantFrom(undefined, 'required', 'forbidden'),
  tolerate: fc.boolean(),
  group: fc.constantFrom(undefined, 'affinity', 'anti-affinity', 'soft-affinity', 'soft-anti-affinity'),
});

function toRequest(r: ArbValue<typeof requestArb>): unknown {
  return {
    resources: r.resources,
    count: r.count,
    instanceIds: Array.from({ length: r.count }, (_, k) => `new-${k}`),
    hints: {
      ...(r.zone ? { availabilityZone: r.zone } : {}),
      ...(r.hostName ? { hostName: r.hostName } : {}),
      ...(r.rack ? { labelSelector: { matchLabels: { rack: r.rack } } } : {}),
      ...(r.ssd === 'required' ? { requiredTraits: ['SSD'] } : {}),
      ...(r.ssd === 'forbidden' ? { forbiddenTraits: ['SSD'] } : {}),
      ...(r.tolerate ? { tolerations: [{ key: 'dedicated', value: 'db' }] } : {}),
      ...(r.group ? { serverGroup: { id: 'g1', policy: r.group } } : {}),
    },
  };
}

const optionsArb = fc.record({
  normalization: fc.constantFrom('kubernetes' as const, 'nova' as const),
  weighers: fc.constantFrom('default', 'pack', 'mixed', 'negative'),
  sampling: fc.constantFrom(false, true, { percentage: 30 }),
  hostSubsetSize: fc.integer({ min: 1, max: 3 }),
  alternates: fc.integer({ min: 0, max: 4 }),
  explainTop: fc.integer({ min: 0, max: 5 }),
  maxInstances: fc.integer({ min: 1, max: 5 }),
  maxExplainedHosts: fc.constantFrom(1000, 2),
  seed: fc.integer({ min: 0, max: 1000 }),
});

function weighersOf(kind: string, normalization: 'kubernetes' | 'nova'): WeigherEntry[] {
  switch (kind) {
    case 'pack':
      return [{ weigher: mostAllocatedWeigher({ vcpus: 2, memoryMiB: 1, gpus: 1 }) }];
    case 'mixed':
      return [
        { weigher: balancedAllocationWeigher(['vcpus', 'memoryMiB', 'diskGiB']), weight: 2 },
        { weigher: freeRamWeigher(), weight: 0.5 },
        { weigher: leastAllocatedWeigher({ vcpus: 1 }), weight: 1 },
        { weigher: metricsWeigher(), weight: 1 },
        { weigher: softAntiAffinityWeigher(), weight: 3 },
      ];
    case 'negative':
      return [
        { weigher: leastAllocatedWeigher(), weight: -1 },
        { weigher: balancedAllocationWeigher(), weight: 1 },
        { weigher: mostAllocatedWeigher(), weight: 0 },
      ];
    default:
      return defaultWeighers(normalization);
  }
}

function schedulers(o: ArbValue<typeof optionsArb>): [Scheduler, Scheduler] {
  const make = (plain: boolean): Scheduler => {
    const filters = defaultFilters({ maxInstances: { max: o.maxInstances } });
    const weighers = weighersOf(o.weighers, o.normalization);
    const options: SchedulerOptions = {
      seed: o.seed,
      normalization: o.normalization,
      sampling: o.sampling,
      hostSubsetSize: o.hostSubsetSize,
      alternates: o.alternates,
      explainTop: o.explainTop,
      maxExplainedHosts: o.maxExplainedHosts,
      filters: plain ? filters.map(plainFilter) : filters,
      weighers: weighers.map((w) => (plain ? { ...w, weigher: plainWeigher(w.weigher) } : w)),
    };
    return new Scheduler(options);
  };
  return [make(false), make(true)];
}

describe('column kernels', () => {
  it('decide exactly as the plain plugins do: same hosts, scores, explanations and failures (property)', () => {
    fc.assert(
      fc.property(
        fc.array(hostArb, { minLength: 0, maxLength: 40 }),
        fc.array(requestArb, { minLength: 1, maxLength: 4 }),
        optionsArb,
        (spec, requests, options) => {
          const snapshot = HostSnapshot.of(spec.map(toHost));
          const [fast, plain] = schedulers(options);
          // Several requests in a row: sampling's round robin and the seeded tie-breaks must stay in step.
          for (const r of requests) {
            const request = toRequest(r);
            expectSame(run(fast, snapshot, request), run(plain, snapshot, request));
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it('agree with many hosts, where the weighers skip hosts that cannot reach the top (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 200, max: 1500 }),
        fc.integer(),
        optionsArb,
        fc.constantFrom('default', 'pack', 'negative'),
        fc.record({ vcpus: fc.integer({ min: 0, max: 8 }), memoryMiB: fc.integer({ min: 0, max: 8192 }) }),
        (n, seed, options, weighers, resources) => {
          // Mostly feasible hosts with spread-out scores: the case pruning is for.
          const random = seededRandom(seed);
          const snapshot = HostSnapshot.of(
            Array.from({ length: n }, (_, i) =>
              toHost(
                {
                  vcpus: 8 + Math.floor(random() * 120),
                  memoryMiB: 1024 * (16 + Math.floor(random() * 1000)),
                  diskGiB: 500,
                  gpus: 0,
                  used: random() * 0.95,
                  ratio: random() < 0.5 ? 1 : 4,
                  state: random() < 0.05 ? 'down' : 'enabled',
                  zone: 'az1',
                  rack: 'r1',
                  ssd: false,
                  taint: undefined,
                  instances: [],
                  cpu: undefined,
                },
                i,
              ),
            ),
          );
          const [fast, plain] = schedulers({ ...options, normalization: 'kubernetes', weighers });
          for (let i = 0; i < 3; i++) {
            const request = { resources, instanceIds: [`new-${i}`] };
            expectSame(run(fast, snapshot, request), run(plain, snapshot, request));
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it('agree on hosts a store may hold but validation never yields (negative allocations, ties)', () => {
    const base = parseHost({ id: 'x', name: 'x', capacity: { vcpus: 8, memoryMiB: 8192 } });
    const hosts: Host[] = Array.from({ length: 300 }, (_, i) => ({
      ...base,
      id: `h${i}`,
      name: `h${i}`,
      // Released beyond what was allocated: least-allocated can exceed 100 here.
      allocated: (i % 7 === 0 ? { vcpus: -4 } : i % 2 ? { vcpus: 2 } : {}) as Host['allocated'],
    }));
    const snapshot = HostSnapshot.fromHosts(hosts);
    for (const normalization of ['kubernetes', 'nova'] as const) {
      const [fast, plain] = schedulers({
        normalization,
        weighers: 'default',
        sampling: false,
        hostSubsetSize: 1,
        alternates: 3,
        explainTop: 3,
        maxInstances: 50,
        maxExplainedHosts: 1000,
        seed: 5,
      });
      for (let i = 0; i < 5; i++) {
        const request = { resources: { vcpus: 1, memoryMiB: 512 }, instanceIds: [`i${i}`] };
        expectSame(run(fast, snapshot, request), run(plain, snapshot, request));
      }
    }
  });
});
