import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type HostInput, parseHost, planBalance, planConsolidation, Scheduler } from '../src/index.js';
import { host } from './hosts.js';

const vm = (id: string, vcpus: number, groups: string[] = [], hints?: object) => ({
  id,
  resources: { vcpus, memoryMiB: vcpus * 1024 },
  groups,
  ...(hints ? { hints } : {}),
});

function withVms(id: string, vms: ReturnType<typeof vm>[], extra: Partial<HostInput> = {}): HostInput {
  const vcpus = vms.reduce((s, v) => s + v.resources.vcpus, 0);
  return host(id, {
    capacity: { vcpus: 16, memoryMiB: 16_384 },
    allocated: { vcpus, memoryMiB: vcpus * 1024 },
    instances: vms,
    ...extra,
  });
}

/** Applies a plan's moves to the hosts and returns the new allocated vCPUs per host. */
function apply(
  hosts: HostInput[],
  moves: { instanceId: string; from: string; to: string }[],
): Map<string, number> {
  const where = new Map<string, string>();
  const size = new Map<string, number>();
  for (const h of hosts)
    for (const i of h.instances ?? []) {
      where.set(i.id, h.id);
      size.set(i.id, i.resources?.vcpus ?? 0);
    }
  for (const m of moves) {
    expect(where.get(m.instanceId)).toBe(m.from);
    where.set(m.instanceId, m.to);
  }
  const used = new Map(hosts.map((h) => [h.id, 0]));
  for (const [id, h] of where) used.set(h, (used.get(h) ?? 0) + (size.get(id) ?? 0));
  return used;
}

describe('planBalance', () => {
  it('moves load from the hot host to the cold ones until the deviation is under target', () => {
    const hosts = [
      withVms('hot', [vm('a', 4), vm('b', 4), vm('c', 2), vm('d', 2)]),
      withVms('warm', [vm('e', 4)]),
      withVms('cold', []),
    ];
    const plan = planBalance(hosts, { targetStdDev: 0.1 });
    expect(plan.before.perHost).toEqual({ hot: 0.75, warm: 0.25, cold: 0 });
    expect(plan.before.stdDev).toBeGreaterThan(0.3);
    expect(plan.after.stdDev).toBeLessThanOrEqual(0.1);
    expect(plan.moves.length).toBeLessThanOrEqual(2);
    expect(plan.moves[0]).toMatchObject({ from: 'hot', to: 'cold' });
    expect(plan.moves[0]?.reason).toMatch(/standard deviation 0\.3\d+ -> /);
    expect(plan.stoppedBecause).toMatch(/at or below the target/);
  });

  it('uses live metrics, shared out by vCPUs, and respects the move cap', () => {
    const hosts = [
      withVms('busy', [vm('a', 2), vm('b', 2)], { metrics: { cpuUtilization: 0.9, memoryUtilization: 0.2 } }),
      withVms('idle', [vm('c', 2), vm('d', 2)], { metrics: { cpuUtilization: 0.1, memoryUtilization: 0.2 } }),
    ];
    const plan = planBalance(hosts, { targetStdDev: 0, maxMoves: 1 });
    expect(plan.before.perHost).toEqual({ busy: 0.55, idle: 0.15 });
    expect(plan.moves).toHaveLength(1);
    expect(plan.moves[0]?.from).toBe('busy');
    expect(plan.stoppedBecause).toBe('move cap reached');
  });

  it('respects anti-affinity at the destination', () => {
    const anti = { serverGroup: { id: 'g', policy: 'anti-affinity' } };
    const hosts = [
      withVms('a', [vm('a1', 4, ['g'], anti), vm('a2', 4)]),
      withVms('b', [vm('b1', 1, ['g'], anti)]),
    ];
    const plan = planBalance(hosts, { targetStdDev: 0 });
    expect(plan.moves.map((m) => m.instanceId)).not.toContain('a1');
    expect(plan.moves[0]?.instanceId).toBe('a2');
  });

  it('never proposes a destination over capacity (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 5 }), { minLength: 2, maxLength: 6 }),
        (layout) => {
          const hosts = layout.map((sizes, h) =>
            withVms(
              `h${h}`,
              sizes.map((s, i) => vm(`h${h}-${i}`, s)),
              {
                capacity: {
                  vcpus: Math.max(
                    12,
                    sizes.reduce((a, b) => a + b, 0),
                  ),
                  memoryMiB: 65_536,
                },
              },
            ),
          );
          const plan = planBalance(hosts, { targetStdDev: 0, maxMoves: 8 });
          const used = apply(hosts, plan.moves);
          for (const h of hosts) expect(used.get(h.id)).toBeLessThanOrEqual(h.capacity.vcpus ?? 0);
          expect(plan.after.stdDev).toBeLessThanOrEqual(plan.before.stdDev);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('validates its options', () => {
    expect(() => planBalance([host('a')], { targetStdDev: -1 })).toThrow(/options.targetStdDev/);
    expect(() => planBalance([host('a', { capacity: { vcpus: -1 } })])).toThrow(/hosts.0.capacity.vcpus/);
  });
});

describe('planConsolidation', () => {
  it('empties the least-loaded hosts best-fit decreasing and says which come free', () => {
    const hosts = [
      withVms('big', [vm('a', 6)]),
      withVms('mid', [vm('b', 4)]),
      withVms('small1', [vm('c', 1), vm('d', 1)]),
      withVms('small2', [vm('e', 2)]),
      withVms('empty', []),
      withVms('off', [], { state: 'disabled' }),
    ];
    const plan = planConsolidation(hosts, { maxLoad: 0.9 });
    expect(plan.alreadyFree).toEqual(['empty']);
    expect(plan.freedHosts).toEqual(['small1', 'small2', 'mid']);
    // Best fit: everything lands on 'big', the fullest host that still fits under 90%.
    expect(new Set(plan.moves.map((m) => m.to))).toEqual(new Set(['big']));
    expect(plan.after.perHost.big).toBeLessThanOrEqual(0.9);
    expect(planConsolidation(hosts, { maxLoad: 0.8 }).freedHosts).toEqual(['small1', 'small2']);
    expect(plan.moves[0]?.reason).toMatch(/empties small1/);
    const used = apply(hosts, plan.moves);
    expect(used.get('big')).toBe(14);
  });

  it('skips a host whose instances cannot all move, and keeps anti-affinity', () => {
    const anti = { serverGroup: { id: 'g', policy: 'anti-affinity' } };
    const hosts = [withVms('a', [vm('a1', 2, ['g'], anti)]), withVms('b', [vm('b1', 2, ['g'], anti)])];
    const plan = planConsolidation(hosts);
    expect(plan.moves).toEqual([]);
    expect(plan.freedHosts).toEqual([]);
    expect(plan.after).toEqual(plan.before);
  });

  it('keeps minHostsOn hosts and honours the move cap', () => {
    const hosts = [withVms('a', [vm('a1', 1)]), withVms('b', [vm('b1', 1)]), withVms('c', [vm('c1', 1)])];
    expect(planConsolidation(hosts, { minHostsOn: 2 }).freedHosts).toHaveLength(1);
    expect(planConsolidation(hosts, { maxMoves: 0 }).moves).toHaveLength(0);
    expect(planConsolidation(hosts).freedHosts).toHaveLength(2);
  });

  it('checks destinations with the given scheduler', () => {
    const hosts = [withVms('a', [vm('a1', 1)]), withVms('b', [vm('b1', 1)], { state: 'down' })];
    expect(parseHost(hosts[1]).state).toBe('down');
    expect(planConsolidation(hosts, { scheduler: new Scheduler() }).moves).toEqual([]);
  });
});
