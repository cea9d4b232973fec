import { parseInput } from '@nubes/core';
import { z } from 'zod';
import type { HostSnapshot } from '../candidate.js';
import type { Host, Instance } from '../model.js';
import { Scheduler } from '../scheduler.js';
import { type PlannerOptions, plannerHosts, plannerSchema } from './options.js';
import { ClusterState, type Move, type Plan, round, stdDevWith } from './state.js';

/** Options of {@link planBalance}. */
export interface BalanceOptions extends PlannerOptions {
  /** Stop once the standard deviation of host load is at or below this; default 0.05. */
  targetStdDev?: number;
}

const schema = z.object({ ...plannerSchema, targetStdDev: z.number().min(0).max(10).default(0.05) }).strict();

/**
 * DRS-style balancing: proposes live migrations that bring the standard deviation of host load down
 * to `targetStdDev`. Greedy, one move at a time, each the valid move that lowers the deviation the
 * most, so the target is reached in few moves; every destination passes the scheduler's filters
 * (capacity, affinity and anti-affinity included) and stays under `maxLoad` (default 1).
 * Defaults: at most 10 moves. Proposes only; nothing is executed.
 */
export function planBalance(hosts: HostSnapshot | readonly unknown[], options: BalanceOptions = {}): Plan {
  const o = parseInput(schema, options, 'options');
  const scheduler = o.scheduler ?? new Scheduler();
  const maxMoves = o.maxMoves ?? 10;
  const maxLoad = o.maxLoad ?? 1;
  const state = new ClusterState(plannerHosts(hosts), o.weights);
  const before = state.summary();
  const moves: Move[] = [];
  let stoppedBecause = 'move cap reached';
  const n = state.hosts.length;
  while (true) {
    const loads = state.loads;
    const sum = loads.reduce((s, l) => s + l, 0);
    const sumSq = loads.reduce((s, l) => s + l * l, 0);
    const std = n ? Math.sqrt(Math.max(0, sumSq / n - (sum / n) ** 2)) : 0;
    if (std <= o.targetStdDev) {
      stoppedBecause = `standard deviation ${round(std)} is at or below the target ${o.targetStdDev}`;
      break;
    }
    if (moves.length >= maxMoves) break;
    const options: { instance: Instance; from: number; to: number; std: number; la: number; lb: number }[] =
      [];
    for (let a = 0; a < n; a++) {
      for (const instance of (state.hosts[a] as Host).instances) {
        const la = state.loadWithout(a, instance.id);
        for (let b = 0; b < n; b++) {
          if (b === a) continue;
          const lb = state.loadWith(b, instance.id);
          if (lb > maxLoad) continue;
          const after = stdDevWith(loads, sum, sumSq, a, la, b, lb);
          if (after < std - 1e-9) options.push({ instance, from: a, to: b, std: after, la, lb });
        }
      }
    }
    options.sort((x, y) => x.std - y.std);
    const chosen = options.find((m) => state.admits(scheduler, m.instance, m.from, m.to).ok);
    if (!chosen) {
      stoppedBecause = options.length
        ? 'no improving move passes the filters'
        : 'no move lowers the deviation';
      break;
    }
    const from = state.hosts[chosen.from] as Host;
    const to = state.hosts[chosen.to] as Host;
    moves.push({
      instanceId: chosen.instance.id,
      from: from.id,
      to: to.id,
      reason:
        `${from.name} load ${round(loads[chosen.from] as number)} -> ${round(chosen.la)}, ` +
        `${to.name} load ${round(loads[chosen.to] as number)} -> ${round(chosen.lb)}: ` +
        `standard deviation ${round(std)} -> ${round(chosen.std)}, the largest drop of any valid move`,
    });
    state.move(chosen.instance.id, chosen.from, chosen.to);
  }
  return { kind: 'balance', moves, before, after: state.summary(), stoppedBecause };
}
