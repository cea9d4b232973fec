import { describe, expect, it } from 'vitest';
import {
  availabilityZoneFilter,
  candidateOf,
  cycleOf,
  defaultFilters,
  differentHostFilter,
  type Filter,
  type HostInput,
  hostNameFilter,
  hostStateFilter,
  jsonQueryFilter,
  labelSelectorFilter,
  maxInstancesFilter,
  type PlacementRequestInput,
  parseHost,
  parseRequest,
  resourceFitFilter,
  sameHostFilter,
  serverGroupFilter,
  taintsFilter,
  traitsFilter,
  type Verdict,
} from '../src/index.js';
import { host } from './hosts.js';

function run(
  filter: Filter,
  h: HostInput,
  request: PlacementRequestInput,
  others: HostInput[] = [],
): Verdict {
  const req = parseRequest(request);
  const candidates = [h, ...others].map((x) => candidateOf(parseHost(x)));
  if (filter.appliesTo && !filter.appliesTo(req)) return true;
  return filter.filter(candidates[0] as ReturnType<typeof candidateOf>, req, cycleOf(candidates));
}

const none = { resources: {} };

describe('resource fit', () => {
  it('applies reserved and allocation ratios: usable = (total - reserved) x ratio', () => {
    const h = host('a', {
      capacity: { vcpus: 8, memoryMiB: 16_384 },
      reserved: { vcpus: 2, memoryMiB: 2048 },
      allocationRatios: { vcpus: 4 },
      allocated: { vcpus: 20, memoryMiB: 10_000 },
    });
    expect(run(resourceFitFilter(), h, { resources: { vcpus: 4, memoryMiB: 4336 } })).toBe(true);
    expect(run(resourceFitFilter(), h, { resources: { vcpus: 5, memoryMiB: 4337 } })).toEqual({
      reasons: ['insufficient vcpus', 'insufficient memoryMiB'],
      detail: 'vcpus: needs 5, 4 free of 24 usable; memoryMiB: needs 4337, 4336 free of 14336 usable',
    });
  });
  it('treats a resource class the host lacks as having no room', () => {
    expect(run(resourceFitFilter(), host('a'), { resources: { gpus: 1 } })).toMatchObject({
      reasons: ['insufficient gpus'],
    });
    expect(run(resourceFitFilter(), host('a'), { resources: { gpus: 0 } })).toBe(true);
  });
});

describe('host filters', () => {
  it('host state', () => {
    expect(run(hostStateFilter(), host('a'), none)).toBe(true);
    expect(run(hostStateFilter(), host('a', { state: 'disabled' }), none)).toMatchObject({
      reasons: ['host is disabled'],
    });
    expect(run(hostStateFilter(), host('a', { state: 'down' }), none)).toMatchObject({
      reasons: ['host is down'],
    });
  });
  it('host name and availability zone', () => {
    expect(run(hostNameFilter(), host('a'), { resources: {}, hints: { hostName: 'a' } })).toBe(true);
    expect(run(hostNameFilter(), host('b'), { resources: {}, hints: { hostName: 'a' } })).not.toBe(true);
    expect(
      run(availabilityZoneFilter(), host('a', { availabilityZone: 'az1' }), {
        resources: {},
        hints: { availabilityZone: 'az1' },
      }),
    ).toBe(true);
    expect(
      run(availabilityZoneFilter(), host('a'), { resources: {}, hints: { availabilityZone: 'az1' } }),
    ).toMatchObject({
      detail: 'in no zone',
    });
  });
  it('traits', () => {
    const h = host('a', { traits: ['HW_CPU_X86_AVX2', 'STORAGE_DISK_SSD'] });
    expect(run(traitsFilter(), h, { resources: {}, hints: { requiredTraits: ['STORAGE_DISK_SSD'] } })).toBe(
      true,
    );
    expect(
      run(traitsFilter(), h, {
        resources: {},
        hints: { requiredTraits: ['HW_GPU'], forbiddenTraits: ['HW_CPU_X86_AVX2'] },
      }),
    ).toEqual({
      reasons: ['missing required trait HW_GPU', 'has forbidden trait HW_CPU_X86_AVX2'],
    });
  });
  it('max instances per host', () => {
    const h = host('a', { instances: [{ id: 'i1' }, { id: 'i2' }] });
    expect(run(maxInstancesFilter({ max: 3 }), h, none)).toBe(true);
    expect(run(maxInstancesFilter({ max: 2 }), h, none)).not.toBe(true);
    expect(() => maxInstancesFilter({ max: 0 })).toThrow(/max/);
  });
});

describe('label selector', () => {
  const h = host('a', { labels: { rack: 'r1', tier: 'gold', ssd: '' } });
  const sel = (labelSelector: object) =>
    run(labelSelectorFilter(), h, { resources: {}, hints: { labelSelector } as never });
  it('matchLabels and each operator', () => {
    expect(sel({ matchLabels: { rack: 'r1' } })).toBe(true);
    expect(sel({ matchLabels: { rack: 'r2' } })).toEqual({ reasons: ['did not match label selector'] });
    expect(sel({ matchExpressions: [{ key: 'tier', operator: 'In', values: ['gold', 'silver'] }] })).toBe(
      true,
    );
    expect(sel({ matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['gold'] }] })).not.toBe(true);
    expect(sel({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['x'] }] })).toBe(true);
    expect(sel({ matchExpressions: [{ key: 'ssd', operator: 'Exists' }] })).toBe(true);
    expect(sel({ matchExpressions: [{ key: 'gpu', operator: 'DoesNotExist' }] })).toBe(true);
    expect(sel({ matchExpressions: [{ key: 'gpu', operator: 'Exists' }] })).not.toBe(true);
  });
  it('rejects a bad operator and values that do not fit the operator, naming the field', () => {
    expect(() => sel({ matchExpressions: [{ key: 'a', operator: 'Near', values: ['x'] }] })).toThrow(
      /request\.hints\.labelSelector\.matchExpressions\.0\.operator/,
    );
    expect(() => sel({ matchExpressions: [{ key: 'a', operator: 'In' }] })).toThrow(
      /matchExpressions\.0\.values/,
    );
    expect(() => sel({ matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] })).toThrow(
      /values/,
    );
  });
});

describe('taints and tolerations', () => {
  const h = host('a', {
    taints: [
      { key: 'dedicated', value: 'gpu', effect: 'NoSchedule' },
      { key: 'soft', effect: 'PreferNoSchedule' },
    ],
  });
  const tol = (tolerations: object[]) =>
    run(taintsFilter(), h, { resources: {}, hints: { tolerations } as never });
  it('rejects untolerated NoSchedule taints and ignores PreferNoSchedule', () => {
    expect(tol([])).toEqual({ reasons: ['had untolerated taint dedicated=gpu:NoSchedule'] });
    expect(tol([{ key: 'dedicated', value: 'gpu' }])).toBe(true);
    expect(tol([{ key: 'dedicated', value: 'cpu' }])).not.toBe(true);
    expect(tol([{ key: 'dedicated', operator: 'Exists', effect: 'NoSchedule' }])).toBe(true);
    expect(tol([{ key: 'dedicated', operator: 'Exists', effect: 'NoExecute' }])).not.toBe(true);
    expect(tol([{ operator: 'Exists' }])).toBe(true);
  });
});

describe('server groups and same/different host', () => {
  const member = host('a', { instances: [{ id: 'i1', groups: ['g'] }] });
  const empty = host('b');
  const aff = { resources: {}, hints: { serverGroup: { id: 'g', policy: 'affinity' as const } } };
  const anti = { resources: {}, hints: { serverGroup: { id: 'g', policy: 'anti-affinity' as const } } };
  it('affinity keeps only hosts with members, any host while the group is empty', () => {
    expect(run(serverGroupFilter(), member, aff, [empty])).toBe(true);
    expect(run(serverGroupFilter(), empty, aff, [member])).toEqual({
      reasons: ['violates server group affinity'],
    });
    expect(
      run(
        serverGroupFilter(),
        empty,
        { resources: {}, hints: { serverGroup: { id: 'new', policy: 'affinity' } } },
        [member],
      ),
    ).toBe(true);
  });
  it('anti-affinity removes hosts with maxPerHost members', () => {
    expect(run(serverGroupFilter(), empty, anti, [member])).toBe(true);
    expect(run(serverGroupFilter(), member, anti)).toMatchObject({
      reasons: ['violates server group anti-affinity'],
    });
    expect(
      run(serverGroupFilter(), member, {
        resources: {},
        hints: { serverGroup: { id: 'g', policy: 'anti-affinity', maxPerHost: 2 } },
      }),
    ).toBe(true);
  });
  it('soft policies do not filter', () => {
    expect(
      run(
        serverGroupFilter(),
        empty,
        { resources: {}, hints: { serverGroup: { id: 'g', policy: 'soft-affinity' } } },
        [member],
      ),
    ).toBe(true);
  });
  it('same_host and different_host', () => {
    expect(run(sameHostFilter(), member, { resources: {}, hints: { sameHost: ['i1', 'zz'] } })).toBe(true);
    expect(run(sameHostFilter(), empty, { resources: {}, hints: { sameHost: ['i1'] } })).not.toBe(true);
    expect(run(differentHostFilter(), member, { resources: {}, hints: { differentHost: ['i1'] } })).toEqual({
      reasons: ['runs an instance of different_host'],
      detail: 'runs i1',
    });
    expect(run(differentHostFilter(), empty, { resources: {}, hints: { differentHost: ['i1'] } })).toBe(true);
  });
});

describe('JSON query filter', () => {
  const h = host('a', {
    labels: { rack: 'r1' },
    traits: ['SSD'],
    allocated: { memoryMiB: 4096 },
    metrics: { cpuUtilization: 0.3 },
  });
  const q = (query: unknown) => run(jsonQueryFilter(), h, { resources: {}, hints: { query } });
  it('resolves host state and Nova variable names', () => {
    expect(q(['>=', '$free_ram_mb', 12_288])).toBe(true);
    expect(q(['>=', '$free.memoryMiB', 12_289])).toEqual({ reasons: ['did not match JSON query'] });
    expect(
      q(JSON.stringify(['and', ['=', '$labels.rack', 'r1'], ['<', '$metrics.cpuUtilization', 0.5]])),
    ).toBe(true);
    expect(q(['in', 'SSD', '$traits'])).toBe(true);
    expect(q(['=', '$host', 'a'])).toBe(true);
  });
});

describe('defaultFilters', () => {
  it('holds every built-in filter once', () => {
    const names = defaultFilters().map((f) => f.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toHaveLength(12);
  });
});
