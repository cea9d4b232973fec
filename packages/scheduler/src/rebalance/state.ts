import { type Candidate, candidateOf, withInstance, withoutInstance } from '../candidate.js';
import type { Host, Instance, PlacementRequest } from '../model.js';
import type { Cycle } from '../plugin.js';
import { cycleOf, type Scheduler } from '../scheduler.js';

/** How much CPU and memory load counts in a host's single load figure; default 1 and 1. */
export interface LoadWeights {
  cpu?: number;
  memory?: number;
}

/** Host load across the cluster, before or after a plan. */
export interface LoadSummary {
  /** Load per host id, 0..1 (above 1 on an overloaded host). */
  perHost: Record<string, number>;
  mean: number;
  /** Population standard deviation of the per-host loads. */
  stdDev: number;
  max: number;
}

/** One proposed live migration. Plans only propose; executing (and then `Inventory.move`) is the caller's part. */
export interface Move {
  instanceId: string;
  from: string;
  to: string;
  /** Why this move, in numbers. */
  reason: string;
}

/** What a planner proposes. */
export interface Plan {
  kind: 'balance' | 'consolidate';
  moves: Move[];
  before: LoadSummary;
  after: LoadSummary;
  /** Why planning stopped (target reached, move cap, no valid move...). */
  stoppedBecause: string;
}

interface Vec {
  cpu: number;
  memory: number;
}

/**
 * The planners' model of a cluster: an instance's demand is an absolute amount that moves with it
 * (measured utilization shared out by its vCPUs / memory when the host reports metrics, its
 * allocation otherwise), and a host's load is that demand over its physical capacity.
 */
export class ClusterState {
  readonly hosts: Host[];
  readonly loads: number[];
  private readonly physical: Vec[];
  private readonly sums: Vec[];
  private readonly demand = new Map<string, Vec>();
  private readonly wc: number;
  private readonly wm: number;

  constructor(hosts: readonly Host[], weights: LoadWeights = {}) {
    this.wc = weights.cpu ?? 1;
    this.wm = weights.memory ?? 1;
    this.hosts = [...hosts];
    this.physical = hosts.map((h) => ({
      cpu: Math.max(0, (h.capacity.vcpus ?? 0) - (h.reserved.vcpus ?? 0)),
      memory: Math.max(0, (h.capacity.memoryMiB ?? 0) - (h.reserved.memoryMiB ?? 0)),
    }));
    this.sums = hosts.map((h, i) => {
      const phys = this.physical[i] as Vec;
      const sumCpu = h.instances.reduce((s, x) => s + (x.resources.vcpus ?? 0), 0);
      const sumMem = h.instances.reduce((s, x) => s + (x.resources.memoryMiB ?? 0), 0);
      const share = (x: Instance, key: 'vcpus' | 'memoryMiB', sum: number) =>
        sum > 0 ? (x.resources[key] ?? 0) / sum : 1 / h.instances.length;
      const measuredCpu = h.metrics?.cpuUtilization;
      const measuredMem = h.metrics?.memoryUtilization;
      for (const x of h.instances) {
        this.demand.set(x.id, {
          cpu:
            measuredCpu === undefined
              ? (x.resources.vcpus ?? 0)
              : measuredCpu * phys.cpu * share(x, 'vcpus', sumCpu),
          memory:
            measuredMem === undefined
              ? (x.resources.memoryMiB ?? 0)
              : measuredMem * phys.memory * share(x, 'memoryMiB', sumMem),
        });
      }
      // What instances do not explain stays put: daemons on a measured empty host, allocations outside instances.
      const has = h.instances.length > 0;
      const base = {
        cpu:
          measuredCpu === undefined
            ? Math.max(0, (h.allocated.vcpus ?? 0) - sumCpu)
            : has
              ? 0
              : measuredCpu * phys.cpu,
        memory:
          measuredMem === undefined
            ? Math.max(0, (h.allocated.memoryMiB ?? 0) - sumMem)
            : has
              ? 0
              : measuredMem * phys.memory,
      };
      for (const x of h.instances) {
        const d = this.demandOf(x.id);
        base.cpu += d.cpu;
        base.memory += d.memory;
      }
      return base;
    });
    this.loads = hosts.map((_, i) => this.loadOf(i));
  }

  /** The load of host `i`, optionally with some demand added or removed. */
  loadOf(i: number, extra?: { add?: Vec; remove?: Vec }): number {
    const phys = this.physical[i] as Vec;
    const sum = this.sums[i] as Vec;
    let cpu = sum.cpu;
    let memory = sum.memory;
    if (extra?.add) {
      cpu += extra.add.cpu;
      memory += extra.add.memory;
    }
    if (extra?.remove) {
      cpu -= extra.remove.cpu;
      memory -= extra.remove.memory;
    }
    let weighted = 0;
    let weights = 0;
    if (phys.cpu > 0) {
      weighted += (this.wc * cpu) / phys.cpu;
      weights += this.wc;
    }
    if (phys.memory > 0) {
      weighted += (this.wm * memory) / phys.memory;
      weights += this.wm;
    }
    return weights > 0 ? Math.max(0, weighted / weights) : 0;
  }

  /** The absolute demand an instance carries with it. */
  demandOf(instanceId: string): Vec {
    return this.demand.get(instanceId) ?? { cpu: 0, memory: 0 };
  }

  /** Host `i`'s load with the instance added. */
  loadWith(i: number, instanceId: string): number {
    return this.loadOf(i, { add: this.demandOf(instanceId) });
  }

  /** Host `i`'s load with the instance taken away. */
  loadWithout(i: number, instanceId: string): number {
    return this.loadOf(i, { remove: this.demandOf(instanceId) });
  }

  /** Whether the scheduler's filters accept `instance` on host `to`, as if it had already left host `from`. */
  admits(
    scheduler: Scheduler,
    instance: Instance,
    from: number,
    to: number,
  ): { ok: true } | { ok: false; why: string } {
    const { hostName: _pinned, ...hints } = instance.hints ?? {};
    const request: PlacementRequest = {
      resources: instance.resources,
      count: 1,
      instanceIds: [instance.id],
      hints,
    };
    const candidates: Candidate[] = this.hosts.map((h, i) =>
      candidateOf(i === from ? withoutInstance(h, instance.id) : h),
    );
    const cycle: Cycle = cycleOf(candidates);
    const failed = scheduler.check(candidates[to] as Candidate, request, cycle);
    return failed
      ? { ok: false, why: `${failed.filter}: ${failed.rejection.reasons.join(', ')}` }
      : { ok: true };
  }

  /** Applies a move to the model. */
  move(instanceId: string, from: number, to: number): void {
    const instance = (this.hosts[from] as Host).instances.find((x) => x.id === instanceId) as Instance;
    this.hosts[from] = withoutInstance(this.hosts[from] as Host, instanceId);
    this.hosts[to] = withInstance(this.hosts[to] as Host, instance);
    const d = this.demandOf(instanceId);
    const a = this.sums[from] as Vec;
    const b = this.sums[to] as Vec;
    this.sums[from] = { cpu: a.cpu - d.cpu, memory: a.memory - d.memory };
    this.sums[to] = { cpu: b.cpu + d.cpu, memory: b.memory + d.memory };
    this.loads[from] = this.loadOf(from);
    this.loads[to] = this.loadOf(to);
  }

  /** The loads as a summary. */
  summary(): LoadSummary {
    const n = this.loads.length;
    const mean = n ? this.loads.reduce((s, l) => s + l, 0) / n : 0;
    const variance = n ? this.loads.reduce((s, l) => s + (l - mean) ** 2, 0) / n : 0;
    return {
      perHost: Object.fromEntries(this.hosts.map((h, i) => [h.id, round(this.loads[i] as number)])),
      mean: round(mean),
      stdDev: round(Math.sqrt(variance)),
      max: round(n ? Math.max(...this.loads) : 0),
    };
  }
}

/** Population standard deviation of `loads` with two entries replaced. */
export function stdDevWith(
  loads: readonly number[],
  sum: number,
  sumSq: number,
  a: number,
  la: number,
  b: number,
  lb: number,
): number {
  const n = loads.length;
  const oa = loads[a] as number;
  const ob = loads[b] as number;
  const s = sum - oa - ob + la + lb;
  const q = sumSq - oa * oa - ob * ob + la * la + lb * lb;
  return Math.sqrt(Math.max(0, q / n - (s / n) ** 2));
}

/** Three decimals: plans are read by people, and float noise in them only confuses. */
export function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
