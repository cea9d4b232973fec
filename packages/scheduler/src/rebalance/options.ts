import { z } from 'zod';
import { HostSnapshot } from '../candidate.js';
import type { Host } from '../model.js';
import { Scheduler } from '../scheduler.js';

/** Options shared by both planners. */
export interface PlannerOptions {
  /** Whose filters every destination must pass; default `new Scheduler()` (all built-in filters). */
  scheduler?: Scheduler;
  /** At most this many moves in the plan. */
  maxMoves?: number;
  /** No destination may end above this load. */
  maxLoad?: number;
  /** Weights of CPU and memory in a host's load; default 1 each. */
  weights?: { cpu?: number; memory?: number };
}

export const plannerSchema = {
  scheduler: z.custom<Scheduler>((s) => s instanceof Scheduler, 'must be a Scheduler').optional(),
  maxMoves: z.number().int().min(0).max(100_000).optional(),
  maxLoad: z.number().positive().max(10).optional(),
  weights: z
    .object({ cpu: z.number().min(0).finite().optional(), memory: z.number().min(0).finite().optional() })
    .strict()
    .optional(),
};

/** The hosts a planner works on, validated. */
export function plannerHosts(hosts: HostSnapshot | readonly unknown[]): Host[] {
  return (hosts instanceof HostSnapshot ? hosts : HostSnapshot.of(hosts as unknown[])).hosts;
}
