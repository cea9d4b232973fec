import { z } from 'zod';
import { cidrSchema, interfaceNameSchema, namespaceNameSchema } from '../names.js';
import { rateSchema, sizeSchema } from '../units.js';

/** A traffic class under an HTB root: its own guaranteed rate, a ceiling, and which packets it gets. */
export const qosClassSchema = z.object({
  /** Class number, 1..4095 (rendered as the hex minor of `1:<id>`). */
  id: z.number().int().min(1).max(4095),
  rate: rateSchema,
  /** Most it may borrow up to (default: the egress ceiling). */
  ceil: rateSchema.optional(),
  burst: sizeSchema.optional(),
  /** Packets to or from these networks go into this class. */
  match: z.object({ dst: cidrSchema.optional(), src: cidrSchema.optional() }),
});

/** Egress shaping: tbf for one flat rate, htb when there is a ceiling above the rate or classes. */
export const egressSchema = z.object({
  rate: rateSchema,
  /** Borrowing ceiling (htb). */
  ceil: rateSchema.optional(),
  /** Bucket size in bytes (default: 10 ms at `rate`, at least 16 KiB). */
  burst: sizeSchema.optional(),
  /** Most time a packet may wait in tbf's queue (default 50 ms). */
  latencyMs: z.number().positive().max(10_000).default(50),
  /** Force a discipline; by default tbf unless `ceil` or `classes` need htb. */
  qdisc: z.enum(['tbf', 'htb']).optional(),
  classes: z.array(qosClassSchema).default([]),
});

/** Ingress limiting: drop above the rate (police) or shape it on an ifb device (smoother for TCP). */
export const ingressSchema = z.object({
  rate: rateSchema,
  burst: sizeSchema.optional(),
  mode: z.enum(['police', 'ifb']).default('police'),
  /** The ifb device for mode `ifb` (default: `ifb-` plus the first 11 characters of the device). */
  ifb: interfaceNameSchema.optional(),
});

/** Network emulation for tests: delay, jitter, loss. */
export const netemSchema = z.object({
  delayMs: z.number().min(0).max(60_000).default(0),
  jitterMs: z.number().min(0).max(60_000).default(0),
  lossPercent: z.number().min(0).max(100).default(0),
});

/** QoS of one interface: everything optional, what is omitted is removed. */
export const qosSchema = z.object({
  namespace: namespaceNameSchema.optional(),
  dev: interfaceNameSchema,
  egress: egressSchema.optional(),
  ingress: ingressSchema.optional(),
  netem: netemSchema.optional(),
});

/** QoS of one interface, as given. */
export type QosSpec = z.input<typeof qosSchema>;
/** QoS after validation: rates in bits per second, sizes in bytes. */
export type ParsedQos = z.output<typeof qosSchema>;
