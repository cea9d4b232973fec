/**
 * Typed views of iproute2's JSON output (`ip -json`). Parsing is pure, so it is tested on
 * captured output without root.
 */

/** A network interface as the kernel reports it. */
export interface Link {
  /** Interface name. */
  name: string;
  /** Interface index in its namespace. */
  index: number;
  /** `veth`, `bridge`, `tun` (tap devices), `vxlan`, `vlan`, `ifb`, `loopback`, ... or `device` for plain hardware. */
  kind: string;
  /** MTU in bytes. */
  mtu: number;
  /** MAC address, lower case. */
  mac: string;
  /** Administratively up (the UP flag). */
  up: boolean;
  /** Operational state (`UP`, `DOWN`, `UNKNOWN`, `LOWERLAYERDOWN`). */
  operState: string;
  /** ifalias, where the library keeps its owner tag. */
  alias?: string;
  /** The bridge this interface is a port of. */
  master?: string;
  /** Bridge settings when `kind` is `bridge`. */
  bridge?: { stp: boolean };
  /** VXLAN settings when `kind` is `vxlan`. */
  vxlan?: { vni: number; local?: string; port: number; learning: boolean };
  /** VLAN settings when `kind` is `vlan`. */
  vlan?: { id: number };
  /** Tap settings when `kind` is `tun` and the device is a tap. */
  tap?: { user?: string; group?: string };
}

/** An address on an interface. */
export interface Address {
  /** Interface name. */
  dev: string;
  /** 4 or 6. */
  family: 4 | 6;
  /** The address alone. */
  address: string;
  /** Prefix length. */
  prefixLength: number;
  /** `address/prefixLength`. */
  cidr: string;
  /** `global`, `link`, `host`. */
  scope: string;
}

/** A route. */
export interface Route {
  /** Destination CIDR, or `default`. */
  to: string;
  /** Gateway. */
  via?: string;
  /** Output interface. */
  dev?: string;
  /** Routing table: `main`, `local` or a number as a string. */
  table: string;
  /** `unicast`, `local`, `broadcast`, `blackhole`, ... */
  type: string;
  /** `kernel`, `boot`, `static`, ... */
  protocol: string;
  /** Route metric (IPv6 always has one). */
  metric?: number;
}

/** A neighbor (ARP / NDP) entry. */
export interface Neighbor {
  /** Interface name. */
  dev: string;
  /** IP address. */
  address: string;
  /** Link-layer address, when known. */
  lladdr?: string;
  /** Kernel NUD states, e.g. `['PERMANENT']`. */
  state: string[];
}

interface RawLink {
  ifindex: number;
  ifname: string;
  flags?: string[];
  mtu: number;
  operstate?: string;
  link_type?: string;
  address?: string;
  ifalias?: string;
  master?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

/** Parses `ip -json -details link show`. */
export function parseLinks(raw: readonly unknown[]): Link[] {
  return (raw as RawLink[]).map((r) => {
    const kind = r.linkinfo?.info_kind ?? (r.link_type === 'loopback' ? 'loopback' : 'device');
    const data = r.linkinfo?.info_data ?? {};
    const link: Link = {
      name: r.ifname,
      index: r.ifindex,
      kind,
      mtu: r.mtu,
      mac: (r.address ?? '').toLowerCase(),
      up: (r.flags ?? []).includes('UP'),
      operState: r.operstate ?? 'UNKNOWN',
    };
    if (r.ifalias) link.alias = r.ifalias;
    if (r.master) link.master = r.master;
    if (kind === 'bridge') link.bridge = { stp: Number(data.stp_state ?? 0) !== 0 };
    if (kind === 'vxlan') {
      link.vxlan = {
        vni: Number(data.id),
        port: Number(data.port ?? 0),
        learning: Boolean(data.learning),
        ...(typeof data.local === 'string' ? { local: data.local } : {}),
      };
    }
    if (kind === 'vlan') link.vlan = { id: Number(data.id) };
    if (kind === 'tun' && data.type === 'tap') {
      link.tap = {
        ...(typeof data.user === 'string' ? { user: data.user } : {}),
        ...(typeof data.group === 'string' ? { group: data.group } : {}),
      };
    }
    return link;
  });
}

interface RawAddrLink {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

/** Parses `ip -json address show`. */
export function parseAddresses(raw: readonly unknown[]): Address[] {
  return (raw as RawAddrLink[]).flatMap((link) =>
    (link.addr_info ?? []).map((a) => ({
      dev: link.ifname,
      family: a.family === 'inet6' ? (6 as const) : (4 as const),
      address: a.local,
      prefixLength: a.prefixlen,
      cidr: `${a.local}/${a.prefixlen}`,
      scope: a.scope ?? 'global',
    })),
  );
}

interface RawRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  table?: string;
  type?: string;
  protocol?: string;
  metric?: number;
}

/** Parses `ip -json route show table all`. */
export function parseRoutes(raw: readonly unknown[]): Route[] {
  return (raw as RawRoute[]).map((r) => {
    const route: Route = {
      to: r.dst,
      table: r.table ?? 'main',
      type: r.type ?? 'unicast',
      protocol: r.protocol ?? 'boot',
    };
    if (r.gateway) route.via = r.gateway;
    if (r.dev) route.dev = r.dev;
    if (r.metric !== undefined) route.metric = r.metric;
    return route;
  });
}

interface RawNeighbor {
  dst: string;
  dev: string;
  lladdr?: string;
  state?: string[];
}

/** Parses `ip -json neighbor show`. */
export function parseNeighbors(raw: readonly unknown[]): Neighbor[] {
  return (raw as RawNeighbor[]).map((n) => ({
    dev: n.dev,
    address: n.dst,
    ...(n.lladdr ? { lladdr: n.lladdr.toLowerCase() } : {}),
    state: n.state ?? [],
  }));
}
