import { invalidInput, type Resources } from '@nubes/core';
import { type Host, type Instance, parseHost } from './model.js';

/**
 * A host as the filters and weighers see it in one decision: the host plus its derived capacity.
 * Immutable: a multi-instance request consumes capacity by replacing a candidate, never by mutating it.
 */
export interface Candidate {
  readonly host: Host;
  /** What may be allocated in all: (capacity - reserved) x allocation ratio, per resource. */
  readonly usable: Resources;
  /** Already allocated, including instances picked earlier in the same request. */
  readonly allocated: Resources;
  /** usable - allocated (may be negative on an over-committed host). */
  readonly free: Resources;
  /** Instances on the host, including ones picked earlier in the same request. */
  readonly instances: readonly Instance[];
}

/** (capacity - reserved) x ratio, per resource: Nova's and Placement's usable inventory. */
export function usableResources(host: Host): Resources {
  const out: Record<string, number> = {};
  for (const [name, total] of Object.entries(host.capacity)) {
    out[name] = Math.max(0, total - (host.reserved[name] ?? 0)) * (host.allocationRatios[name] ?? 1);
  }
  return out;
}

function freeOf(usable: Resources, allocated: Resources): Resources {
  const out: Record<string, number> = {};
  for (const name in usable) out[name] = (usable[name] as number) - (allocated[name] ?? 0);
  for (const name in allocated) if (!(name in usable)) out[name] = -(allocated[name] as number);
  return out;
}

/** The candidate view of a validated host. */
export function candidateOf(host: Host): Candidate {
  const usable = usableResources(host);
  return {
    host,
    usable,
    allocated: host.allocated,
    free: freeOf(usable, host.allocated),
    instances: host.instances,
  };
}

function plus(a: Resources, b: Resources, sign: 1 | -1): Resources {
  const out: Record<string, number> = { ...a };
  for (const name in b) out[name] = (out[name] ?? 0) + sign * (b[name] as number);
  return out;
}

/** The host with one more instance on it: its resources allocated, its group memberships visible. */
export function withInstance(host: Host, instance: Instance): Host {
  return {
    ...host,
    allocated: plus(host.allocated, instance.resources, 1),
    instances: [...host.instances, instance],
  };
}

/** The host without the instance (unchanged if it is not there). */
export function withoutInstance(host: Host, instanceId: string): Host {
  const instance = host.instances.find((i) => i.id === instanceId);
  if (!instance) return host;
  const allocated: Record<string, number> = { ...plus(host.allocated, instance.resources, -1) };
  // Float noise from repeated add/subtract must not leave "-1e-13 vcpus" that later fails a fit.
  for (const name in allocated) if (Math.abs(allocated[name] as number) < 1e-9) delete allocated[name];
  return { ...host, allocated, instances: host.instances.filter((i) => i.id !== instanceId) };
}

/**
 * A validated, precomputed set of hosts. Building one validates every host once, so a service that
 * makes many decisions against the same state pays for validation and derived capacity once; its first
 * decision also lays the hosts out as column arrays that the built-in filters and weighers scan (see the
 * README's Performance section). A snapshot is a picture: build a new one when hosts change, do not
 * mutate the hosts it holds.
 */
export class HostSnapshot {
  /** One candidate per host, in input order. */
  readonly candidates: readonly Candidate[];

  private constructor(candidates: readonly Candidate[]) {
    this.candidates = candidates;
  }

  /** Validates `hosts` (throwing `InvalidInput` naming `hosts.<i>.<field>`) and precomputes their capacity. */
  static of(hosts: readonly unknown[], field = 'hosts'): HostSnapshot {
    if (!Array.isArray(hosts)) throw invalidInput(field, 'must be an array of hosts');
    return HostSnapshot.fromHosts(
      hosts.map((h, i) => parseHost(h, `${field}.${i}`)),
      field,
    );
  }

  /** Builds a snapshot from hosts that are already validated (from {@link parseHost} or a store). */
  static fromHosts(hosts: readonly Host[], field = 'hosts'): HostSnapshot {
    const ids = new Set<string>();
    hosts.forEach((host, i) => {
      if (ids.has(host.id)) throw invalidInput(`${field}.${i}.id`, `duplicate host id ${host.id}`);
      ids.add(host.id);
    });
    return new HostSnapshot(hosts.map(candidateOf));
  }

  /** The hosts, validated. */
  get hosts(): Host[] {
    return this.candidates.map((c) => c.host);
  }
}
