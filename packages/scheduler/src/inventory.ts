import {
  type JsonValue,
  NubesError,
  newId,
  notFound,
  parseInput,
  type Resources,
  type Store,
  type Transaction,
} from '@nubes/core';
import { z } from 'zod';
import { candidateOf, HostSnapshot, withInstance, withoutInstance } from './candidate.js';
import { type Host, type Instance, type PlacementRequest, parseHost, parseRequest } from './model.js';
import { cycleWithGroups, type Decision, pendingInstance, Scheduler } from './scheduler.js';

/** Options of an {@link Inventory}. */
export interface InventoryOptions {
  /** Key prefix in the store; default `scheduler`. */
  prefix?: string;
  /** The scheduler that decides and re-checks claims; default `new Scheduler()`. */
  scheduler?: Scheduler;
  /** Rounds of select-then-claim before `place` gives up with `Conflict`; default 10. */
  maxAttempts?: number;
}

/** A host as the inventory keeps it: the host plus its generation, bumped by every change. */
export interface StoredHost {
  host: Host;
  /** Placement's resource-provider generation: changes whenever the host's inventory or allocations change. */
  generation: number;
}

/** Where a claimed instance runs and what it holds. */
export interface Allocation {
  instanceId: string;
  hostId: string;
  resources: Resources;
  groups: string[];
}

/** The outcome of {@link Inventory.place}. */
export interface Placement {
  /** One allocation per instance, in request order. */
  allocations: Allocation[];
  /** The decision that won, with its explanations. */
  decision: Decision;
  /** Select-then-claim rounds it took (1 without contention). */
  attempts: number;
  /** Claims that lost a race on the way (a host filled up, a group moved) before one held. */
  lostRaces: number;
}

interface GroupRecord {
  /** instance id -> host id */
  members: Record<string, string>;
}

/** The outcome of {@link Inventory.claim}: the allocations, or the host that failed its re-check and why. */
export type ClaimOutcome =
  | { ok: true; allocations: Allocation[] }
  | { ok: false; hostId: string; why: string };

const optionsSchema = z
  .object({
    prefix: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'letters, digits, _ . - only')
      .default('scheduler'),
    scheduler: z.custom<Scheduler>((s) => s instanceof Scheduler, 'must be a Scheduler').optional(),
    maxAttempts: z.number().int().min(1).max(1000).default(10),
  })
  .strict();

const idSchema = z.string().min(1).max(255);

/**
 * Hosts and their allocations in a `@nubes/core` Store, Placement-style: every claim is one
 * serializable transaction that re-reads the host, re-runs the scheduler's filters on that fresh
 * state and bumps the host's generation. Any number of processes sharing one store (PostgreSQL,
 * a SQLite file) can place concurrently and never double-book a host.
 *
 * Keys: `<prefix>/hosts/<id>`, `<prefix>/allocations/<instanceId>`, `<prefix>/groups/<groupId>`.
 */
export class Inventory {
  /** The scheduler used by {@link Inventory.place}. */
  readonly scheduler: Scheduler;
  private readonly prefix: string;
  private readonly maxAttempts: number;

  constructor(
    private readonly store: Store,
    options: InventoryOptions = {},
  ) {
    const o = parseInput(optionsSchema, options, 'options');
    this.prefix = o.prefix;
    this.maxAttempts = o.maxAttempts;
    this.scheduler = o.scheduler ?? new Scheduler();
  }

  private hostKey(id: string): string {
    return `${this.prefix}/hosts/${id}`;
  }
  private allocationKey(id: string): string {
    return `${this.prefix}/allocations/${id}`;
  }
  private groupKey(id: string): string {
    return `${this.prefix}/groups/${id}`;
  }

  /**
   * Adds a host or updates its description (capacity, labels, state, metrics...). For a host that
   * exists, its allocations and instances are kept from the store: they change only through claims.
   */
  async registerHost(input: unknown): Promise<StoredHost> {
    const host = parseHost(input);
    return this.store.transaction(async (tx) => {
      const current = (await tx.get<StoredHost>(this.hostKey(host.id)))?.value;
      const next: StoredHost = current
        ? {
            host: { ...host, allocated: current.host.allocated, instances: current.host.instances },
            generation: current.generation + 1,
          }
        : { host, generation: 1 };
      if (!current) {
        for (const instance of host.instances) {
          if (await tx.get(this.allocationKey(instance.id)))
            throw new NubesError('Conflict', `instance ${instance.id} is already allocated elsewhere`, {
              details: { instanceId: instance.id },
            });
          this.writeAllocation(tx, instance, host.id);
          for (const g of instance.groups) await this.joinGroup(tx, g, instance.id, host.id);
        }
      }
      tx.put(this.hostKey(host.id), next as unknown as JsonValue);
      return next;
    });
  }

  /** A host with its generation. @throws NubesError `NotFound`. */
  async getHost(id: string): Promise<StoredHost> {
    parseInput(idSchema, id, 'id');
    const entry = await this.store.get<StoredHost>(this.hostKey(id));
    if (!entry) throw notFound('host', id);
    return entry.value;
  }

  /** Every host, in id order. */
  async listHosts(): Promise<StoredHost[]> {
    const out: StoredHost[] = [];
    let startAfter: string | undefined;
    do {
      const page = await this.store.list<StoredHost>(`${this.prefix}/hosts/`, {
        limit: 10_000,
        ...(startAfter ? { startAfter } : {}),
      });
      for (const e of page.items) out.push(e.value);
      startAfter = page.next;
    } while (startAfter);
    return out;
  }

  /** The current hosts as a snapshot for the scheduler or the rebalancing planner. */
  async snapshot(): Promise<HostSnapshot> {
    return HostSnapshot.fromHosts((await this.listHosts()).map((s) => s.host));
  }

  /** Removes a host that runs nothing. @throws NubesError `Conflict` while it holds allocations, `NotFound`. */
  async removeHost(id: string): Promise<void> {
    parseInput(idSchema, id, 'id');
    await this.store.transaction(async (tx) => {
      const current = (await tx.get<StoredHost>(this.hostKey(id)))?.value;
      if (!current) throw notFound('host', id);
      if (current.host.instances.length > 0)
        throw new NubesError(
          'Conflict',
          `host ${id} still runs ${current.host.instances.length} instance(s)`,
          {
            details: { hostId: id, instances: current.host.instances.length },
          },
        );
      tx.delete(this.hostKey(id));
    });
  }

  /** Where an instance runs. @throws NubesError `NotFound`. */
  async getAllocation(instanceId: string): Promise<Allocation> {
    parseInput(idSchema, instanceId, 'instanceId');
    const entry = await this.store.get<Allocation>(this.allocationKey(instanceId));
    if (!entry) throw notFound('allocation', instanceId);
    return entry.value;
  }

  /**
   * Selects hosts for the request and claims them. A claim that loses a race (the host filled up or
   * a group moved under it) goes to the pick's next alternate; when those are used up, the scheduler
   * selects again over fresh state, up to `maxAttempts` rounds.
   *
   * @throws NubesError `NoValidHost` when no host can take it (with the explanation), `InvalidInput`,
   * `Conflict` when every round lost its races.
   */
  async place(request: unknown): Promise<Placement> {
    const parsed = parseRequest(request);
    const req: PlacementRequest = {
      ...parsed,
      instanceIds: parsed.instanceIds ?? Array.from({ length: parsed.count }, () => newId()),
    };
    let lostRaces = 0;
    let lastWhy = '';
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      const decision = this.scheduler.select(await this.snapshot(), req);
      if (req.count === 1) {
        const pick = decision.picks[0] as Decision['picks'][number];
        for (const hostId of [pick.hostId, ...pick.alternates.map((a) => a.hostId)]) {
          const outcome = await this.claim(req, [hostId]);
          if (outcome.ok) return { allocations: outcome.allocations, decision, attempts: attempt, lostRaces };
          lostRaces++;
          lastWhy = outcome.why;
        }
      } else {
        const outcome = await this.claim(
          req,
          decision.picks.map((p) => p.hostId),
        );
        if (outcome.ok) return { allocations: outcome.allocations, decision, attempts: attempt, lostRaces };
        lostRaces++;
        lastWhy = outcome.why;
      }
    }
    throw new NubesError(
      'Conflict',
      `every claim lost its race after ${this.maxAttempts} rounds (last: ${lastWhy})`,
      {
        details: { attempts: this.maxAttempts, lostRaces },
      },
    );
  }

  /**
   * Claims the given hosts for the request's instances (one host per instance, in order) in one
   * transaction, re-checking each host with the scheduler's filters against the state it reads.
   * Returns which host failed and why instead of throwing, so callers can try the next one.
   */
  async claim(request: PlacementRequest, hostIds: readonly string[]): Promise<ClaimOutcome> {
    const ids = request.instanceIds;
    if (!ids || ids.length !== hostIds.length)
      throw new NubesError('Internal', 'claim needs one instance id per host');
    return this.store.transaction(async (tx): Promise<ClaimOutcome> => {
      const hosts = new Map<string, StoredHost>();
      const group = request.hints.serverGroup;
      const groupRecord = group ? await this.readGroup(tx, group.id) : undefined;
      const allocations: Allocation[] = [];
      for (let k = 0; k < hostIds.length; k++) {
        const hostId = hostIds[k] as string;
        const instanceId = ids[k] as string;
        if (await tx.get(this.allocationKey(instanceId)))
          throw new NubesError('Conflict', `instance ${instanceId} already has an allocation`, {
            details: { instanceId },
          });
        const stored = hosts.get(hostId) ?? (await tx.get<StoredHost>(this.hostKey(hostId)))?.value;
        if (!stored) return { ok: false, hostId, why: `host ${hostId} is gone` };
        const candidate = candidateOf(stored.host);
        const members = groupRecord ? Object.entries(groupRecord.members) : [];
        const cycle = cycleWithGroups([candidate], (g) =>
          g === group?.id ? new Set(members.map(([, h]) => h)) : new Set<string>(),
        );
        const failed = this.scheduler.check(candidate, { ...request, count: 1 }, cycle);
        if (failed)
          return { ok: false, hostId, why: `${failed.filter}: ${failed.rejection.reasons.join(', ')}` };
        const instance = pendingInstance(instanceId, request);
        hosts.set(hostId, { host: withInstance(stored.host, instance), generation: stored.generation + 1 });
        if (groupRecord && group) groupRecord.members[instanceId] = hostId;
        allocations.push(this.writeAllocation(tx, instance, hostId));
      }
      for (const [id, stored] of hosts) tx.put(this.hostKey(id), stored as unknown as JsonValue);
      if (group && groupRecord) tx.put(this.groupKey(group.id), groupRecord as unknown as JsonValue);
      return { ok: true, allocations };
    });
  }

  /**
   * Releases an instance's claim (it was deleted): its host gets the capacity back.
   * @throws NubesError `NotFound` when the instance has no allocation.
   */
  async release(instanceId: string): Promise<Allocation> {
    parseInput(idSchema, instanceId, 'instanceId');
    return this.store.transaction(async (tx) => {
      const allocation = (await tx.get<Allocation>(this.allocationKey(instanceId)))?.value;
      if (!allocation) throw notFound('allocation', instanceId);
      const stored = (await tx.get<StoredHost>(this.hostKey(allocation.hostId)))?.value;
      if (stored) {
        tx.put(this.hostKey(allocation.hostId), {
          host: withoutInstance(stored.host, instanceId),
          generation: stored.generation + 1,
        } as unknown as JsonValue);
      }
      for (const g of allocation.groups) await this.leaveGroup(tx, g, instanceId);
      tx.delete(this.allocationKey(instanceId));
      return allocation;
    });
  }

  /**
   * Moves an instance's claim to another host (after a live migration), re-checking the destination
   * with the hints the instance was placed with (its host-name hint aside). Both hosts change in one
   * transaction: the source gets its capacity back exactly when the destination is charged.
   *
   * @throws NubesError `NoValidHost` when the destination does not pass, `NotFound`.
   */
  async move(instanceId: string, toHostId: string): Promise<Allocation> {
    parseInput(idSchema, instanceId, 'instanceId');
    parseInput(idSchema, toHostId, 'toHostId');
    return this.store.transaction(async (tx) => {
      const allocation = (await tx.get<Allocation>(this.allocationKey(instanceId)))?.value;
      if (!allocation) throw notFound('allocation', instanceId);
      if (allocation.hostId === toHostId) return allocation;
      const source = (await tx.get<StoredHost>(this.hostKey(allocation.hostId)))?.value;
      const target = (await tx.get<StoredHost>(this.hostKey(toHostId)))?.value;
      if (!target) throw notFound('host', toHostId);
      const instance: Instance = source?.host.instances.find((i) => i.id === instanceId) ?? {
        id: instanceId,
        resources: allocation.resources,
        groups: allocation.groups,
      };
      const { hostName: _pinned, ...hints } = instance.hints ?? {};
      const request: PlacementRequest = {
        resources: instance.resources,
        count: 1,
        instanceIds: [instanceId],
        hints,
      };
      const groupHosts = new Map<string, Set<string>>();
      for (const g of instance.groups) {
        const record = await this.readGroup(tx, g);
        groupHosts.set(
          g,
          new Set(
            Object.entries(record.members)
              .filter(([i]) => i !== instanceId)
              .map(([, h]) => h),
          ),
        );
      }
      const candidate = candidateOf(target.host);
      const failed = this.scheduler.check(
        candidate,
        request,
        cycleWithGroups([candidate], (g) => groupHosts.get(g) ?? new Set()),
      );
      if (failed)
        throw new NubesError(
          'NoValidHost',
          `host ${toHostId} cannot take ${instanceId}: ${failed.rejection.reasons.join(', ')}`,
          {
            details: {
              hostId: toHostId,
              filter: failed.filter,
              reasons: failed.rejection.reasons,
              detail: failed.rejection.detail,
            },
          },
        );
      if (source) {
        tx.put(this.hostKey(allocation.hostId), {
          host: withoutInstance(source.host, instanceId),
          generation: source.generation + 1,
        } as unknown as JsonValue);
      }
      tx.put(this.hostKey(toHostId), {
        host: withInstance(target.host, instance),
        generation: target.generation + 1,
      } as unknown as JsonValue);
      for (const g of instance.groups) await this.joinGroup(tx, g, instanceId, toHostId);
      return this.writeAllocation(tx, instance, toHostId);
    });
  }

  private writeAllocation(tx: Transaction, instance: Instance, hostId: string): Allocation {
    const allocation: Allocation = {
      instanceId: instance.id,
      hostId,
      resources: instance.resources,
      groups: instance.groups,
    };
    tx.put(this.allocationKey(instance.id), allocation as unknown as JsonValue);
    return allocation;
  }

  private async readGroup(tx: Transaction, groupId: string): Promise<GroupRecord> {
    const record = (await tx.get<GroupRecord>(this.groupKey(groupId)))?.value;
    return { members: { ...(record?.members ?? {}) } };
  }

  private async joinGroup(
    tx: Transaction,
    groupId: string,
    instanceId: string,
    hostId: string,
  ): Promise<void> {
    const record = await this.readGroup(tx, groupId);
    record.members[instanceId] = hostId;
    tx.put(this.groupKey(groupId), record as unknown as JsonValue);
  }

  private async leaveGroup(tx: Transaction, groupId: string, instanceId: string): Promise<void> {
    const record = await this.readGroup(tx, groupId);
    delete record.members[instanceId];
    if (Object.keys(record.members).length === 0) tx.delete(this.groupKey(groupId));
    else tx.put(this.groupKey(groupId), record as unknown as JsonValue);
  }
}
