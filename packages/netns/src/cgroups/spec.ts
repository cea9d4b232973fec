import { z } from 'zod';
import { sizeSchema } from '../units.js';

const cpuList = z.string().regex(/^\d+(-\d+)?(,\d+(-\d+)?)*$/, 'must be a CPU or node list like 0-3,6');
const limit = z.union([z.literal('max'), sizeSchema]);
const device = z.string().regex(/^\d+:\d+$/, 'must be a device number MAJOR:MINOR like 8:0');

/** Per-device IO limits (bytes and operations per second) and weight. */
export const ioDeviceSchema = z.object({
  device,
  readBps: z.number().int().positive().optional(),
  writeBps: z.number().int().positive().optional(),
  readIops: z.number().int().positive().optional(),
  writeIops: z.number().int().positive().optional(),
  /** Proportional weight on this device, 1..10000. */
  weight: z.number().int().min(1).max(10_000).optional(),
});

/**
 * One resource spec for both cgroup versions. Units are the cgroup v2 ones (weight 1..10000,
 * bytes, microseconds); v1 values are derived from them.
 */
export const resourceSpecSchema = z
  .object({
    cpu: z
      .object({
        /** CPU time per period in microseconds, or `max` (no limit). 20 000 of 100 000 is 20 % of one core. */
        quotaUs: z.union([z.literal('max'), z.number().int().min(1000)]).optional(),
        /** Period in microseconds (default 100 000). */
        periodUs: z.number().int().min(1000).max(1_000_000).default(100_000),
        /** Proportional weight 1..10000 (100 is the default); becomes cpu.shares on v1. */
        weight: z.number().int().min(1).max(10_000).optional(),
        /** CPUs the group may run on, e.g. `0-1`. */
        cpus: cpuList.optional(),
        /** Memory nodes, e.g. `0`. */
        mems: cpuList.optional(),
      })
      .strict()
      .optional(),
    memory: z
      .object({
        /** Hard limit: over it the group is OOM-killed. */
        max: limit.optional(),
        /** Throttling threshold (v2); on v1 the soft limit. */
        high: limit.optional(),
        /** Swap the group may use beyond `max`; 0 forbids swapping. */
        swapMax: limit.optional(),
      })
      .strict()
      .optional(),
    pids: z
      .object({ max: z.union([z.literal('max'), z.number().int().min(1)]) })
      .strict()
      .optional(),
    io: z
      .object({
        /** Default IO weight 1..10000. */
        weight: z.number().int().min(1).max(10_000).optional(),
        devices: z.array(ioDeviceSchema).default([]),
      })
      .strict()
      .optional(),
  })
  .strict();

/** A resource spec as given. */
export type ResourceSpec = z.input<typeof resourceSpecSchema>;
/** A resource spec after validation: sizes in bytes. */
export type ParsedResourceSpec = z.output<typeof resourceSpecSchema>;
