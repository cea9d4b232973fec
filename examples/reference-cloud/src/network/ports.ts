/**
 * How the compute side attaches servers to networks: Nova asks Neutron for a port on the server's network
 * (or takes the port the user made), binds it to the server's host as a tap device, and lets go of it when
 * the server goes. One module, used by the compute API (create, delete) and by migration (re-binding), so
 * the network side's bookkeeping (device id and owner, the default security group, quota) lives in one place.
 */
import { invalidInput, isNubesError, NubesError, type Store } from '@nubes/core';
import { ipv4InNetwork, type PortRecord, parseIpv4Cidr, type Vpc } from '@nubes/netns';
import type { Quota } from '@nubes/quota';
import type { ServerPort } from '../compute/model.js';
import {
  createAttrs,
  deleteAttrs,
  ensureDefaultSecurityGroup,
  readAttrs,
  releaseKey,
  updateAttrs,
} from './records.js';

/** What the compute side asks for one network attachment. */
export interface ServerPortRequest {
  projectId: string;
  serverId: string;
  /** The host the server is scheduled to: the port is bound there. */
  host: string;
  /** A network to make a new port on, or ... */
  networkId?: string;
  /** ... an existing port to bind. */
  portId?: string;
  /** A fixed IP to ask for (with networkId). */
  fixedIp?: string;
}

/** Optional parts of the attach and detach calls. */
export interface ServerPortOptions {
  /**
   * Counts ports Nova makes (and the project's default security group, when this makes it) against the
   * project's quota, as the network API does. Without it they are not counted, and deleting them later
   * (through Nova or the network API) gives nothing back.
   */
  quota?: Quota;
  /** The Store of the Neutron side records; default the Vpc's Store (the reference cloud keeps one). */
  store?: Store;
  /** Neutron's `device_owner` of ports Nova makes (default `compute:nova`). */
  deviceOwner?: string;
}

/** Tap device name of a port: Nova's `tap` plus the start of the port id (at most 15 characters). */
export function tapName(portId: string): string {
  return `tap${portId.slice(0, 11)}`;
}

/** What the server record keeps of a bound port: addresses for the guest's config and the tap's name. */
export async function serverPortOf(vpc: Vpc, port: PortRecord): Promise<ServerPort> {
  const fixed = port.fixedIps[0];
  const subnet = fixed ? await vpc.getSubnet(fixed.subnetId) : undefined;
  const prefixLength = subnet ? Number(subnet.cidr.split('/')[1]) : 32;
  return {
    portId: port.id,
    networkId: port.networkId,
    mac: port.mac,
    ip: fixed?.ip ?? '',
    prefixLength,
    ...(subnet?.gateway ? { gateway: subnet.gateway } : {}),
    tap: port.device?.kind === 'tap' ? port.device.name : tapName(port.id),
  };
}

/** The subnet of `networkId` that holds `ip`, or `InvalidInput` naming `fixedIp`. */
async function subnetHolding(vpc: Vpc, networkId: string, ip: string): Promise<string> {
  for (const s of await vpc.listSubnets()) {
    const net = parseIpv4Cidr(s.cidr);
    if (s.networkId === networkId && net && ipv4InNetwork(net, ip)) return s.id;
  }
  throw invalidInput('fixedIp', `no subnet of network ${networkId} holds ${ip}`);
}

/**
 * Creates (or takes) a port for a server, binds it to the server's host as the tap {@link tapName} and
 * returns what the server record keeps of it. A new port gets the project's `default` security group (made
 * on first use). An existing port must be the project's and not used by another device (`Conflict`,
 * Neutron's PortInUse); a port of another project is `NotFound`, as the network API shows it.
 */
export async function attachServerPort(
  vpc: Vpc,
  request: ServerPortRequest,
  options: ServerPortOptions = {},
): Promise<ServerPort> {
  const store = options.store ?? vpc.store;
  const owner = options.deviceOwner ?? 'compute:nova';
  if (request.portId) {
    const port = await vpc.getPort(request.portId);
    if (port.tenant !== request.projectId || port.owner.kind !== 'instance')
      throw new NubesError('NotFound', `Port ${request.portId} could not be found.`, {
        details: { field: 'portId', neutronType: 'PortNotFound' },
      });
    const attrs = await readAttrs(store, 'ports', port.id);
    if (attrs.deviceId && attrs.deviceId !== request.serverId)
      throw new NubesError('Conflict', `Port ${port.id} is still in use by ${attrs.deviceId}.`, {
        details: { field: 'portId', neutronType: 'PortInUse' },
      });
    const bound = await vpc.bindPort(port.id, {
      host: request.host,
      device: { kind: 'tap', name: tapName(port.id) },
    });
    await updateAttrs(store, 'ports', port.id, { deviceId: request.serverId, deviceOwner: owner });
    return serverPortOf(vpc, bound);
  }
  if (!request.networkId) throw invalidInput('networkId', 'give a networkId or a portId');
  const networkId = request.networkId;
  const group = await ensureDefaultSecurityGroup(vpc, store, request.projectId, options.quota);
  const fixedIps = request.fixedIp
    ? [{ subnetId: await subnetHolding(vpc, networkId, request.fixedIp), ip: request.fixedIp }]
    : undefined;
  const quota = options.quota;
  const reservation = quota
    ? await quota.reserve(request.projectId, { ports: 1 }, { ttlMs: 60_000 })
    : undefined;
  let port: PortRecord | undefined;
  try {
    // The tap's name comes from the port's id, so the port is made unbound and bound once its id is known.
    port = await vpc.createPort({
      tenant: request.projectId,
      networkId,
      ...(fixedIps ? { fixedIps } : {}),
      securityGroups: [group.id],
    });
    await createAttrs(store, 'ports', port.id, {
      deviceId: request.serverId,
      deviceOwner: owner,
      counted: quota !== undefined,
      autoDelete: true,
    });
    const bound = await vpc.bindPort(port.id, {
      host: request.host,
      device: { kind: 'tap', name: tapName(port.id) },
    });
    if (reservation) await quota?.commit(reservation);
    return serverPortOf(vpc, bound);
  } catch (error) {
    if (reservation) await quota?.rollback(reservation).catch(() => {});
    if (port) {
      await vpc.deletePort(port.id).catch(() => {});
      await deleteAttrs(store, 'ports', port.id).catch(() => {});
    }
    throw error;
  }
}

/**
 * Moves a server's port to another host (live migration, evacuation): the old host's agent unwires the
 * tap, the new host's agent wires it. Returns what the server record keeps of the port.
 */
export async function bindServerPort(
  vpc: Vpc,
  portId: string,
  binding: { host: string; tap: string },
): Promise<ServerPort> {
  const bound = await vpc.bindPort(portId, {
    host: binding.host,
    device: { kind: 'tap', name: binding.tap },
  });
  return serverPortOf(vpc, bound);
}

/**
 * Lets go of a server's port: a port Nova made for the server is deleted (its quota given back when it was
 * counted); a port the user made and passed in is only unbound and keeps its addresses, as Nova does. A
 * port that is gone already is fine, so a retried server delete succeeds.
 */
export async function detachServerPort(
  vpc: Vpc,
  port: ServerPort,
  options: ServerPortOptions = {},
): Promise<void> {
  const store = options.store ?? vpc.store;
  let record: PortRecord;
  try {
    record = await vpc.getPort(port.portId);
  } catch (error) {
    if (isNubesError(error, 'NotFound')) return;
    throw error;
  }
  const attrs = await readAttrs(store, 'ports', port.portId);
  if (!attrs.autoDelete) {
    await vpc.unbindPort(port.portId);
    await updateAttrs(store, 'ports', port.portId, { deviceId: '', deviceOwner: '' });
    return;
  }
  await vpc.deletePort(port.portId);
  await deleteAttrs(store, 'ports', port.portId);
  if (attrs.counted && options.quota)
    await options.quota.release(
      record.tenant,
      { ports: 1 },
      { idempotencyKey: releaseKey('port', port.portId) },
    );
}
