import { isNubesError } from '@nubes/core';
import { describe, expect, it } from 'vitest';
import { HostSnapshot, parseHost, parseRequest, Scheduler } from '../src/index.js';
import { host } from './hosts.js';

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (isNubesError(error, 'InvalidInput')) return error.details.field as string;
    throw error;
  }
  throw new Error('expected InvalidInput');
}

describe('bad input is InvalidInput naming the field', () => {
  it('hosts', () => {
    expect(fieldOf(() => parseHost(host('a', { capacity: { vcpus: -1 } })))).toBe('host.capacity.vcpus');
    expect(fieldOf(() => parseHost(host('a', { reserved: { vcpus: 9 } })))).toBe('host.reserved.vcpus');
    expect(fieldOf(() => parseHost(host('a', { allocationRatios: { vcpus: 0 } })))).toBe(
      'host.allocationRatios.vcpus',
    );
    expect(fieldOf(() => parseHost(host('a', { state: 'broken' as never })))).toBe('host.state');
    expect(
      fieldOf(() => parseHost(host('a', { taints: [{ key: 'k', effect: 'Sometimes' as never }] }))),
    ).toBe('host.taints.0.effect');
    expect(fieldOf(() => parseHost(host('a', { instances: [{ id: 'i' }, { id: 'i' }] })))).toBe(
      'host.instances.1.id',
    );
    expect(fieldOf(() => parseHost({ ...host('a'), colour: 'red' }))).toBe('host');
    expect(fieldOf(() => HostSnapshot.of([host('a'), host('b', { capacity: { vcpus: Number.NaN } })]))).toBe(
      'hosts.1.capacity.vcpus',
    );
    expect(fieldOf(() => HostSnapshot.of([host('a'), host('a')]))).toBe('hosts.1.id');
  });

  it('requests', () => {
    expect(fieldOf(() => parseRequest({ resources: { memoryMiB: -512 } }))).toBe(
      'request.resources.memoryMiB',
    );
    expect(fieldOf(() => parseRequest({ resources: {}, count: 0 }))).toBe('request.count');
    expect(fieldOf(() => parseRequest({ resources: {}, count: 2, instanceIds: ['a'] }))).toBe(
      'request.instanceIds',
    );
    expect(
      fieldOf(() => parseRequest({ resources: {}, hints: { serverGroup: { id: 'g', policy: 'near' } } })),
    ).toBe('request.hints.serverGroup.policy');
    expect(fieldOf(() => parseRequest({ resources: {}, hints: { query: ['=', '$a', ['xor', 1]] } }))).toBe(
      'request.hints.query.2.0',
    );
    expect(
      fieldOf(() =>
        parseRequest({
          resources: {},
          hints: { tolerations: [{ key: 'k', operator: 'Exists', value: 'v' }] },
        }),
      ),
    ).toBe('request.hints.tolerations.0.value');
    expect(fieldOf(() => parseRequest({ resources: {}, hints: { nearby: true } }))).toBe('request.hints');
  });

  it('select changes nothing and throws before deciding', () => {
    const s = new Scheduler({ seed: 1 });
    const cluster = [host('a')];
    const before = JSON.stringify(cluster);
    expect(() => s.select(cluster, { resources: { vcpus: -1 } })).toThrow(/request.resources.vcpus/);
    expect(JSON.stringify(cluster)).toBe(before);
  });

  it('fills in defaults', () => {
    expect(parseHost({ id: 'a', name: 'a', capacity: { vcpus: 1 } })).toEqual({
      id: 'a',
      name: 'a',
      capacity: { vcpus: 1 },
      reserved: {},
      allocationRatios: {},
      allocated: {},
      labels: {},
      traits: [],
      aggregates: [],
      state: 'enabled',
      taints: [],
      instances: [],
    });
    expect(parseRequest({ resources: { vcpus: 1 } })).toEqual({
      resources: { vcpus: 1 },
      count: 1,
      hints: {},
    });
  });
});
