import { isNubesError } from '@nubes/core';
import { type HostState, type Link, type NamespaceState, planTopology, topologySchema } from '@nubes/netns';
import { describe, expect, it } from 'vitest';

const empty: HostState = { namespaces: new Set(), state: new Map() };
const veth = {
  namespaces: ['o-a', 'o-b'],
  links: [{ kind: 'veth' as const, name: 'va', namespace: 'o-a', peer: { name: 'vb', namespace: 'o-b' } }],
  addresses: [
    { namespace: 'o-a', dev: 'va', cidr: '10.0.0.1/24' },
    { namespace: 'o-b', dev: 'vb', cidr: 'fd00::2/64' },
  ],
};

function link(partial: Partial<Link> & { name: string }): Link {
  return {
    index: 2,
    kind: 'veth',
    mtu: 1500,
    mac: '02:00:00:00:00:01',
    up: true,
    operState: 'UP',
    alias: 'nubes:o',
    ...partial,
  };
}

function stateWith(ns: string, s: Partial<NamespaceState>): [string, NamespaceState] {
  return [ns, { links: [], addresses: [], routes: [], neighbors: [], ...s }];
}

describe('planTopology', () => {
  it('creates namespaces and the veth from the root namespace in one batch, then configures each side', () => {
    const plan = planTopology(topologySchema.parse(veth), empty, 'o');
    expect(plan.createdNamespaces).toEqual(['o-a', 'o-b']);
    expect(plan.batches[0]).toEqual({
      tool: 'ip',
      lines: [
        ['netns', 'add', 'o-a'],
        ['netns', 'add', 'o-b'],
        ['link', 'add', 'name', 'va', 'netns', 'o-a', 'type', 'veth', 'peer', 'name', 'vb', 'netns', 'o-b'],
      ],
    });
    const a = plan.batches.find((b) => b.namespace === 'o-a');
    expect(a?.lines).toContainEqual(['link', 'set', 'dev', 'va', 'alias', 'nubes:o']);
    expect(a?.lines).toContainEqual(['address', 'add', '10.0.0.1/24', 'dev', 'va']);
    expect(a?.lines).toContainEqual(['link', 'set', 'dev', 'lo', 'up']);
    const b = plan.batches.find((x) => x.namespace === 'o-b');
    expect(b?.lines).toContainEqual(['address', 'add', 'fd00::2/64', 'dev', 'vb', 'nodad']);
    expect(plan.batches).toHaveLength(3);
    // Nothing outside the created namespaces to undo: deleting them removes everything.
    expect(plan.undo).toEqual([]);
  });

  it('plans nothing when everything exists with the same settings', () => {
    const current: HostState = {
      namespaces: new Set(['o-a', 'o-b']),
      state: new Map([
        stateWith('o-a', {
          links: [link({ name: 'lo', kind: 'loopback' }), link({ name: 'va' })],
          addresses: [
            {
              dev: 'va',
              family: 4,
              address: '10.0.0.1',
              prefixLength: 24,
              cidr: '10.0.0.1/24',
              scope: 'global',
            },
          ],
        }),
        stateWith('o-b', {
          links: [link({ name: 'vb' })],
          addresses: [
            {
              dev: 'vb',
              family: 6,
              address: 'fd00::2',
              prefixLength: 64,
              cidr: 'fd00::2/64',
              scope: 'global',
            },
          ],
        }),
      ]),
    };
    const plan = planTopology(topologySchema.parse(veth), current, 'o');
    expect(plan.batches).toEqual([]);
  });

  it('is a Conflict when a link exists with a different MTU, owner or kind', () => {
    const current = (l: Link): HostState => ({
      namespaces: new Set(['o-a']),
      state: new Map([stateWith('o-a', { links: [l] })]),
    });
    const spec = topologySchema.parse({
      links: [{ kind: 'bridge', name: 'br0', namespace: 'o-a', mtu: 9000 }],
    });
    for (const l of [
      link({ name: 'br0', kind: 'bridge', mtu: 1500, bridge: { stp: false } }),
      link({ name: 'br0', kind: 'veth', mtu: 9000 }),
      link({ name: 'br0', kind: 'bridge', mtu: 9000, alias: 'nubes:other', bridge: { stp: false } }),
      link({ name: 'br0', kind: 'bridge', mtu: 9000, bridge: { stp: true } }),
    ]) {
      try {
        planTopology(spec, current(l), 'o');
        expect.unreachable('no conflict');
      } catch (error) {
        expect(isNubesError(error, 'Conflict')).toBe(true);
      }
    }
  });

  it('undoes additions to existing namespaces in reverse, and renders routes and vxlan', () => {
    const current: HostState = {
      namespaces: new Set(['o-a']),
      state: new Map([stateWith('o-a', { links: [link({ name: 'lo', kind: 'loopback' })] })]),
    };
    const spec = topologySchema.parse({
      links: [
        { kind: 'vxlan', name: 'vx0', namespace: 'o-a', vni: 42, local: '10.0.0.1', remotes: ['10.0.0.2'] },
      ],
      routes: [
        { namespace: 'o-a', to: 'default', via: 'fd00::1' },
        { namespace: 'o-a', to: '10.8.0.0/16', dev: 'vx0', table: 100 },
      ],
    });
    const plan = planTopology(spec, current, 'o');
    const inside = plan.batches[0];
    expect(inside?.lines[0]).toEqual([
      'link',
      'add',
      'name',
      'vx0',
      'type',
      'vxlan',
      'id',
      '42',
      'dstport',
      '4789',
      'local',
      '10.0.0.1',
      'nolearning',
    ]);
    const lines = plan.batches.flatMap((b) => b.lines);
    expect(lines).toContainEqual(['route', 'add', '::/0', 'via', 'fd00::1']);
    expect(lines).toContainEqual(['route', 'add', '10.8.0.0/16', 'dev', 'vx0', 'table', '100']);
    expect(lines).toContainEqual(['fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', '10.0.0.2']);
    expect(plan.undo[0]?.lines.at(-1)).toEqual(['link', 'del', 'dev', 'vx0']);
  });

  it('refuses a link listed twice and a namespace that does not exist', () => {
    const twice = topologySchema.parse({
      namespaces: ['o-a'],
      links: [
        { kind: 'bridge', name: 'br0', namespace: 'o-a' },
        { kind: 'bridge', name: 'br0', namespace: 'o-a' },
      ],
    });
    expect(() => planTopology(twice, empty, 'o')).toThrow(/listed twice/);
    const missing = topologySchema.parse({ links: [{ kind: 'bridge', name: 'br0', namespace: 'o-x' }] });
    expect(() => planTopology(missing, empty, 'o')).toThrow(/does not exist/);
  });
});
