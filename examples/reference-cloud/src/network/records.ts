/**
 * Neutron's attributes that the `@nubes/netns` model does not keep (descriptions, admin state, a port's
 * device id and owner, timestamps, revision numbers, whether a resource was counted against the quota), as
 * side records next to the Vpc's records in the same Store. The Vpc stays the truth for everything the
 * agents wire; a side record that is missing (a crash between the two writes, a port made outside the API)
 * reads as Neutron's defaults, so nothing depends on both writes having happened.
 */
import { isNubesError, type JsonValue, type Store } from '@nubes/core';
import type { SecurityGroupRecord, Vpc } from '@nubes/netns';
import type { Quota } from '@nubes/quota';

/** Store key prefix of the side records: `neutron/<kind>/<id>`. */
export const NEUTRON_PREFIX = 'neutron/';

/** The kinds of resources that have side records. */
export type NeutronKind =
  | 'networks'
  | 'subnets'
  | 'ports'
  | 'routers'
  | 'floatingips'
  | 'secgroups'
  | 'rules';

/** Neutron-only attributes of one resource; every field is optional in the Store (see {@link withDefaults}). */
export interface NeutronAttrs {
  description: string;
  adminStateUp: boolean;
  /** Ports: what uses the port (a server id, a router id) and Neutron's owner string (`compute:nova`). */
  deviceId: string;
  deviceOwner: string;
  /** Subnets: kept and shown; the agent configures guests statically, there is no DHCP server. */
  enableDhcp: boolean;
  /** Networks: the port security that new ports on the network get. */
  portSecurity: boolean;
  /** Milliseconds since the epoch. */
  createdAt: number;
  updatedAt: number;
  /** Neutron's `revision_number`: bumped on every change made through the API. */
  revision: number;
  /**
   * Whether creating it reserved quota, so deleting it gives quota back. Resources made by the API always
   * are; a port or default group made by the compute side without a Quota at hand is not, and deleting
   * it must not release what was never taken.
   */
  counted: boolean;
  /** Security groups: ids of rules made with the group that were not counted (see {@link counted}). */
  uncountedRules: string[];
  /** Ports: made by Nova for a server (deleted when the server lets go of it) rather than by the user. */
  autoDelete: boolean;
}

const DEFAULTS: NeutronAttrs = {
  description: '',
  adminStateUp: true,
  deviceId: '',
  deviceOwner: '',
  enableDhcp: true,
  portSecurity: true,
  createdAt: 0,
  updatedAt: 0,
  revision: 0,
  counted: true,
  uncountedRules: [],
  autoDelete: false,
};

/** The Store key of a side record. */
export function attrsKey(kind: NeutronKind, id: string): string {
  return `${NEUTRON_PREFIX}${kind}/${id}`;
}

/** A stored (possibly partial or missing) side record with the defaults filled in. */
export function withDefaults(stored: Partial<NeutronAttrs> | undefined): NeutronAttrs {
  return { ...DEFAULTS, ...stored };
}

/** Reads one side record (defaults when there is none). */
export async function readAttrs(store: Store, kind: NeutronKind, id: string): Promise<NeutronAttrs> {
  return withDefaults((await store.get<Partial<NeutronAttrs>>(attrsKey(kind, id)))?.value);
}

/** Every side record of a kind, by id. */
export async function listAttrs(store: Store, kind: NeutronKind): Promise<Map<string, NeutronAttrs>> {
  const out = new Map<string, NeutronAttrs>();
  const prefix = attrsKey(kind, '');
  let startAfter: string | undefined;
  for (;;) {
    const page = await store.list<Partial<NeutronAttrs>>(prefix, {
      limit: 10_000,
      ...(startAfter ? { startAfter } : {}),
    });
    for (const item of page.items) out.set(item.key.slice(prefix.length), withDefaults(item.value));
    if (!page.next) return out;
    startAfter = page.next;
  }
}

/** Writes a new side record, stamped now, with `attrs` over the defaults. */
export async function createAttrs(
  store: Store,
  kind: NeutronKind,
  id: string,
  attrs: Partial<NeutronAttrs> = {},
): Promise<NeutronAttrs> {
  const now = Date.now();
  const record = withDefaults({ createdAt: now, updatedAt: now, revision: 1, ...attrs });
  await store.put(attrsKey(kind, id), record as unknown as JsonValue);
  return record;
}

/** Changes a side record (made with defaults when missing), bumping its revision and update time. */
export async function updateAttrs(
  store: Store,
  kind: NeutronKind,
  id: string,
  change: Partial<NeutronAttrs> = {},
): Promise<NeutronAttrs> {
  return store.transaction(async (tx) => {
    const current = withDefaults((await tx.get<Partial<NeutronAttrs>>(attrsKey(kind, id)))?.value);
    const now = Date.now();
    const record: NeutronAttrs = {
      ...current,
      ...change,
      createdAt: current.createdAt || now,
      updatedAt: now,
      revision: current.revision + 1,
    };
    tx.put(attrsKey(kind, id), record as unknown as JsonValue);
    return record;
  });
}

/** Removes a side record (a no-op when there is none). */
export async function deleteAttrs(store: Store, kind: NeutronKind, id: string): Promise<void> {
  await store.delete(attrsKey(kind, id));
}

/** The marker naming a project's `default` security group; written only if absent, so there is one. */
function defaultGroupKey(project: string): string {
  return `${NEUTRON_PREFIX}default-sg/${project}`;
}

/** Idempotency key of a release, so a retried delete gives its quota back once. */
export function releaseKey(kind: string, id: string): string {
  return `neutron-delete-${kind}-${id}`;
}

/**
 * The project's `default` security group, made on first use as Neutron does (with its two allow-all
 * egress rules, and ingress from members of the group itself, which is Neutron's default too). Two
 * concurrent first uses race on a put-if-absent marker; the loser deletes its group and uses the winner's.
 * With `quota`, the group and its rules are counted against the project's quota like any other.
 */
export async function ensureDefaultSecurityGroup(
  vpc: Vpc,
  store: Store,
  project: string,
  quota?: Quota,
): Promise<SecurityGroupRecord> {
  const key = defaultGroupKey(project);
  const existing = await store.get<{ id: string }>(key);
  if (existing) {
    try {
      return await vpc.getSecurityGroup(existing.value.id);
    } catch (error) {
      // An admin deleted the default group: the next use makes a new one, as in Neutron.
      if (!isNubesError(error, 'NotFound')) throw error;
      await store.delete(key, { ifRevision: existing.revision });
    }
  }
  const deltas = { securityGroups: 1, securityGroupRules: 4 };
  const reservation = quota ? await quota.reserve(project, deltas, { ttlMs: 60_000 }) : undefined;
  let group: SecurityGroupRecord | undefined;
  try {
    group = await vpc.createSecurityGroup({ tenant: project, name: 'default' });
    const selfIn = [
      await vpc.addRule(group.id, { direction: 'ingress', ethertype: 'IPv4', remoteGroupId: group.id }),
      await vpc.addRule(group.id, { direction: 'ingress', ethertype: 'IPv6', remoteGroupId: group.id }),
    ];
    const ruleIds = [...group.rules.map((r) => r.id), ...selfIn.map((r) => r.id)];
    await store.put(key, { id: group.id }, { ifRevision: 0 });
    await createAttrs(store, 'secgroups', group.id, {
      description: 'Default security group',
      counted: quota !== undefined,
      uncountedRules: quota ? [] : ruleIds,
    });
    if (reservation) await quota?.commit(reservation);
    return await vpc.getSecurityGroup(group.id);
  } catch (error) {
    if (reservation) await quota?.rollback(reservation).catch(() => {});
    if (group) await vpc.deleteSecurityGroup(group.id).catch(() => {});
    if (isNubesError(error, 'Conflict')) {
      const winner = await store.get<{ id: string }>(key);
      if (winner) return vpc.getSecurityGroup(winner.value.id);
    }
    throw error;
  }
}

/** Forgets the `default` marker of a project when its group is deleted (by an admin). */
export async function forgetDefaultSecurityGroup(
  store: Store,
  project: string,
  groupId: string,
): Promise<void> {
  const entry = await store.get<{ id: string }>(defaultGroupKey(project));
  if (entry && entry.value.id === groupId)
    await store.delete(defaultGroupKey(project), { ifRevision: entry.revision });
}
