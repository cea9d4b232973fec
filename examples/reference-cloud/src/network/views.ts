/**
 * The JSON Neutron v2.0 answers with, built from a Vpc record and its side record; and the list query
 * (`?name=`, `?network_id=`, `fields=`, `limit`/`marker`) applied to those bodies, so every attribute a
 * client sees is also one it can filter on.
 */
import type {
  FloatingIpRecord,
  NetworkRecord,
  PortRecord,
  RouterRecord,
  SecurityGroupRecord,
  SecurityGroupRule,
  SubnetRecord,
  VpcSnapshot,
} from '@nubes/netns';
import { isoTime } from '../api/http.js';
import type { NeutronAttrs } from './records.js';

/** A JSON object as the API answers it. */
export type Body = Record<string, unknown>;

function standard(tenant: string, a: NeutronAttrs): Body {
  return {
    tenant_id: tenant,
    project_id: tenant,
    description: a.description,
    tags: [],
    created_at: isoTime(a.createdAt),
    updated_at: isoTime(a.updatedAt),
    revision_number: a.revision,
  };
}

/** A network; `admin` adds the provider attributes (Neutron shows them to admins only). */
export function networkView(n: NetworkRecord, a: NeutronAttrs, snap: VpcSnapshot, admin: boolean): Body {
  return {
    id: n.id,
    name: n.name,
    ...standard(n.tenant, a),
    admin_state_up: a.adminStateUp,
    status: 'ACTIVE',
    subnets: snap.subnets.filter((s) => s.networkId === n.id).map((s) => s.id),
    shared: n.shared === true,
    'router:external': n.external,
    mtu: n.mtu,
    port_security_enabled: a.portSecurity,
    availability_zone_hints: [],
    availability_zones: ['nova'],
    ipv4_address_scope: null,
    ipv6_address_scope: null,
    is_default: false,
    l2_adjacency: true,
    ...(admin
      ? {
          'provider:network_type': 'vxlan',
          'provider:physical_network': null,
          'provider:segmentation_id': n.vni,
        }
      : {}),
  };
}

/** A subnet (IPv4 only). */
export function subnetView(s: SubnetRecord, a: NeutronAttrs): Body {
  return {
    id: s.id,
    name: s.name,
    ...standard(s.tenant, a),
    network_id: s.networkId,
    ip_version: 4,
    cidr: s.cidr,
    gateway_ip: s.gateway,
    allocation_pools: s.allocationPools.map((p) => ({ start: p.start, end: p.end })),
    enable_dhcp: a.enableDhcp,
    dns_nameservers: [...s.dnsNameservers],
    host_routes: s.hostRoutes.map((r) => ({ destination: r.destination, nexthop: r.nexthop })),
    ipv6_ra_mode: null,
    ipv6_address_mode: null,
    subnetpool_id: null,
    service_types: [],
    segment_id: null,
  };
}

/** Neutron's `device_owner` and `device_id` of a port: router ports are the router's, whatever was stored. */
export function portDevice(p: PortRecord, a: NeutronAttrs): { owner: string; id: string } {
  if (p.owner.kind === 'routerInterface') return { owner: 'network:router_interface', id: p.owner.routerId };
  if (p.owner.kind === 'routerGateway') return { owner: 'network:router_gateway', id: p.owner.routerId };
  return { owner: a.deviceOwner, id: a.deviceId };
}

/**
 * A port. `status` is `ACTIVE` once bound to a host (the agent wires it there), `DOWN` before; `admin`
 * adds the `binding:` attributes Neutron shows to admins only.
 */
export function portView(p: PortRecord, a: NeutronAttrs, admin: boolean): Body {
  const device = portDevice(p, a);
  return {
    id: p.id,
    // The Vpc names router ports after their router; Neutron leaves them unnamed.
    name: p.owner.kind === 'instance' ? p.name : '',
    ...standard(p.owner.kind === 'routerGateway' ? '' : p.tenant, a),
    network_id: p.networkId,
    mac_address: p.mac,
    admin_state_up: a.adminStateUp,
    status: p.host !== undefined ? 'ACTIVE' : 'DOWN',
    device_id: device.id,
    device_owner: device.owner,
    fixed_ips: p.fixedIps.map((f) => ({ subnet_id: f.subnetId, ip_address: f.ip })),
    security_groups: [...p.securityGroups],
    port_security_enabled: p.portSecurity,
    allowed_address_pairs: [],
    extra_dhcp_opts: [],
    'binding:vnic_type': 'normal',
    ...(admin
      ? {
          'binding:host_id': p.host ?? '',
          'binding:vif_type': p.host !== undefined ? 'tap' : 'unbound',
          'binding:vif_details': {},
          'binding:profile': {},
        }
      : {}),
  };
}

/** A router with its gateway (`external_gateway_info`, null without one). */
export function routerView(r: RouterRecord, a: NeutronAttrs, snap: VpcSnapshot): Body {
  const gateway = r.gatewayPortId ? snap.ports.find((p) => p.id === r.gatewayPortId) : undefined;
  return {
    id: r.id,
    name: r.name,
    ...standard(r.tenant, a),
    admin_state_up: a.adminStateUp,
    status: 'ACTIVE',
    external_gateway_info: gateway
      ? {
          network_id: gateway.networkId,
          enable_snat: r.snat,
          external_fixed_ips: gateway.fixedIps.map((f) => ({ subnet_id: f.subnetId, ip_address: f.ip })),
        }
      : null,
    routes: [],
    distributed: false,
    ha: false,
    availability_zone_hints: [],
    availability_zones: ['nova'],
    flavor_id: null,
  };
}

/** A floating IP; `ACTIVE` while associated, `DOWN` otherwise, as Neutron's L3 agent reports it. */
export function floatingIpView(f: FloatingIpRecord, a: NeutronAttrs): Body {
  return {
    id: f.id,
    ...standard(f.tenant, a),
    floating_ip_address: f.ip,
    floating_network_id: f.networkId,
    router_id: f.routerId ?? null,
    port_id: f.portId ?? null,
    fixed_ip_address: f.fixedIp ?? null,
    status: f.portId ? 'ACTIVE' : 'DOWN',
    port_details: null,
    qos_policy_id: null,
    port_forwardings: [],
  };
}

/** A security group rule; Neutron prints the protocol as a string (`"6"` for a number). */
export function ruleView(group: SecurityGroupRecord, r: SecurityGroupRule, a: NeutronAttrs): Body {
  return {
    id: r.id,
    ...standard(group.tenant, a),
    security_group_id: group.id,
    direction: r.direction,
    ethertype: r.ethertype,
    protocol: r.protocol === undefined ? null : String(r.protocol),
    port_range_min: r.portRangeMin ?? null,
    port_range_max: r.portRangeMax ?? null,
    remote_ip_prefix: r.remoteIpPrefix ?? null,
    remote_group_id: r.remoteGroupId ?? null,
    remote_address_group_id: null,
  };
}

/** A security group with its rules. */
export function securityGroupView(
  g: SecurityGroupRecord,
  a: NeutronAttrs,
  ruleAttrs: (id: string) => NeutronAttrs,
): Body {
  return {
    id: g.id,
    name: g.name,
    ...standard(g.tenant, a),
    stateful: true,
    shared: false,
    security_group_rules: g.rules.map((r) => ruleView(g, r, ruleAttrs(r.id))),
  };
}

/** Query parameters that are not attribute filters. */
const NOT_FILTERS = new Set(['fields', 'limit', 'marker', 'sort_key', 'sort_dir', 'page_reverse', 'verbose']);

function matches(value: unknown, wanted: string): boolean {
  if (value === null || value === undefined) return wanted === '' || wanted.toLowerCase() === 'none';
  if (typeof value === 'boolean') return String(value) === wanted.toLowerCase();
  if (Array.isArray(value)) {
    // `fixed_ips=ip_address=10.0.0.3` and `fixed_ips=subnet_id=<id>` match one entry's attribute.
    const pair = /^(\w+)=(.*)$/.exec(wanted);
    return value.some((v) =>
      pair && v !== null && typeof v === 'object'
        ? String((v as Body)[pair[1] as string]) === pair[2]
        : String(v) === wanted,
    );
  }
  return String(value) === wanted;
}

/**
 * Applies a list request's query to the bodies: attribute filters (several values of one attribute match
 * any of them; an attribute the bodies do not have is ignored, as Neutron without filter validation does),
 * `marker` and `limit` (ids in order), then `fields`. Returns the page and whether more follow.
 */
export function applyQuery(items: Body[], query: URLSearchParams): { items: Body[]; more: boolean } {
  let out = items;
  for (const key of new Set(query.keys())) {
    if (NOT_FILTERS.has(key)) continue;
    const wanted = query.getAll(key);
    out = out.filter((item) => !(key in item) || wanted.some((w) => matches(item[key], w)));
  }
  out = [...out].sort((a, b) => String(a.id).localeCompare(String(b.id)));
  const marker = query.get('marker');
  if (marker) out = out.filter((item) => String(item.id) > marker);
  const limit = Number(query.get('limit'));
  let more = false;
  if (Number.isInteger(limit) && limit > 0 && out.length > limit) {
    out = out.slice(0, limit);
    more = true;
  }
  return { items: out.map((item) => project(item, query)), more };
}

/** Keeps only the `fields=` a request asked for (all of them when it asked for none). */
export function project(item: Body, query: URLSearchParams): Body {
  const fields = query.getAll('fields').flatMap((f) => f.split(','));
  if (fields.length === 0) return item;
  return Object.fromEntries(fields.filter((f) => f in item).map((f) => [f, item[f]]));
}
