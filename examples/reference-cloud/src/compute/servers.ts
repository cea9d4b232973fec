/**
 * The server lifecycle on the API side, as Nova's API and conductor do it: check the request, reserve quota,
 * schedule, make the ports, write the record; then ask the host's compute agent for work by setting `task`
 * on the record (see `model.ts` for the contract). The agent does the work, commits or rolls back the quota
 * reservation and reports the outcome in the record.
 */
import { open } from 'node:fs/promises';
import { invalidInput, isNubesError, type JsonValue, NubesError, newId, type Store } from '@nubes/core';
import type { ImageRecord, ImageStore } from '@nubes/images';
import type { Vpc, VpcSnapshot } from '@nubes/netns';
import type { Quota } from '@nubes/quota';
import type { Allocation, Inventory, PlacementHints, StoredHost } from '@nubes/scheduler';
import { consoleLogPath } from '../agent/paths.js';
import { isoTime } from '../api/http.js';
import { attachServerPort, detachServerPort } from '../network/ports.js';
import { notServed, novaNotFound, stateConflict } from './errors.js';
import type { FlavorRecord, Flavors } from './flavors.js';
import { DEFAULT_ZONE, zoneOf } from './hypervisors.js';
import { SERVERS_PREFIX, type ServerPort, type ServerRecord, serverKey, serverQuotaDeltas } from './model.js';
import { novaQuotaError } from './quota-sets.js';
import { listValues, updateRecord } from './records.js';
import type { ServerGroupRecord, ServerGroups } from './server-groups.js';
import { isUuidLike, type NetworkRequest, type ServerCreateRequest } from './server-input.js';
import { vmStateOf } from './server-view.js';

/** The shared parts the compute API works with (the cloud's `CloudParts` plus where the agents write files). */
export interface ComputeParts {
  store: Store;
  images: ImageStore;
  vpc: Vpc;
  quota: Quota;
  inventory: Inventory;
  /** The cloud's data directory: agents write `instances/<serverId>/console.log` under it. */
  dataDir?: string;
}

/** Who creates a server: the token's user and project. */
export interface Caller {
  userId: string;
  projectId: string;
  /** Admins may name a host in `availability_zone` (`zone:host`), as in Nova. */
  admin: boolean;
}

/** How long a server's quota reservation is held while it builds before the sweeper gives it back. */
export const BUILD_RESERVATION_TTL_MS = 60 * 60 * 1000;

/** How many lines `os-getConsoleOutput` returns at most, and how much of the log it reads. */
const CONSOLE_TAIL_BYTES = 1024 * 1024;

/** Nova's list filters this cloud applies (others are ignored, as Nova ignores unknown filters). */
export interface ServerFilters {
  name?: string;
  status?: string;
  host?: string;
  projectId?: string;
  flavor?: string;
  image?: string;
  availabilityZone?: string;
  ip?: string;
}

function nowIso(): string {
  return isoTime(Date.now());
}

/** A regex from a user's filter, or a literal match when it is not one (Nova matches names by regex). */
function matcher(pattern: string): (s: string) => boolean {
  try {
    const re = new RegExp(pattern);
    return (s) => re.test(s);
  } catch {
    return (s) => s.includes(pattern);
  }
}

/** Servers: create, read, delete and the actions, over the Store, the Inventory, the Quota and the Vpc. */
export class Servers {
  constructor(
    private readonly parts: ComputeParts,
    private readonly flavors: Flavors,
    private readonly groups: ServerGroups,
  ) {}

  // ---------------------------------------------------------------- reads

  /** One server, whoever owns it (the caller checks who may see it). @throws NubesError `NotFound`. */
  async get(id: string): Promise<ServerRecord> {
    const entry = isUuidLike(id) ? await this.parts.store.get<ServerRecord>(serverKey(id)) : undefined;
    if (!entry) throw novaNotFound('Instance', id);
    return entry.value;
  }

  /** Servers matching `filters`, newest first (Nova's default sort). */
  async list(filters: ServerFilters): Promise<ServerRecord[]> {
    const all = await listValues<ServerRecord>(this.parts.store, SERVERS_PREFIX);
    const name = filters.name !== undefined ? matcher(filters.name) : undefined;
    const ip = filters.ip !== undefined ? matcher(filters.ip) : undefined;
    return all
      .filter(
        (r) =>
          (filters.projectId === undefined || r.projectId === filters.projectId) &&
          (!name || name(r.name)) &&
          (filters.status === undefined || r.status === filters.status.toUpperCase()) &&
          (filters.host === undefined || r.host === filters.host) &&
          (filters.flavor === undefined || r.flavorId === filters.flavor) &&
          (filters.image === undefined || r.imageId === filters.image) &&
          (filters.availabilityZone === undefined || r.availabilityZone === filters.availabilityZone) &&
          (!ip || r.ports.some((p) => ip(p.ip))),
      )
      .sort((a, b) => b.created.localeCompare(a.created) || a.id.localeCompare(b.id));
  }

  /** The network state the views read (one consistent snapshot per request). */
  networkSnapshot(): Promise<VpcSnapshot> {
    return this.parts.vpc.snapshot();
  }

  // ---------------------------------------------------------------- create

  /**
   * Creates `min_count..max_count` servers, as Nova does: every check first (nothing changes on a refusal),
   * then one quota reservation per server, one placement for all (all or nothing), ports on the chosen hosts
   * and the records in BUILD with task `spawning` for the agents. When no host can take them the servers are
   * still created, in ERROR with Nova's "No valid host was found." fault, and their quota is given back.
   */
  async create(caller: Caller, req: ServerCreateRequest): Promise<ServerRecord[]> {
    const { parts } = this;
    const flavor = await this.flavorFor(req.flavorRef);
    const image = await this.imageFor(req.imageRef, caller.projectId);
    checkImageFits(image, flavor);
    const hosts = await parts.inventory.listHosts();
    const placementHints = await this.hintsFor(caller, req, hosts);
    const network = await parts.vpc.snapshot();
    const nics = this.resolveNetworks(caller.projectId, req, network);
    const securityGroupIds = this.resolveSecurityGroups(caller.projectId, req.securityGroups, network);
    const group = req.hints.group ? await this.groupFor(caller.projectId, req.hints.group) : undefined;
    const limits = await parts.quota.limits(caller.projectId);
    const metaLimit = limits.metadataItems ?? -1;
    if (metaLimit >= 0 && Object.keys(req.metadata).length > metaLimit)
      throw new NubesError('QuotaExceeded', `Maximum number of metadata items exceeds ${metaLimit}`, {
        details: { resource: 'metadata_items', limit: metaLimit },
      });
    if (group) {
      const max = limits.serverGroupMembers ?? -1;
      if (max >= 0 && group.members.length + req.minCount > max)
        throw new NubesError('QuotaExceeded', 'Quota exceeded, too many servers in group', {
          details: { resource: 'server_group_members', limit: max, inUse: group.members.length },
        });
    }

    // Quota: one reservation per server, so each is committed by its own agent. Nova creates fewer than
    // max_count when the quota only has room for that many, but never fewer than min_count.
    const deltas = serverQuotaDeltas({
      flavor: { name: flavor.name, vcpus: flavor.vcpus, ramMiB: flavor.ramMiB, diskGiB: flavor.diskGiB },
    });
    const reservations: string[] = [];
    for (let i = 0; i < req.maxCount; i++) {
      try {
        reservations.push(
          await parts.quota.reserve(caller.projectId, deltas, { ttlMs: BUILD_RESERVATION_TTL_MS }),
        );
      } catch (error) {
        if (isNubesError(error, 'QuotaExceeded') && i >= req.minCount) break;
        await this.rollback(reservations);
        if (isNubesError(error, 'QuotaExceeded') && i > 0) {
          // Report the whole request, as Nova does, not the last server that did not fit.
          throw novaQuotaError(scaleRequested(error, req.minCount, i));
        }
        throw novaQuotaError(error);
      }
    }
    const count = reservations.length;
    const ids = Array.from({ length: count }, () => newId());
    const names = ids.map((_, i) => (count > 1 ? `${req.name}-${i + 1}` : req.name));
    const now = nowIso();
    const base = (i: number): ServerRecord => ({
      id: ids[i] as string,
      name: names[i] as string,
      projectId: caller.projectId,
      userId: caller.userId,
      flavorId: flavor.id,
      flavor: { name: flavor.name, vcpus: flavor.vcpus, ramMiB: flavor.ramMiB, diskGiB: flavor.diskGiB },
      imageId: image.id,
      status: 'BUILD',
      task: null,
      powerState: 0,
      availabilityZone: req.availabilityZone?.split(':')[0] || DEFAULT_ZONE,
      ports: [],
      ...(group ? { serverGroupId: group.id } : {}),
      metadata: req.metadata,
      created: now,
      updated: now,
    });

    let allocations: Allocation[];
    try {
      const placement = await parts.inventory.place({
        resources: {
          vcpus: flavor.vcpus,
          memoryMiB: flavor.ramMiB,
          ...(flavor.diskGiB > 0 ? { diskGiB: flavor.diskGiB } : {}),
        },
        count,
        instanceIds: ids,
        hints: group
          ? { ...placementHints, serverGroup: { id: group.id, policy: group.policy, ...maxPerHost(group) } }
          : placementHints,
      });
      allocations = placement.allocations;
    } catch (error) {
      await this.rollback(reservations);
      if (!isNubesError(error, 'NoValidHost')) throw error;
      const fault = { code: 500, message: `No valid host was found. ${error.message}`, created: nowIso() };
      const failed = ids.map((_, i): ServerRecord => ({ ...base(i), status: 'ERROR', fault }));
      await this.writeNew(failed);
      if (group) await this.groups.addMembers(group.id, ids);
      return failed;
    }

    const made: ServerPort[] = [];
    const records: ServerRecord[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const hostId = (allocations[i] as Allocation).hostId;
        const ports: ServerPort[] = [];
        for (const nic of nics) {
          const port = await attachServerPort(
            parts.vpc,
            {
              projectId: caller.projectId,
              serverId: ids[i] as string,
              host: hostId,
              ...(nic.networkId ? { networkId: nic.networkId } : {}),
              ...(nic.portId ? { portId: nic.portId } : {}),
              ...(nic.fixedIp ? { fixedIp: nic.fixedIp } : {}),
            },
            { quota: parts.quota },
          );
          made.push(port);
          ports.push(port);
          if (securityGroupIds.length) await parts.vpc.setPortSecurityGroups(port.portId, securityGroupIds);
        }
        const host = hosts.find((h) => h.host.id === hostId);
        records.push({
          ...base(i),
          host: hostId,
          availabilityZone: host ? zoneOf(host.host) : DEFAULT_ZONE,
          ports,
          task: 'spawning',
          reservationId: reservations[i] as string,
        });
      }
      await this.writeNew(records);
    } catch (error) {
      // Nothing of this request may stay behind: ports, claims, reservations, records.
      for (const p of made) await detachServerPort(parts.vpc, p, { quota: parts.quota }).catch(() => {});
      for (const id of ids) await parts.inventory.release(id).catch(() => {});
      for (const r of records) await parts.store.delete(serverKey(r.id)).catch(() => false);
      await this.rollback(reservations);
      throw novaQuotaError(error);
    }
    if (group) await this.groups.addMembers(group.id, ids);
    return records;
  }

  private async writeNew(records: readonly ServerRecord[]): Promise<void> {
    await this.parts.store.transaction((tx) => {
      for (const r of records) tx.put(serverKey(r.id), toJson(r));
    });
  }

  private async rollback(reservations: readonly string[]): Promise<void> {
    for (const r of reservations) await this.parts.quota.rollback(r).catch(() => {});
  }

  private async flavorFor(id: string): Promise<FlavorRecord> {
    try {
      const flavor = await this.flavors.get(id);
      if (flavor.disabled) throw invalidInput('server.flavorRef', `Flavor ${id} is disabled.`);
      return flavor;
    } catch (error) {
      if (isNubesError(error, 'NotFound'))
        throw invalidInput('server.flavorRef', `Flavor ${id} could not be found.`);
      throw error;
    }
  }

  /** The image, if the project may boot it: its own, public or community, or shared with it and accepted. */
  private async imageFor(id: string, projectId: string): Promise<ImageRecord> {
    const missing = () => invalidInput('server.imageRef', `Image ${id} could not be found.`);
    let image: ImageRecord;
    try {
      image = await this.parts.images.get(id);
    } catch (error) {
      if (isNubesError(error, 'NotFound', 'InvalidInput')) throw missing();
      throw error;
    }
    let visible =
      image.owner === projectId || image.visibility === 'public' || image.visibility === 'community';
    if (!visible && image.visibility === 'shared') {
      const members = await this.parts.images.listMembers(id);
      visible = members.some((m) => m.memberId === projectId && m.status !== 'rejected');
    }
    if (!visible) throw missing();
    if (image.status !== 'active') throw invalidInput('server.imageRef', `Image ${id} is not active.`);
    return image;
  }

  private async hintsFor(
    caller: Caller,
    req: ServerCreateRequest,
    hosts: readonly StoredHost[],
  ): Promise<PlacementHints> {
    const hints: { -readonly [K in keyof PlacementHints]: PlacementHints[K] } = {};
    if (req.availabilityZone) {
      // Nova's `zone:host` form pins a host; only admins may use it.
      const [zone, hostName] = req.availabilityZone.split(':');
      if (hostName) {
        if (!caller.admin)
          throw new NubesError('Forbidden', 'Only administrators may request a host in availability_zone.');
        const host = hosts.find((h) => h.host.name === hostName || h.host.id === hostName);
        if (!host)
          throw invalidInput('server.availability_zone', `Compute host ${hostName} could not be found.`);
        hints.hostName = host.host.name;
      }
      const zones = new Set(hosts.map((h) => zoneOf(h.host)));
      if (zone && !zones.has(zone))
        throw invalidInput(
          'server.availability_zone',
          `The requested availability zone ${zone} is not available`,
        );
      // Hosts registered without a zone are in the default one but carry none: only a named zone filters.
      if (zone && zone !== DEFAULT_ZONE) hints.availabilityZone = zone;
    }
    if (req.hints.sameHost) hints.sameHost = req.hints.sameHost;
    if (req.hints.differentHost) hints.differentHost = req.hints.differentHost;
    if (req.hints.query !== undefined) {
      let query: unknown;
      try {
        query = JSON.parse(req.hints.query);
      } catch {
        throw invalidInput('os:scheduler_hints.query', 'is not valid JSON');
      }
      hints.query = query as PlacementHints['query'];
    }
    return hints;
  }

  private resolveNetworks(
    projectId: string,
    req: ServerCreateRequest,
    network: VpcSnapshot,
  ): NetworkRequest[] {
    const visible = network.networks.filter(
      (n) => n.tenant === projectId || n.shared === true || (n.external && n.tenant === projectId),
    );
    if (req.networks === 'none') return [];
    if (req.networks === undefined || req.networks === 'auto') {
      // Nova attaches the project's network when there is exactly one to choose.
      const own = visible.filter((n) => !n.external);
      if (own.length > 1)
        throw new NubesError(
          'Conflict',
          'Multiple possible networks found, use a Network ID to be more specific.',
        );
      if (own.length === 0 && req.networks === 'auto')
        throw invalidInput(
          'server.networks',
          `Unable to automatically allocate a network for project ${projectId}`,
        );
      return own.map((n) => ({ networkId: n.id }));
    }
    const list = req.networks;
    list.forEach((nic, i) => {
      const field = `server.networks.${i}`;
      if (nic.networkId) {
        const net = network.networks.find((n) => n.id === nic.networkId);
        if (!net || !(net.tenant === projectId || net.shared === true || net.external))
          throw invalidInput(`${field}.uuid`, `Network ${nic.networkId} could not be found.`);
      }
      if (nic.portId) {
        const port = network.ports.find((p) => p.id === nic.portId);
        if (!port || port.tenant !== projectId)
          throw invalidInput(`${field}.port`, `Port ${nic.portId} could not be found.`);
        if (port.host)
          throw new NubesError('Conflict', `Port ${nic.portId} is still in use.`, { details: { field } });
        if (req.maxCount > 1)
          throw invalidInput(
            `${field}.port`,
            'Unable to launch multiple instances with a single configured port ID.',
          );
      }
      if (nic.fixedIp && req.maxCount > 1)
        throw invalidInput(
          `${field}.fixed_ip`,
          'Unable to launch multiple instances with a single fixed IP.',
        );
    });
    return list;
  }

  private resolveSecurityGroups(
    projectId: string,
    wanted: readonly string[],
    network: VpcSnapshot,
  ): string[] {
    // Only an explicit, non-default request changes the ports' groups; otherwise the port keeps `default`.
    if (wanted.length === 0 || (wanted.length === 1 && wanted[0] === 'default')) return [];
    return wanted.map((w, i) => {
      const own = network.securityGroups.filter((g) => g.tenant === projectId);
      const found =
        own.find((g) => g.id === w || g.id === w.replaceAll('-', '')) ?? own.find((g) => g.name === w);
      if (!found)
        throw invalidInput(
          `server.security_groups.${i}.name`,
          `Security group ${w} not found for project ${projectId}.`,
        );
      return found.id;
    });
  }

  private async groupFor(projectId: string, id: string): Promise<ServerGroupRecord> {
    try {
      const group = await this.groups.get(id);
      if (group.projectId !== projectId) throw novaNotFound('Server group', id);
      return group;
    } catch (error) {
      if (isNubesError(error, 'NotFound'))
        throw invalidInput('os:scheduler_hints.group', `Server group ${id} could not be found.`);
      throw error;
    }
  }

  // ---------------------------------------------------------------- delete

  /**
   * Deletes a server. A placed one is handed to its host's agent (`task: 'deleting'`), which stops the guest,
   * frees the host's devices, releases the claim and the quota, and removes the record. One that never got a
   * host has nothing running: its ports, claim, reservation and record go now.
   */
  async delete(id: string): Promise<void> {
    const { parts } = this;
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = await parts.store.get<ServerRecord>(serverKey(id));
      if (!entry) throw novaNotFound('Instance', id);
      const r = entry.value;
      if (r.task === 'deleting') return;
      if (r.host) {
        const next: ServerRecord = { ...r, task: 'deleting', updated: nowIso() };
        try {
          await parts.store.put(serverKey(id), toJson(next), { ifRevision: entry.revision });
          return;
        } catch (error) {
          if (isNubesError(error, 'Conflict')) continue;
          throw error;
        }
      }
      const deleted = await parts.store
        .delete(serverKey(id), { ifRevision: entry.revision })
        .catch((error: unknown) => {
          if (isNubesError(error, 'Conflict')) return false;
          throw error;
        });
      if (!deleted) continue;
      for (const p of r.ports) await detachServerPort(parts.vpc, p, { quota: parts.quota }).catch(() => {});
      await parts.inventory.release(id).catch(() => {});
      if (r.reservationId) await parts.quota.rollback(r.reservationId).catch(() => {});
      return;
    }
    throw new NubesError('Conflict', `Instance ${id} kept changing while it was being deleted; try again.`);
  }

  // ---------------------------------------------------------------- actions

  /** `os-start`: a stopped server is powered on by its agent. */
  start(id: string): Promise<ServerRecord> {
    return this.update(id, (r) => {
      requireIdle(r, 'start');
      if (r.status !== 'SHUTOFF') throw stateConflict('start', r.id, 'vm_state', vmStateOf(r));
      return { ...r, task: 'powering-on' };
    });
  }

  /** `os-stop`: a running (or failed) server is powered off by its agent. */
  stop(id: string): Promise<ServerRecord> {
    return this.update(id, (r) => {
      requireIdle(r, 'stop');
      if (r.status !== 'ACTIVE' && r.status !== 'ERROR')
        throw stateConflict('stop', r.id, 'vm_state', vmStateOf(r));
      return { ...r, task: 'powering-off' };
    });
  }

  /** `reboot`: SOFT from ACTIVE; HARD also from SHUTOFF and ERROR, as Nova allows. */
  reboot(id: string, type: 'SOFT' | 'HARD'): Promise<ServerRecord> {
    return this.update(id, (r) => {
      requireIdle(r, 'reboot');
      const allowed = type === 'SOFT' ? ['ACTIVE'] : ['ACTIVE', 'SHUTOFF', 'ERROR'];
      if (!allowed.includes(r.status)) throw stateConflict('reboot', r.id, 'vm_state', vmStateOf(r));
      return { ...r, status: type === 'SOFT' ? 'REBOOT' : 'HARD_REBOOT', task: 'rebooting' };
    });
  }

  /**
   * `os-getConsoleOutput`: the last `length` lines (all for none) of the console log the agent writes at
   * `<dataDir>/instances/<id>/console.log`. Empty while the agent has written nothing yet.
   */
  async consoleOutput(id: string, length: number | undefined): Promise<string> {
    const r = await this.get(id);
    if (!r.host) throw stateConflict('os-getConsoleOutput', r.id, 'vm_state', vmStateOf(r));
    if (this.parts.dataDir === undefined) throw notServed('Console output without a data directory');
    let text = '';
    try {
      const file = await open(consoleLogPath(this.parts.dataDir, r.id), 'r');
      try {
        const size = (await file.stat()).size;
        const start = Math.max(0, size - CONSOLE_TAIL_BYTES);
        const buffer = Buffer.alloc(size - start);
        await file.read(buffer, 0, buffer.length, start);
        text = buffer.toString('utf8');
      } finally {
        await file.close();
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (length === undefined || length < 0) return text;
    if (length === 0) return '';
    const lines = text.split('\n');
    const trailing = text.endsWith('\n');
    if (trailing) lines.pop();
    return lines.slice(-length).join('\n') + (trailing && lines.length ? '\n' : '');
  }

  /**
   * `os-migrateLive`: claims the destination (the named host, re-checked against the server's placement
   * hints, or the scheduler's pick) with `inventory.move`, then hands the migration to the source host's
   * agent (`task: 'migrating'`, `migration: { sourceHost, targetHost }`). The agent sets `host` to the target
   * when it is done; if it fails it moves the claim back.
   */
  async liveMigrate(id: string, target: string | undefined): Promise<ServerRecord> {
    const { inventory } = this.parts;
    const r = await this.get(id);
    requireIdle(r, 'os-migrateLive');
    if (r.status !== 'ACTIVE' || !r.host)
      throw stateConflict('os-migrateLive', r.id, 'vm_state', vmStateOf(r));
    const source = r.host;
    const hosts = await inventory.listHosts();
    let targetId: string;
    if (target !== undefined) {
      const host = hosts.find((h) => h.host.name === target || h.host.id === target);
      if (!host) throw invalidInput('os-migrateLive.host', `Compute host ${target} could not be found.`);
      if (host.host.id === source)
        throw invalidInput(
          'os-migrateLive.host',
          `The supplied host ${target} is the server's current host.`,
        );
      targetId = host.host.id;
      await inventory.move(id, targetId).catch((error: unknown) => {
        if (isNubesError(error, 'NoValidHost'))
          throw invalidInput('os-migrateLive.host', `Migration pre-check error: ${error.message}`);
        throw error;
      });
    } else {
      targetId = await this.pickMigrationTarget(id, source);
    }
    try {
      return await this.update(id, (cur) => {
        requireIdle(cur, 'os-migrateLive');
        if (cur.status !== 'ACTIVE' || cur.host !== source)
          throw stateConflict('os-migrateLive', cur.id, 'vm_state', vmStateOf(cur));
        return {
          ...cur,
          status: 'MIGRATING',
          task: 'migrating',
          migration: { sourceHost: source, targetHost: targetId, startedAt: nowIso() },
        };
      });
    } catch (error) {
      // The record moved on under us: the claim goes back where the server still runs.
      await inventory.move(id, source).catch(() => {});
      throw error;
    }
  }

  private async pickMigrationTarget(id: string, source: string): Promise<string> {
    const { inventory } = this.parts;
    const allocation = await inventory.getAllocation(id).catch((error: unknown) => {
      if (isNubesError(error, 'NotFound'))
        throw new NubesError('Conflict', `Instance ${id} has no placement to migrate from.`);
      throw error;
    });
    const sourceHost = (await inventory.listHosts()).find((h) => h.host.id === source);
    const placedWith = sourceHost?.host.instances.find((i) => i.id === id)?.hints ?? {};
    const { hostName: _pinned, serverGroup: _group, ...hints } = placedWith;
    let decision: ReturnType<Inventory['scheduler']['select']>;
    try {
      decision = inventory.scheduler.select(await inventory.snapshot(), {
        resources: allocation.resources,
        count: 1,
        instanceIds: [`${id}-migration`],
        // The source runs the server itself, so "not where it runs" excludes exactly the source.
        hints: { ...hints, differentHost: [...(hints.differentHost ?? []), id] },
      });
    } catch (error) {
      if (isNubesError(error, 'NoValidHost'))
        throw invalidInput('os-migrateLive.host', `No valid host was found. ${error.message}`);
      throw error;
    }
    const pick = decision.picks[0];
    let last: unknown;
    for (const hostId of pick ? [pick.hostId, ...pick.alternates.map((a) => a.hostId)] : []) {
      try {
        // move() re-checks the destination with the server's own hints, its group included.
        await inventory.move(id, hostId);
        return hostId;
      } catch (error) {
        if (!isNubesError(error, 'NoValidHost')) throw error;
        last = error;
      }
    }
    throw invalidInput(
      'os-migrateLive.host',
      `No valid host was found. ${last instanceof Error ? last.message : 'no other host can take the server'}`,
    );
  }

  private update(id: string, change: (r: ServerRecord) => ServerRecord): Promise<ServerRecord> {
    return updateRecord<ServerRecord>(
      this.parts.store,
      serverKey(id),
      () => novaNotFound('Instance', id),
      (r) => ({
        ...change(r),
        updated: nowIso(),
      }),
    );
  }

  /** Actions Nova has that this cloud does not serve: a clean 501 instead of a 400 "no such action". */
  static notServedAction(name: string): NubesError {
    return notServed(`The server action ${name}`);
  }
}

/** A server with a task in progress takes no other action (Nova's `check_instance_state(task_state=[None])`). */
function requireIdle(r: ServerRecord, action: string): void {
  if (r.task !== null) throw stateConflict(action, r.id, 'task_state', r.task);
}

function maxPerHost(group: ServerGroupRecord): { maxPerHost?: number } {
  return group.rules.max_server_per_host !== undefined ? { maxPerHost: group.rules.max_server_per_host } : {};
}

/** Refuses an image the flavor cannot hold, in Nova's words. */
function checkImageFits(image: ImageRecord, flavor: FlavorRecord): void {
  const GiB = 1024 ** 3;
  if (flavor.ramMiB < image.minRam)
    throw invalidInput('server.flavorRef', "Flavor's memory is too small for requested image.", {
      flavorRamMiB: flavor.ramMiB,
      imageMinRamMiB: image.minRam,
    });
  // A flavor with a 0 GiB disk takes the image's size, as in Nova.
  if (flavor.diskGiB === 0) return;
  if (flavor.diskGiB < image.minDisk)
    throw invalidInput(
      'server.flavorRef',
      `Flavor's disk is too small for requested image. Flavor disk is ${flavor.diskGiB * GiB} bytes, minimum required by image is ${image.minDisk * GiB} bytes.`,
    );
  const size = image.virtualSize ?? image.size ?? 0;
  if (size > flavor.diskGiB * GiB)
    throw invalidInput(
      'server.flavorRef',
      `Flavor's disk is too small for requested image. Flavor disk is ${flavor.diskGiB * GiB} bytes, image is ${size} bytes.`,
    );
}

/**
 * A QuotaExceeded met by the server after `held` others were reserved, restated for the `count` servers the
 * request needed at least, with this request's own (now rolled back) reservations out of "already used".
 */
function scaleRequested(error: NubesError, count: number, held: number): NubesError {
  const resources = (error.details.resources as { requested: number; reserved: number }[] | undefined) ?? [];
  return new NubesError('QuotaExceeded', error.message, {
    details: {
      ...error.details,
      resources: resources.map((r) => ({
        ...r,
        requested: r.requested * count,
        reserved: Math.max(0, r.reserved - r.requested * held),
      })),
    },
  });
}

/** A record as a Store value (records hold only JSON: strings, numbers, plain objects and arrays). */
function toJson(r: ServerRecord): JsonValue {
  return JSON.parse(JSON.stringify(r)) as JsonValue;
}
