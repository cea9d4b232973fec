/**
 * A server record as Nova shows it at the negotiated microversion: statuses split into vm_state / task_state /
 * power_state, addresses by network name, the flavor as a link (before 2.47) or embedded (from 2.47), and the
 * admin-only host attributes for admins only.
 */
import { createHash } from 'node:crypto';
import type { VpcSnapshot } from '@nubes/netns';
import type { Microversion } from './microversion.js';
import type { ServerRecord, ServerStatus } from './model.js';

/** Nova's vm_state for each status this cloud stores. */
const VM_STATES: Record<ServerStatus, string> = {
  BUILD: 'building',
  ACTIVE: 'active',
  SHUTOFF: 'stopped',
  REBOOT: 'active',
  HARD_REBOOT: 'active',
  MIGRATING: 'active',
  ERROR: 'error',
  DELETED: 'deleted',
};

/** Nova's vm_state of a record (`building`, `active`, `stopped`, `error`...). */
export function vmStateOf(record: ServerRecord): string {
  return VM_STATES[record.status];
}

/** Nova's task_state of a record; a hard reboot shows as `rebooting_hard`, as in Nova. */
export function taskStateOf(record: ServerRecord): string | null {
  if (record.task === 'rebooting' && record.status === 'HARD_REBOOT') return 'rebooting_hard';
  return record.task;
}

/** Nova's statuses that show `progress`. */
const PROGRESS_STATUSES = new Set<ServerStatus>(['BUILD', 'MIGRATING']);

/** What the view needs besides the record: who asks, at which version, and the network names. */
export interface ServerViewContext {
  base: string;
  version: Microversion;
  admin: boolean;
  /** The network state, for network names and the ports' security groups. */
  network: VpcSnapshot;
  /** The server groups each server is in (2.71). */
  groupsOf(serverId: string): string[];
  /** The inventory name of a host id (OS-EXT-SRV-ATTR:hypervisor_hostname). */
  hostName(hostId: string): string;
}

/** Nova's `hostId`: an opaque per-project hash of the host, so a project can tell co-located servers apart. */
export function hostIdHash(projectId: string, host: string | undefined): string {
  if (!host) return '';
  return createHash('sha224').update(`${projectId}${host}`).digest('hex');
}

function links(base: string, id: string): Record<string, string>[] {
  return [
    { rel: 'self', href: `${base}/compute/v2.1/servers/${id}` },
    { rel: 'bookmark', href: `${base}/compute/servers/${id}` },
  ];
}

/** `GET /servers` (no detail): id, name and links. */
export function serverSummaryJson(r: ServerRecord, base: string): Record<string, unknown> {
  return { id: r.id, name: r.name, links: links(base, r.id) };
}

/** Addresses by network name, with Nova's extension keys. */
export function addressesOf(r: ServerRecord, network: VpcSnapshot): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const p of r.ports) {
    const name = network.networks.find((n) => n.id === p.networkId)?.name || p.networkId;
    const list = out[name] ?? [];
    out[name] = list;
    list.push({ addr: p.ip, version: 4, 'OS-EXT-IPS:type': 'fixed', 'OS-EXT-IPS-MAC:mac_addr': p.mac });
    // A floating IP associated with the port shows under the same network, as Nova shows it.
    for (const f of network.floatingIps)
      if (f.portId === p.portId)
        out[name].push({
          addr: f.ip,
          version: 4,
          'OS-EXT-IPS:type': 'floating',
          'OS-EXT-IPS-MAC:mac_addr': p.mac,
        });
  }
  return out;
}

/** The names of the security groups on the server's ports (Nova lists them once each). */
export function securityGroupsOf(r: ServerRecord, network: VpcSnapshot): { name: string }[] {
  const names = new Set<string>();
  for (const p of r.ports) {
    const port = network.ports.find((x) => x.id === p.portId);
    for (const g of port?.securityGroups ?? [])
      names.add(network.securityGroups.find((s) => s.id === g)?.name ?? g);
  }
  return [...names].map((name) => ({ name }));
}

/** A server as `GET /servers/{id}` and `GET /servers/detail` show it. */
export function serverJson(r: ServerRecord, ctx: ServerViewContext): Record<string, unknown> {
  const v = ctx.version;
  const flavor = v.atLeast('2.47')
    ? {
        vcpus: r.flavor.vcpus,
        ram: r.flavor.ramMiB,
        disk: r.flavor.diskGiB,
        ephemeral: 0,
        swap: 0,
        original_name: r.flavor.name,
        extra_specs: {},
      }
    : { id: r.flavorId, links: [{ rel: 'bookmark', href: `${ctx.base}/compute/flavors/${r.flavorId}` }] };
  const out: Record<string, unknown> = {
    id: r.id,
    name: r.name,
    status: r.status,
    tenant_id: r.projectId,
    user_id: r.userId,
    metadata: r.metadata,
    hostId: hostIdHash(r.projectId, r.host),
    image: { id: r.imageId, links: [{ rel: 'bookmark', href: `${ctx.base}/compute/images/${r.imageId}` }] },
    flavor,
    created: r.created,
    updated: r.updated,
    addresses: addressesOf(r, ctx.network),
    accessIPv4: '',
    accessIPv6: '',
    links: links(ctx.base, r.id),
    'OS-DCF:diskConfig': 'MANUAL',
    'OS-EXT-AZ:availability_zone': r.availabilityZone,
    config_drive: '',
    key_name: r.keyName ?? null,
    'OS-SRV-USG:launched_at': r.launchedAt ?? null,
    'OS-SRV-USG:terminated_at': null,
    'OS-EXT-STS:task_state': taskStateOf(r),
    'OS-EXT-STS:vm_state': vmStateOf(r),
    'OS-EXT-STS:power_state': r.powerState,
    'os-extended-volumes:volumes_attached': [],
  };
  const groups = securityGroupsOf(r, ctx.network);
  if (groups.length) out.security_groups = groups;
  if (PROGRESS_STATUSES.has(r.status)) out.progress = 0;
  if (r.fault && (r.status === 'ERROR' || r.status === 'DELETED')) out.fault = { ...r.fault };
  if (ctx.admin) {
    out['OS-EXT-SRV-ATTR:host'] = r.host ?? null;
    out['OS-EXT-SRV-ATTR:hypervisor_hostname'] = r.host ? ctx.hostName(r.host) : null;
    out['OS-EXT-SRV-ATTR:instance_name'] = `instance-${r.id.slice(0, 8)}`;
    if (v.atLeast('2.3')) {
      Object.assign(out, {
        'OS-EXT-SRV-ATTR:reservation_id': `r-${r.id.slice(0, 8)}`,
        'OS-EXT-SRV-ATTR:launch_index': 0,
        'OS-EXT-SRV-ATTR:hostname': r.name.toLowerCase().replace(/[^a-z0-9-]+/g, '-'),
        'OS-EXT-SRV-ATTR:kernel_id': '',
        'OS-EXT-SRV-ATTR:ramdisk_id': '',
        'OS-EXT-SRV-ATTR:root_device_name': '/dev/vda',
      });
    }
    if (v.atLeast('2.16')) out.host_status = r.host ? 'UP' : '';
  }
  if (v.atLeast('2.9')) out.locked = false;
  if (v.atLeast('2.19')) out.description = null;
  if (v.atLeast('2.26')) out.tags = [];
  if (v.atLeast('2.63')) out.trusted_image_certificates = null;
  if (v.atLeast('2.71')) out.server_groups = ctx.groupsOf(r.id);
  if (v.atLeast('2.73')) out.locked_reason = null;
  return out;
}
