import { createHash } from 'node:crypto';
import type { Link, Neighbor } from '../ip/state.js';
import {
  digest,
  type FilteredPort,
  type FilterMode,
  type HostFilter,
  type RenderedRuleset,
  renderHostFilter,
  replaceTables,
} from '../secgroups/render.js';
import { ownerAlias, parseOwnerAlias } from '../topology/plan.js';
import type { LinkSpec, Topology } from '../topology/spec.js';
import { parseIpv4Cidr } from '../vpc/ipv4.js';
import type { NetworkRecord, SubnetRecord, VpcSnapshot } from '../vpc/model.js';

/**
 * What one host's kernel should hold, computed from a Store snapshot by pure functions, and the
 * difference to what it holds: the agent only runs the result.
 */

/** Where and as whom an agent plans. */
export interface HostContext {
  /** The host name ports and routers are scheduled to. */
  host: string;
  /** Owner tag of everything the agent creates (namespaces `<owner>-...`, links, nft tables). */
  owner: string;
  /** The namespace that plays the host's root namespace (simulated hosts); undefined is the real root. */
  hostNamespace?: string | undefined;
  mode: FilterMode;
}

/** Device names on a host, derived from ids so every agent run finds the same ones again. */
export const names = {
  bridge: (vni: number) => `nbr${vni}`,
  vxlan: (vni: number) => `nvx${vni}`,
  hostPort: (portId: string) => `tp${portId.slice(0, 12)}`,
  routerInterface: (portId: string) => `qr-${portId.slice(0, 11)}`,
  routerGateway: (portId: string) => `qg-${portId.slice(0, 11)}`,
  routerNamespace: (owner: string, routerId: string) => `${owner}-r-${routerId.slice(0, 12)}`,
  filterTable: (owner: string) => `nubes-${owner}-sg`,
  natTable: (owner: string) => `nubes-${owner}-nat`,
};

/** One instance port on this host: what to apply when its fingerprint is not on the host-side link yet. */
export interface DesiredPort {
  id: string;
  /** Host-side device (veth end or tap) in the host namespace. */
  device: string;
  bridge: string;
  /** Digest of everything that shapes the port's wiring; written into the alias once wired. */
  fingerprint: string;
  topology: Topology;
}

/** A router namespace on this host. */
export interface DesiredRouter {
  id: string;
  namespace: string;
  topology: Topology;
  /** Addresses (`dev cidr`) that belong in the namespace; others on qr-/qg- devices are removed. */
  addresses: { dev: string; cidr: string }[];
  nat: RenderedRuleset;
}

/** Everything one host should hold. */
export interface DesiredHost {
  /** Bridges and VXLAN devices of networks with a port here. */
  fabric: Topology;
  bridges: string[];
  vxlans: string[];
  ports: DesiredPort[];
  routers: DesiredRouter[];
  /** Unicast FDB entries to remote ports: `self` on the VXLAN device and `master` on the bridge. */
  fdb: { vxlan: string; mac: string; dst: string }[];
  /** Neighbor entries on the bridge that answer ARP for remote addresses (ARP suppression). */
  neighbors: { bridge: string; ip: string; mac: string }[];
  filter: RenderedRuleset;
  /** Namespaces the agent owns that should exist. */
  namespaces: string[];
}

function prefixOf(subnet: SubnetRecord): number {
  return parseIpv4Cidr(subnet.cidr)?.prefix ?? 32;
}

function hashOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 12);
}

/**
 * Computes what `ctx.host` should hold for a snapshot. Pure: no kernel and no Store, so every decision
 * (which networks are local, which remote MACs to program, the rulesets) is tested without root.
 */
export function planHost(snap: VpcSnapshot, ctx: HostContext): DesiredHost {
  const hostNs = ctx.hostNamespace;
  const self = snap.hosts.find((h) => h.name === ctx.host);
  const networkById = new Map(snap.networks.map((n) => [n.id, n]));
  const subnetById = new Map(snap.subnets.map((s) => [s.id, s]));
  const local = snap.ports.filter((p) => p.host === ctx.host);
  const localNetworks = [...new Set(local.map((p) => p.networkId))]
    .map((id) => networkById.get(id))
    .filter((n): n is NetworkRecord => n !== undefined)
    .sort((a, b) => a.vni - b.vni);

  const fabricLinks: LinkSpec[] = [];
  for (const n of localNetworks) {
    fabricLinks.push({
      kind: 'bridge',
      name: names.bridge(n.vni),
      namespace: hostNs,
      mtu: n.mtu,
      alias: 'fabric',
    });
    if (self) {
      fabricLinks.push({
        kind: 'vxlan',
        name: names.vxlan(n.vni),
        namespace: hostNs,
        vni: n.vni,
        local: self.underlayIp,
        ...(self.underlayDev ? { dev: self.underlayDev } : {}),
        mtu: n.mtu,
        master: names.bridge(n.vni),
        alias: 'fabric',
      });
    }
  }

  const ports: DesiredPort[] = [];
  const namespaces = new Set<string>();
  for (const port of local.filter((p) => p.owner.kind === 'instance' && p.device)) {
    const network = networkById.get(port.networkId);
    const device = port.device;
    if (!network || !device) continue;
    const bridge = names.bridge(network.vni);
    const hostDev = names.hostPort(port.id);
    let topology: Topology;
    if (device.kind === 'tap') {
      topology = {
        links: [
          {
            kind: 'tap',
            name: device.name,
            namespace: hostNs,
            mtu: network.mtu,
            master: bridge,
            alias: 'pending',
          },
        ],
      };
    } else {
      if (device.namespace.startsWith(`${ctx.owner}-`)) namespaces.add(device.namespace);
      const fixed = port.fixedIps.flatMap((f) => {
        const subnet = subnetById.get(f.subnetId);
        return subnet ? [{ ip: f.ip, subnet }] : [];
      });
      const gateway = fixed.find((f) => f.subnet.gateway !== null)?.subnet.gateway;
      topology = {
        namespaces: device.namespace.startsWith(`${ctx.owner}-`) ? [device.namespace] : [],
        links: [
          {
            kind: 'veth',
            name: hostDev,
            namespace: hostNs,
            mtu: network.mtu,
            master: bridge,
            alias: 'pending',
            peer: { name: device.name, namespace: device.namespace, mtu: network.mtu, mac: port.mac },
          },
        ],
        addresses: fixed.map((f) => ({
          namespace: device.namespace,
          dev: device.name,
          cidr: `${f.ip}/${prefixOf(f.subnet)}`,
        })),
        routes: [
          ...(gateway
            ? [{ namespace: device.namespace, to: 'default', via: gateway, dev: device.name }]
            : []),
          ...fixed.flatMap((f) =>
            f.subnet.hostRoutes.map((r) => ({
              namespace: device.namespace,
              to: r.destination,
              via: r.nexthop,
              dev: device.name,
            })),
          ),
        ],
      };
    }
    const devName = device.kind === 'tap' ? device.name : hostDev;
    ports.push({ id: port.id, device: devName, bridge, fingerprint: hashOf(topology), topology });
  }

  const routers: DesiredRouter[] = [];
  for (const router of snap.routers.filter((r) => r.host === ctx.host)) {
    const ns = names.routerNamespace(ctx.owner, router.id);
    namespaces.add(ns);
    const links: LinkSpec[] = [];
    const addresses: { namespace: string; dev: string; cidr: string }[] = [];
    const routes: NonNullable<Topology['routes']> = [];
    const internal: string[] = [];
    const plug = (portId: string, inner: string) => {
      const port = snap.ports.find((p) => p.id === portId);
      const network = port && networkById.get(port.networkId);
      if (!port || !network) return undefined;
      links.push({
        kind: 'veth',
        name: names.hostPort(port.id),
        namespace: hostNs,
        mtu: network.mtu,
        master: names.bridge(network.vni),
        alias: 'router',
        peer: { name: inner, namespace: ns, mtu: network.mtu, mac: port.mac },
      });
      for (const f of port.fixedIps) {
        const subnet = subnetById.get(f.subnetId);
        if (subnet) addresses.push({ namespace: ns, dev: inner, cidr: `${f.ip}/${prefixOf(subnet)}` });
      }
      return port;
    };
    for (const portId of router.interfaces) {
      const port = plug(portId, names.routerInterface(portId));
      for (const f of port?.fixedIps ?? []) {
        const subnet = subnetById.get(f.subnetId);
        if (subnet) internal.push(subnet.cidr);
      }
    }
    const nat: string[] = [];
    const dnat: string[] = [];
    if (router.gatewayPortId) {
      const qg = names.routerGateway(router.gatewayPortId);
      const gw = plug(router.gatewayPortId, qg);
      const gwIp = gw?.fixedIps[0];
      const gwSubnet = gwIp && subnetById.get(gwIp.subnetId);
      if (gwSubnet?.gateway) routes.push({ namespace: ns, to: 'default', via: gwSubnet.gateway, dev: qg });
      for (const fip of snap.floatingIps.filter((f) => f.routerId === router.id && f.fixedIp)) {
        addresses.push({ namespace: ns, dev: qg, cidr: `${fip.ip}/32` });
        dnat.push(`    ip daddr ${fip.ip} dnat ip to ${fip.fixedIp}`);
        nat.push(`    oifname "${qg}" ip saddr ${fip.fixedIp} snat ip to ${fip.ip}`);
      }
      if (router.snat && gwIp && internal.length)
        nat.push(`    oifname "${qg}" ip saddr { ${internal.join(', ')} } snat ip to ${gwIp.ip}`);
    }
    const body = [
      '  chain prerouting {',
      '    type nat hook prerouting priority -100; policy accept;',
      ...dnat,
      '  }',
      '  chain postrouting {',
      '    type nat hook postrouting priority 100; policy accept;',
      ...nat,
      '  }',
    ];
    const natName = `${names.natTable(ctx.owner)}-${digest(body.join('\n'))}`;
    routers.push({
      id: router.id,
      namespace: ns,
      topology: { namespaces: [ns], links, addresses, routes },
      addresses: addresses.map(({ dev, cidr }) => ({ dev, cidr })),
      nat: replaceTables([{ family: 'ip', name: natName, body }]),
    });
  }

  // Remote ports on local networks: their MAC behind the remote host's VTEP, their IPs answered locally.
  const hostIp = new Map(snap.hosts.map((h) => [h.name, h.underlayIp]));
  const localVnis = new Map(localNetworks.map((n) => [n.id, n.vni]));
  const fdb: DesiredHost['fdb'] = [];
  const neighbors: DesiredHost['neighbors'] = [];
  for (const port of snap.ports) {
    const vni = localVnis.get(port.networkId);
    // An unbound port is on no host yet: there is no tunnel to program for it.
    const dst = port.host === undefined ? undefined : hostIp.get(port.host);
    if (vni === undefined || port.host === ctx.host || dst === undefined) continue;
    fdb.push({ vxlan: names.vxlan(vni), mac: port.mac, dst });
    for (const f of port.fixedIps) neighbors.push({ bridge: names.bridge(vni), ip: f.ip, mac: port.mac });
    if (port.owner.kind === 'routerGateway') {
      // Floating IPs live on the router's gateway port, so remote hosts answer ARP for them with its MAC.
      const routerId = port.owner.routerId;
      for (const fip of snap.floatingIps.filter((f) => f.routerId === routerId && f.fixedIp))
        neighbors.push({ bridge: names.bridge(vni), ip: fip.ip, mac: port.mac });
    }
  }

  const filtered: FilteredPort[] = local
    .filter((p) => p.owner.kind === 'instance' && p.portSecurity && p.device)
    .map((p) => ({
      id: p.id,
      device: p.device?.kind === 'tap' ? p.device.name : names.hostPort(p.id),
      mac: p.mac,
      ips: p.fixedIps.map((f) => f.ip),
      groups: p.securityGroups,
    }));
  const members: Record<string, string[]> = {};
  for (const p of snap.ports)
    for (const g of p.securityGroups) members[g] = [...(members[g] ?? []), ...p.fixedIps.map((f) => f.ip)];
  const hostFilter: HostFilter = {
    ports: filtered,
    groups: Object.fromEntries(snap.securityGroups.map((g) => [g.id, { rules: g.rules }])),
    members,
    zones: localNetworks.map((n) => ({ bridge: names.bridge(n.vni), zone: n.vni & 0xffff })),
  };

  return {
    fabric: { links: fabricLinks },
    bridges: localNetworks.map((n) => names.bridge(n.vni)),
    vxlans: self ? localNetworks.map((n) => names.vxlan(n.vni)) : [],
    ports,
    routers,
    fdb,
    neighbors,
    // A host with no tenant network keeps no ruleset at all, so deleting everything leaves no table.
    filter: localNetworks.length
      ? renderHostFilter(hostFilter, ctx.mode, names.filterTable(ctx.owner))
      : { tables: [], text: '' },
    namespaces: [...namespaces].sort(),
  };
}

/** What an agent read from the kernel, as far as the diff needs it. */
export interface ActualHost {
  /** Named namespaces on the machine. */
  namespaces: string[];
  /** Links of the host namespace. */
  links: Link[];
  /** Neighbor entries of the host namespace. */
  neighbors: Neighbor[];
  /** FDB entries of the host namespace (`bridge -j fdb show`). */
  fdb: { mac: string; ifname: string; dst?: string; flags?: string[]; master?: string; state?: string }[];
  /** Bridge ports whose neigh_suppress is on. */
  suppressing: string[];
  /** nft tables (`family name`) of the host namespace. */
  tables: { family: string; name: string }[];
}

/** The changes that bring a host from {@link ActualHost} to {@link DesiredHost}. */
export interface HostChanges {
  /** Namespaces of the agent that nothing wants any more. */
  deleteNamespaces: string[];
  /** Owned links in the host namespace that nothing wants any more (deleting a veth end removes both). */
  deleteLinks: string[];
  /** Ports whose fingerprint is missing or stale: their topology is applied, then the fingerprint written. */
  applyPorts: DesiredPort[];
  fdbAdd: DesiredHost['fdb'];
  fdbDelete: { vxlan: string; mac: string; dst?: string; master: boolean }[];
  neighborAdd: DesiredHost['neighbors'];
  neighborDelete: { bridge: string; ip: string }[];
  /** VXLAN ports that need `neigh_suppress on`. */
  suppress: string[];
  /** `nft -f` text for the host filter, or undefined when the kernel already holds it. */
  filter?: string | undefined;
}

/** The fingerprint alias of a wired port. */
export function fingerprintAlias(owner: string, fingerprint: string): string {
  return ownerAlias(owner, `fp-${fingerprint}`);
}

/** Compares desired and actual host state. Pure. */
export function diffHost(desired: DesiredHost, actual: ActualHost, ctx: HostContext): HostChanges {
  const owned = actual.links.filter((l) => parseOwnerAlias(l.alias).owner === ctx.owner);
  const wantedLinks = new Set([
    ...desired.bridges,
    ...desired.vxlans,
    ...desired.ports.map((p) => p.device),
    ...desired.routers.flatMap((r) => (r.topology.links ?? []).map((l) => l.name)),
  ]);
  const deleteLinks = owned.filter((l) => !wantedLinks.has(l.name)).map((l) => l.name);
  const linkByName = new Map(actual.links.map((l) => [l.name, l]));
  const applyPorts = desired.ports.filter((p) => {
    const link = linkByName.get(p.device);
    return !(
      link &&
      link.alias === fingerprintAlias(ctx.owner, p.fingerprint) &&
      link.up &&
      link.master === p.bridge
    );
  });
  const wantedNs = new Set(desired.namespaces);
  const deleteNamespaces = actual.namespaces.filter(
    (n) => n.startsWith(`${ctx.owner}-`) && n !== ctx.hostNamespace && !wantedNs.has(n),
  );

  const vxlans = new Set(desired.vxlans);
  const fdbKey = (vxlan: string, mac: string) => `${vxlan}|${mac}`;
  const selfEntries = new Map<string, string | undefined>();
  const masterEntries = new Set<string>();
  for (const e of actual.fdb) {
    if (!vxlans.has(e.ifname) && !owned.some((l) => l.name === e.ifname && l.kind === 'vxlan')) continue;
    if (e.mac === '00:00:00:00:00:00') continue;
    if (e.flags?.includes('self') || e.dst !== undefined) selfEntries.set(fdbKey(e.ifname, e.mac), e.dst);
    else if (e.master !== undefined && e.state === 'static') masterEntries.add(fdbKey(e.ifname, e.mac));
  }
  const wantedFdb = new Map(desired.fdb.map((f) => [fdbKey(f.vxlan, f.mac), f]));
  const fdbAdd = desired.fdb.filter(
    (f) => selfEntries.get(fdbKey(f.vxlan, f.mac)) !== f.dst || !masterEntries.has(fdbKey(f.vxlan, f.mac)),
  );
  const fdbDelete: HostChanges['fdbDelete'] = [];
  const deleted = new Set(deleteLinks);
  for (const [k, dst] of selfEntries) {
    const [vxlan, mac] = k.split('|') as [string, string];
    if (!wantedFdb.has(k) && !deleted.has(vxlan))
      fdbDelete.push({ vxlan, mac, ...(dst ? { dst } : {}), master: false });
  }
  for (const k of masterEntries) {
    const [vxlan, mac] = k.split('|') as [string, string];
    if (!wantedFdb.has(k) && !deleted.has(vxlan)) fdbDelete.push({ vxlan, mac, master: true });
  }

  const bridges = new Set(desired.bridges);
  const neighKey = (bridge: string, ip: string) => `${bridge}|${ip}`;
  const present = new Map(
    actual.neighbors
      .filter((n) => bridges.has(n.dev) && n.state.includes('PERMANENT'))
      .map((n) => [neighKey(n.dev, n.address), n.lladdr]),
  );
  const wantedNeigh = new Set(desired.neighbors.map((n) => neighKey(n.bridge, n.ip)));
  const neighborAdd = desired.neighbors.filter((n) => present.get(neighKey(n.bridge, n.ip)) !== n.mac);
  const neighborDelete = [...present.keys()]
    .filter((k) => !wantedNeigh.has(k))
    .map((k) => {
      const [bridge, ip] = k.split('|') as [string, string];
      return { bridge, ip };
    });

  const suppressing = new Set(actual.suppressing);
  const suppress = desired.vxlans.filter((v) => !suppressing.has(v));
  const has = (t: { family: string; name: string }) =>
    actual.tables.some((a) => a.family === t.family && a.name === t.name);
  const filterPrefix = `${names.filterTable(ctx.owner)}-`;
  const stale = actual.tables.filter(
    (t) =>
      t.name.startsWith(filterPrefix) &&
      !desired.filter.tables.some((d) => d.family === t.family && d.name === t.name),
  );
  const filterCurrent = desired.filter.tables.every(has) && stale.length === 0;
  const filter = filterCurrent
    ? undefined
    : desired.filter.text + stale.map((t) => `delete table ${t.family} ${t.name}\n`).join('');

  return {
    deleteNamespaces,
    deleteLinks,
    applyPorts,
    fdbAdd,
    fdbDelete,
    neighborAdd,
    neighborDelete,
    suppress,
    filter,
  };
}
