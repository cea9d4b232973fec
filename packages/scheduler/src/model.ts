import { parseInput, type Resources, resourcesSchema } from '@nubes/core';
import { z } from 'zod';
import { type JsonQuery, parseJsonQuery } from './json-query.js';

/** Whether a host takes new work: `enabled`, `disabled` by an operator, or `down` (unreachable). */
export type HostStateName = 'enabled' | 'disabled' | 'down';

/** What a taint does to instances that do not tolerate it (Kubernetes semantics). */
export type TaintEffect = 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';

/** A taint repels instances unless they carry a matching toleration. */
export interface Taint {
  key: string;
  value?: string;
  effect: TaintEffect;
}

/** A toleration lets an instance land on a host with a matching taint. */
export interface Toleration {
  /** Taint key; empty with operator `Exists` tolerates every taint. */
  key?: string;
  /** `Equal` (default) compares the value; `Exists` matches any value. */
  operator: 'Equal' | 'Exists';
  value?: string;
  /** Only taints with this effect; absent matches every effect. */
  effect?: TaintEffect;
}

/** Server group policies, as Nova names them. */
export type ServerGroupPolicy = 'affinity' | 'anti-affinity' | 'soft-affinity' | 'soft-anti-affinity';

/** The server group a request's instances join. */
export interface ServerGroupHint {
  id: string;
  policy: ServerGroupPolicy;
  /** For `anti-affinity`: how many members one host may run (Nova's `max_server_per_host` rule); default 1. */
  maxPerHost?: number;
}

/** One requirement of a label selector (Kubernetes `matchExpressions`). */
export interface LabelRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

/** A Kubernetes-style label selector: every `matchLabels` pair and every expression must hold. */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelRequirement[];
}

/** Live utilization of a host, each a fraction 0..1. */
export interface HostMetrics {
  cpuUtilization?: number;
  memoryUtilization?: number;
}

/** Where an instance may go: the hints of a {@link PlacementRequest}. Every hint is optional. */
export interface PlacementHints {
  /** Only the host with this name. */
  hostName?: string;
  /** Only hosts in this availability zone. */
  availabilityZone?: string;
  /** Only hosts whose labels match. */
  labelSelector?: LabelSelector;
  /** Hosts must have every one of these traits. */
  requiredTraits?: string[];
  /** Hosts must have none of these traits. */
  forbiddenTraits?: string[];
  /** Taints these instances tolerate. */
  tolerations?: Toleration[];
  /** The server group the instances join, and its policy. */
  serverGroup?: ServerGroupHint;
  /** Only hosts that run at least one of these instances (Nova's `same_host`). */
  sameHost?: string[];
  /** Only hosts that run none of these instances (Nova's `different_host`). */
  differentHost?: string[];
  /** A query in Nova's JsonFilter language, already parsed and checked. */
  query?: JsonQuery;
}

/** An instance running on a host. */
export interface Instance {
  id: string;
  /** What it was given; counted in the host's `allocated`. */
  resources: Resources;
  /** Server groups it belongs to. */
  groups: string[];
  /** The hints it was placed with, so a move can check its destination the same way. */
  hints?: PlacementHints;
}

/** A host, validated and with defaults filled in. See {@link HostInput} for what callers pass. */
export interface Host {
  id: string;
  name: string;
  /** Physical capacity. */
  capacity: Resources;
  /** Kept for the host itself (hypervisor, daemons). */
  reserved: Resources;
  /** Overcommit per resource: usable = (capacity - reserved) x ratio; a missing ratio is 1. */
  allocationRatios: Record<string, number>;
  /** Already allocated, instances included. */
  allocated: Resources;
  labels: Record<string, string>;
  traits: string[];
  availabilityZone?: string;
  aggregates: string[];
  state: HostStateName;
  taints: Taint[];
  instances: Instance[];
  metrics?: HostMetrics;
}

/** A host as callers describe it: only `id`, `name` and `capacity` are required. */
export interface HostInput {
  id: string;
  name: string;
  capacity: Resources;
  reserved?: Resources;
  allocationRatios?: Record<string, number>;
  allocated?: Resources;
  labels?: Record<string, string>;
  traits?: string[];
  availabilityZone?: string;
  aggregates?: string[];
  state?: HostStateName;
  taints?: Taint[];
  instances?: { id: string; resources?: Resources; groups?: string[]; hints?: unknown }[];
  metrics?: HostMetrics;
}

/** A request to place `count` identical instances, validated. */
export interface PlacementRequest {
  /** Per instance. */
  resources: Resources;
  /** Instances to place, all or nothing (a gang); default 1. */
  count: number;
  /** Ids for the new instances, one per instance; generated when absent. */
  instanceIds?: string[];
  hints: PlacementHints;
}

/** A placement request as callers write it. `hints.query` may be a JSON string or the parsed array. */
export interface PlacementRequestInput {
  resources: Resources;
  count?: number;
  instanceIds?: string[];
  hints?: Omit<PlacementHints, 'query' | 'tolerations'> & {
    tolerations?: (Omit<Toleration, 'operator'> & { operator?: Toleration['operator'] })[];
    query?: unknown;
  };
}

const id = z.string().min(1).max(255);
const resourceName = z.string().regex(/^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/, 'not a resource name');
const labelKey = z.string().min(1).max(253);
const labelValue = z.string().max(253);
const trait = z.string().min(1).max(255);
const effect = z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']);
const fraction = z.number().finite().min(0).max(1);

const taintSchema = z.object({ key: labelKey, value: labelValue.optional(), effect }).strict();

const tolerationSchema = z
  .object({
    key: labelKey.optional(),
    operator: z.enum(['Equal', 'Exists']).default('Equal'),
    value: labelValue.optional(),
    effect: effect.optional(),
  })
  .strict()
  .superRefine((t, ctx) => {
    if (t.operator === 'Exists' && t.value !== undefined)
      ctx.addIssue({ code: 'custom', path: ['value'], message: 'must be empty when operator is Exists' });
    if (t.operator === 'Equal' && t.key === undefined)
      ctx.addIssue({ code: 'custom', path: ['key'], message: 'is required when operator is Equal' });
  });

const requirementSchema = z
  .object({
    key: labelKey,
    operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
    values: z.array(labelValue).max(1000).optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    const has = r.values !== undefined && r.values.length > 0;
    if ((r.operator === 'In' || r.operator === 'NotIn') && !has)
      ctx.addIssue({ code: 'custom', path: ['values'], message: `must not be empty for ${r.operator}` });
    if ((r.operator === 'Exists' || r.operator === 'DoesNotExist') && has)
      ctx.addIssue({ code: 'custom', path: ['values'], message: `must be empty for ${r.operator}` });
  });

const selectorSchema = z
  .object({
    matchLabels: z.record(labelKey, labelValue).optional(),
    matchExpressions: z.array(requirementSchema).max(100).optional(),
  })
  .strict();

const hintsSchema = z
  .object({
    hostName: z.string().min(1).max(255).optional(),
    availabilityZone: z.string().min(1).max(255).optional(),
    labelSelector: selectorSchema.optional(),
    requiredTraits: z.array(trait).max(100).optional(),
    forbiddenTraits: z.array(trait).max(100).optional(),
    tolerations: z.array(tolerationSchema).max(100).optional(),
    serverGroup: z
      .object({
        id,
        policy: z.enum(['affinity', 'anti-affinity', 'soft-affinity', 'soft-anti-affinity']),
        maxPerHost: z.number().int().min(1).optional(),
      })
      .strict()
      .optional(),
    sameHost: z.array(id).max(1000).optional(),
    differentHost: z.array(id).max(1000).optional(),
    // Checked by parseJsonQuery after zod, which bounds depth and size before walking it.
    query: z.unknown().optional(),
  })
  .strict();

const instanceSchema = z
  .object({
    id,
    resources: resourcesSchema.default({}),
    groups: z.array(id).max(100).default([]),
    hints: hintsSchema.optional(),
  })
  .strict();

const hostSchema = z
  .object({
    id,
    name: z.string().min(1).max(255),
    capacity: resourcesSchema,
    reserved: resourcesSchema.default({}),
    allocationRatios: z.record(resourceName, z.number().finite().positive().max(1000)).default({}),
    allocated: resourcesSchema.default({}),
    labels: z.record(labelKey, labelValue).default({}),
    traits: z.array(trait).max(1000).default([]),
    availabilityZone: z.string().min(1).max(255).optional(),
    aggregates: z.array(z.string().min(1).max(255)).max(1000).default([]),
    state: z.enum(['enabled', 'disabled', 'down']).default('enabled'),
    taints: z.array(taintSchema).max(100).default([]),
    instances: z.array(instanceSchema).max(100_000).default([]),
    metrics: z
      .object({ cpuUtilization: fraction.optional(), memoryUtilization: fraction.optional() })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((h, ctx) => {
    for (const [name, amount] of Object.entries(h.reserved)) {
      if (amount > (h.capacity[name] ?? 0))
        ctx.addIssue({ code: 'custom', path: ['reserved', name], message: 'must not exceed capacity' });
    }
    const ids = new Set<string>();
    h.instances.forEach((instance, i) => {
      if (ids.has(instance.id))
        ctx.addIssue({
          code: 'custom',
          path: ['instances', i, 'id'],
          message: `duplicate instance ${instance.id}`,
        });
      ids.add(instance.id);
    });
  });

const requestSchema = z
  .object({
    resources: resourcesSchema,
    count: z.number().int().min(1).max(10_000).default(1),
    instanceIds: z.array(id).optional(),
    hints: hintsSchema.default({}),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.instanceIds === undefined) return;
    if (r.instanceIds.length !== r.count)
      ctx.addIssue({
        code: 'custom',
        path: ['instanceIds'],
        message: `must hold exactly count (${r.count}) ids`,
      });
    if (new Set(r.instanceIds).size !== r.instanceIds.length)
      ctx.addIssue({ code: 'custom', path: ['instanceIds'], message: 'must not repeat an id' });
  });

type ParsedHints = z.output<typeof hintsSchema>;

function finishHints(hints: ParsedHints, field: string): PlacementHints {
  if (hints.query === undefined) return hints as PlacementHints;
  return { ...hints, query: parseJsonQuery(hints.query, `${field}.query`) } as PlacementHints;
}

/**
 * Validates a host description and fills in defaults, or throws `InvalidInput` naming the field
 * (`host.capacity.vcpus`, `host.taints.0.effect`).
 */
export function parseHost(input: unknown, field = 'host'): Host {
  const host = parseInput(hostSchema, input, field);
  host.instances = host.instances.map((instance, i) =>
    instance.hints
      ? { ...instance, hints: finishHints(instance.hints, `${field}.instances.${i}.hints`) }
      : instance,
  );
  return host as Host;
}

/** Validates a placement request and fills in defaults, or throws `InvalidInput` naming the field. */
export function parseRequest(input: unknown, field = 'request'): PlacementRequest {
  const request = parseInput(requestSchema, input, field);
  return { ...request, hints: finishHints(request.hints, `${field}.hints`) } as PlacementRequest;
}

/** Validates placement hints alone (used for the hints stored with an instance). */
export function parseHints(input: unknown, field = 'hints'): PlacementHints {
  return finishHints(parseInput(hintsSchema, input, field), field);
}
