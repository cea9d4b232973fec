import { parseInput } from '@nubes/core';
import { z } from 'zod';
import type { HostSnapshot } from '../candidate.js';
import type { Host } from '../model.js';
import { Scheduler } from '../scheduler.js';
import { type PlannerOptions, plannerHosts, plannerSchema } from './options.js';
import { ClusterState, type Move, type Plan, round } from './state.js';

/** Options of {@link planConsolidation}. */
export interface ConsolidateOptions extends PlannerOptions {
  /** Keep at least this many hosts powered on; default 1. */
  minHostsOn?: number;
}

/** A consolidation plan, with the hosts it empties. */
export interface ConsolidationPlan extends Plan {
  kind: 'consolidate';
  /** Hosts the moves empty, which can then be powered off (DPM). */
  freedHosts: string[];
  /** Enabled hosts that were empty already. */
  alreadyFree: string[];
}

const schema = z.object({ ...plannerSchema, minHostsOn: z.number().int().min(1).default(1) }).strict();

/**
 * DPM-style consolidation: empties the least-loaded hosts into the others so the emptied ones can be
 * powered off. Hosts are tried least-loaded first; a host is emptied only if every one of its
 * instances finds a destination (largest first, each to the host it fits most tightly: best fit
 * decreasing) that passes the scheduler's filters and stays under `maxLoad` (default 0.8, headroom
 * for peaks). Hosts that receive instances are never emptied later, so no instance moves twice.
 * Defaults: at most 20 moves. Proposes only; nothing is executed.
 */
export function planConsolidation(
  hosts: HostSnapshot | readonly unknown[],
  options: ConsolidateOptions = {},
): ConsolidationPlan {
  const o = parseInput(schema, options, 'options');
  const scheduler = o.scheduler ?? new Scheduler();
  const maxMoves = o.maxMoves ?? 20;
  const maxLoad = o.maxLoad ?? 0.8;
  const state = new ClusterState(plannerHosts(hosts), o.weights);
  const before = state.summary();
  const n = state.hosts.length;
  const enabled = (i: number) => (state.hosts[i] as Host).state === 'enabled';
  const alreadyFree = new Set<number>();
  for (let i = 0; i < n; i++)
    if (enabled(i) && (state.hosts[i] as Host).instances.length === 0) alreadyFree.add(i);
  const freed = new Set<number>();
  const receivers = new Set<number>();
  const moves: Move[] = [];
  let stoppedBecause = 'no further host can be emptied';
  const order = [...Array(n).keys()]
    .filter((i) => enabled(i) && !alreadyFree.has(i))
    .sort((a, b) => (state.loads[a] as number) - (state.loads[b] as number));
  for (const e of order) {
    const on = n - alreadyFree.size - freed.size - [...Array(n).keys()].filter((i) => !enabled(i)).length;
    if (on <= o.minHostsOn) {
      stoppedBecause = `only ${on} host(s) would stay on (minHostsOn ${o.minHostsOn})`;
      break;
    }
    if (receivers.has(e)) continue;
    const source = state.hosts[e] as Host;
    if (moves.length + source.instances.length > maxMoves) {
      stoppedBecause = 'move cap reached';
      continue;
    }
    // Decreasing: the instance that weighs most on its host goes first, while destinations still have room.
    const weight = (id: string) => (state.loads[e] as number) - state.loadWithout(e, id);
    const instances = [...source.instances].sort((x, y) => weight(y.id) - weight(x.id));
    const applied: { id: string; from: number; to: number; reason: string }[] = [];
    let ok = true;
    for (const instance of instances) {
      let best = -1;
      let bestLoad = -1;
      for (let b = 0; b < n; b++) {
        if (b === e || freed.has(b) || alreadyFree.has(b) || !enabled(b)) continue;
        const lb = state.loadWith(b, instance.id);
        if (lb > maxLoad || lb <= bestLoad) continue;
        if (!state.admits(scheduler, instance, e, b).ok) continue;
        best = b;
        bestLoad = lb;
      }
      if (best < 0) {
        ok = false;
        break;
      }
      const to = state.hosts[best] as Host;
      applied.push({
        id: instance.id,
        from: e,
        to: best,
        reason: `empties ${source.name} (load ${round(state.loads[e] as number)}); ${to.name} is the tightest fit: load ${round(state.loads[best] as number)} -> ${round(bestLoad)}`,
      });
      state.move(instance.id, e, best);
    }
    if (!ok) {
      for (const m of applied.reverse()) state.move(m.id, m.to, m.from);
      continue;
    }
    freed.add(e);
    for (const m of applied) {
      receivers.add(m.to);
      moves.push({ instanceId: m.id, from: source.id, to: (state.hosts[m.to] as Host).id, reason: m.reason });
    }
  }
  return {
    kind: 'consolidate',
    moves,
    before,
    after: state.summary(),
    stoppedBecause,
    freedHosts: [...freed].map((i) => (state.hosts[i] as Host).id),
    alreadyFree: [...alreadyFree].map((i) => (state.hosts[i] as Host).id),
  };
}
