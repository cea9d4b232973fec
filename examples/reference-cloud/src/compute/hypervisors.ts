/**
 * `os-hypervisors` and `os-availability-zone` from the scheduler's Inventory: every registered host is a
 * hypervisor (one compute node per host, as with libvirt), its zone is its `availabilityZone` or Nova's
 * default `nova`.
 */
import { createHash } from 'node:crypto';
import type { StoredHost } from '@nubes/scheduler';
import { usableResources } from '@nubes/scheduler';
import type { Microversion } from './microversion.js';

/** The zone of hosts registered without one: Nova's `default_availability_zone`. */
export const DEFAULT_ZONE = 'nova';

/** A host's availability zone. */
export function zoneOf(host: StoredHost['host']): string {
  return host.availabilityZone ?? DEFAULT_ZONE;
}

function digest(hostId: string): string {
  return createHash('sha1').update(`nubes-hypervisor:${hostId}`).digest('hex');
}

/**
 * The integer id Nova shows before 2.53, derived from the host id so it is stable across processes and
 * restarts without a counter in the Store.
 */
export function hypervisorIntId(hostId: string): number {
  return (Number.parseInt(digest(hostId).slice(0, 8), 16) % 2_000_000_000) + 1;
}

/** The UUID Nova shows from 2.53 (a name-based UUID of the host id, version 5 layout). */
export function hypervisorUuid(hostId: string): string {
  const h = digest(hostId);
  const variant = ((Number.parseInt(h.slice(16, 17), 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The hypervisor id as shown at `version`. */
export function hypervisorId(hostId: string, version: Microversion): number | string {
  return version.atLeast('2.53') ? hypervisorUuid(hostId) : hypervisorIntId(hostId);
}

/** Finds a host by any id a client may send: the 2.53 UUID, the older integer, or (as novaclient falls back) its name. */
export function findHypervisor(hosts: readonly StoredHost[], id: string): StoredHost | undefined {
  return hosts.find(
    (h) =>
      hypervisorUuid(h.host.id) === id || String(hypervisorIntId(h.host.id)) === id || h.host.name === id,
  );
}

/** A hypervisor as Nova shows it; `detail` adds the resources. */
export function hypervisorJson(
  stored: StoredHost,
  version: Microversion,
  options: { detail: boolean; hostIp?: string; servers?: { uuid: string; name: string }[] },
): Record<string, unknown> {
  const host = stored.host;
  const out: Record<string, unknown> = {
    id: hypervisorId(host.id, version),
    hypervisor_hostname: host.name,
    state: host.state === 'down' ? 'down' : 'up',
    status: host.state === 'disabled' ? 'disabled' : 'enabled',
  };
  if (options.detail) {
    const usable = usableResources(host);
    const cap = (r: string) => host.capacity[r] ?? 0;
    const used = (r: string) => host.allocated[r] ?? 0;
    // Nova's memory_mb_used counts the host's reserved memory as used.
    const memoryUsed = used('memoryMiB') + (host.reserved.memoryMiB ?? 0);
    const diskUsed = used('diskGiB') + (host.reserved.diskGiB ?? 0);
    Object.assign(out, {
      vcpus: cap('vcpus'),
      vcpus_used: used('vcpus'),
      memory_mb: cap('memoryMiB'),
      memory_mb_used: memoryUsed,
      free_ram_mb: (usable.memoryMiB ?? 0) - used('memoryMiB'),
      local_gb: cap('diskGiB'),
      local_gb_used: diskUsed,
      free_disk_gb: (usable.diskGiB ?? 0) - used('diskGiB'),
      disk_available_least: (usable.diskGiB ?? 0) - used('diskGiB'),
      running_vms: host.instances.length,
      current_workload: 0,
      hypervisor_type: 'QEMU',
      hypervisor_version: 7_002_000,
      host_ip: options.hostIp ?? '',
      service: { host: host.name, id: hypervisorId(host.id, version), disabled_reason: null },
      // 2.28 turned cpu_info from a JSON string into an object.
      cpu_info: version.atLeast('2.28') ? {} : '{}',
    });
  }
  if (options.servers && options.servers.length > 0) out.servers = options.servers;
  return out;
}

/** `GET /os-availability-zone[/detail]`: one entry per zone of the hosts (the default zone when there are none). */
export function availabilityZonesJson(
  hosts: readonly StoredHost[],
  detail: boolean,
  now: string,
): Record<string, unknown> {
  const zones = new Map<string, StoredHost[]>();
  for (const h of hosts) zones.set(zoneOf(h.host), [...(zones.get(zoneOf(h.host)) ?? []), h]);
  if (zones.size === 0) zones.set(DEFAULT_ZONE, []);
  const info = [...zones.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([zone, members]) => {
      const available = members.length === 0 || members.some((m) => m.host.state === 'enabled');
      const entry: Record<string, unknown> = { zoneName: zone, zoneState: { available }, hosts: null };
      if (detail) {
        const hostsJson: Record<string, unknown> = {};
        for (const m of members)
          hostsJson[m.host.name] = {
            'nova-compute': {
              available: m.host.state === 'enabled',
              active: m.host.state !== 'down',
              updated_at: now,
            },
          };
        entry.hosts = hostsJson;
      }
      return entry;
    });
  if (detail)
    info.push({
      zoneName: 'internal',
      zoneState: { available: true },
      hosts: {
        api: {
          'nova-conductor': { available: true, active: true, updated_at: now },
          'nova-scheduler': { available: true, active: true, updated_at: now },
        },
      },
    });
  return { availabilityZoneInfo: info };
}
