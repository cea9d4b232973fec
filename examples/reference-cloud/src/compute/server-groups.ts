/**
 * Server groups: named sets of servers with a placement policy (affinity, anti-affinity and their soft
 * variants), kept under `compute/server-groups/<id>`. The API records membership for display; the placement
 * rule itself is the scheduler's `serverGroup` hint, which the Inventory enforces when it claims hosts.
 */
import { invalidInput, newId, type Store } from '@nubes/core';
import type { ServerGroupPolicy } from '@nubes/scheduler';
import { isoTime, optionalInt, optionalString } from '../api/http.js';
import { novaNotFound } from './errors.js';
import type { Microversion } from './microversion.js';
import { serverKey } from './model.js';
import { listValues } from './records.js';

/** Store key prefix of server groups. */
export const SERVER_GROUPS_PREFIX = 'compute/server-groups/';

/** The Store key of a server group. */
export function serverGroupKey(id: string): string {
  return `${SERVER_GROUPS_PREFIX}${id}`;
}

/** A server group as stored. */
export interface ServerGroupRecord {
  id: string;
  name: string;
  policy: ServerGroupPolicy;
  /** Nova's rules (2.64): only `max_server_per_host`, only for anti-affinity. */
  rules: { max_server_per_host?: number };
  projectId: string;
  userId: string;
  /** Server ids, in the order they joined. Deleted servers are pruned when read. */
  members: string[];
  created: string;
}

const POLICIES: readonly ServerGroupPolicy[] = [
  'affinity',
  'anti-affinity',
  'soft-affinity',
  'soft-anti-affinity',
];
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** What `POST /os-server-groups` asks for, validated. */
export interface ServerGroupInput {
  name: string;
  policy: ServerGroupPolicy;
  rules: { max_server_per_host?: number };
}

/**
 * Validates a `POST /os-server-groups` body: `policies: [one]` before 2.64, `policy` and `rules` from 2.64;
 * the soft policies from 2.15, as in Nova.
 */
export function parseServerGroupCreate(
  group: Record<string, unknown>,
  version: Microversion,
): ServerGroupInput {
  const name = optionalString(group.name, 'server_group.name', 255);
  if (!name || name.trim() === '') throw invalidInput('server_group.name', 'is required');
  let policy: unknown;
  let rules: { max_server_per_host?: number } = {};
  if (version.atLeast('2.64')) {
    if (group.policies !== undefined)
      throw invalidInput('server_group.policies', 'is replaced by policy from 2.64');
    policy = group.policy;
    if (group.rules !== undefined) {
      if (group.rules === null || typeof group.rules !== 'object' || Array.isArray(group.rules))
        throw invalidInput('server_group.rules', 'must be an object');
      const r = group.rules as Record<string, unknown>;
      for (const k of Object.keys(r))
        if (k !== 'max_server_per_host') throw invalidInput(`server_group.rules.${k}`, 'is not a known rule');
      const max = optionalInt(
        r.max_server_per_host,
        'server_group.rules.max_server_per_host',
        1,
        2 ** 31 - 1,
      );
      if (max !== undefined) rules = { max_server_per_host: max };
    }
  } else {
    if (group.policy !== undefined)
      throw invalidInput('server_group.policy', 'needs microversion 2.64 or later');
    const list = group.policies;
    if (!Array.isArray(list) || list.length !== 1)
      throw invalidInput('server_group.policies', 'must be a list of exactly one policy');
    policy = list[0];
  }
  const allowed = version.atLeast('2.15') ? POLICIES : POLICIES.slice(0, 2);
  if (typeof policy !== 'string' || !allowed.includes(policy as ServerGroupPolicy))
    throw invalidInput(
      version.atLeast('2.64') ? 'server_group.policy' : 'server_group.policies.0',
      `must be one of ${allowed.join(', ')}`,
    );
  if (rules.max_server_per_host !== undefined && policy !== 'anti-affinity')
    throw invalidInput('server_group.rules', 'max_server_per_host is only for the anti-affinity policy');
  return { name, policy: policy as ServerGroupPolicy, rules };
}

/** The server groups in the Store. */
export class ServerGroups {
  constructor(private readonly store: Store) {}

  /** Creates a group for the caller's project. */
  async create(
    input: ServerGroupInput,
    projectId: string,
    userId: string,
    now = Date.now(),
  ): Promise<ServerGroupRecord> {
    const record: ServerGroupRecord = {
      id: newId(),
      ...input,
      projectId,
      userId,
      members: [],
      created: isoTime(now),
    };
    await this.store.put(
      serverGroupKey(record.id),
      { ...record, rules: { ...record.rules } },
      { ifRevision: 0 },
    );
    return record;
  }

  /** One group with its deleted members pruned. @throws NubesError `NotFound`. */
  async get(id: string): Promise<ServerGroupRecord> {
    const entry = UUID.test(id) ? await this.store.get<ServerGroupRecord>(serverGroupKey(id)) : undefined;
    if (!entry) throw novaNotFound('Server group', id);
    return this.pruned(entry.value);
  }

  /** Every group (the caller filters by project), members pruned. */
  async list(): Promise<ServerGroupRecord[]> {
    const out: ServerGroupRecord[] = [];
    for (const g of await listValues<ServerGroupRecord>(this.store, SERVER_GROUPS_PREFIX))
      out.push(await this.pruned(g));
    return out;
  }

  /** Deletes a group. Its servers keep running where they are, as in Nova. */
  async delete(id: string): Promise<void> {
    await this.get(id);
    await this.store.delete(serverGroupKey(id));
  }

  /**
   * Adds servers to a group in one transaction, dropping members that were deleted meanwhile. The member
   * limit is checked before the servers are created (see `Servers.create`); this only records them.
   */
  async addMembers(id: string, serverIds: readonly string[]): Promise<void> {
    await this.store.transaction(async (tx) => {
      const entry = await tx.get<ServerGroupRecord>(serverGroupKey(id));
      if (!entry) throw novaNotFound('Server group', id);
      const members: string[] = [];
      for (const m of entry.value.members) if (await tx.get(serverKey(m))) members.push(m);
      tx.put(serverGroupKey(id), {
        ...entry.value,
        rules: { ...entry.value.rules },
        members: [...members, ...serverIds.filter((s) => !members.includes(s))],
      });
    });
  }

  private async pruned(g: ServerGroupRecord): Promise<ServerGroupRecord> {
    const members: string[] = [];
    for (const m of g.members) if (await this.store.get(serverKey(m))) members.push(m);
    return { ...g, members };
  }
}

/** A server group as Nova shows it at the microversion: `policies` and `metadata` before 2.64, `policy` and `rules` from it. */
export function serverGroupJson(g: ServerGroupRecord, version: Microversion): Record<string, unknown> {
  const out: Record<string, unknown> = { id: g.id, name: g.name };
  if (version.atLeast('2.64')) {
    out.policy = g.policy;
    out.rules = g.rules;
  } else {
    out.policies = [g.policy];
    out.metadata = {};
  }
  out.members = g.members;
  if (version.atLeast('2.13')) {
    out.project_id = g.projectId;
    out.user_id = g.userId;
  }
  return out;
}
