import { NubesError } from '@nubes/core';
import type { Argv } from '../ip/ip.js';
import type { Address, Link, Neighbor, Route } from '../ip/state.js';
import { ipFamily } from '../names.js';
import type { ParsedLinkSpec, ParsedTopology } from './spec.js';

/** What exists in one namespace, as far as planning needs to know. */
export interface NamespaceState {
  links: Link[];
  addresses: Address[];
  routes: (Route & { family: 4 | 6 })[];
  neighbors: Neighbor[];
}

/** What exists on the host: the named namespaces and the state of those the topology touches. */
export interface HostState {
  /** Names of existing network namespaces. */
  namespaces: ReadonlySet<string>;
  /** State per namespace; the key `''` is the root namespace. Missing means empty. */
  state: ReadonlyMap<string, NamespaceState>;
}

/** One `ip` or `bridge` invocation: many lines in one batch. */
export interface Batch {
  tool: 'ip' | 'bridge';
  /** Namespace to run in; undefined is the root namespace. */
  namespace?: string | undefined;
  lines: Argv[];
  /** Errors saying the object already exists are fine (FDB appends). */
  tolerateExisting?: boolean;
}

/** The commands that make a topology exist, and how to take them back. */
export interface TopologyPlan {
  /** Namespaces this plan creates. */
  createdNamespaces: string[];
  /** Links this plan creates, `{ namespace, name }` (a veth counts once, by its first end). */
  createdLinks: { namespace?: string | undefined; name: string }[];
  /** Batches to run in order. */
  batches: Batch[];
  /** Batches that undo everything the plan adds outside created namespaces, run with -force in order. */
  undo: Batch[];
}

const KERNEL_KIND: Record<ParsedLinkSpec['kind'], string> = {
  veth: 'veth',
  bridge: 'bridge',
  tap: 'tun',
  vlan: 'vlan',
  vxlan: 'vxlan',
  ifb: 'ifb',
};

/** The ifalias the library writes: `nubes:<owner>` or `nubes:<owner>:<alias>`. */
export function ownerAlias(owner: string, alias?: string): string {
  return alias ? `nubes:${owner}:${alias}` : `nubes:${owner}`;
}

/** Splits an ifalias written by {@link ownerAlias}; undefined owner when it is not one of ours. */
export function parseOwnerAlias(ifalias: string | undefined): { owner?: string; alias?: string } {
  if (!ifalias?.startsWith('nubes:')) return ifalias ? { alias: ifalias } : {};
  const [, owner, ...rest] = ifalias.split(':');
  return { ...(owner ? { owner } : {}), ...(rest.length ? { alias: rest.join(':') } : {}) };
}

const key = (namespace: string | undefined) => namespace ?? '';

function conflict(what: string, details: Record<string, unknown>): NubesError {
  return new NubesError('Conflict', `${what} exists with different settings`, { details });
}

function where(namespace: string | undefined): string {
  return namespace === undefined ? 'the root namespace' : `namespace ${namespace}`;
}

/** Routes are compared by destination, family and table; `default`, `0.0.0.0/0` and `::/0` are one thing. */
function routeKey(to: string, family: 4 | 6, table: string): string {
  const dst = to === '0.0.0.0/0' || to === '::/0' ? 'default' : to;
  return `${family}|${dst}|${table}`;
}

/** The family of a route spec: its destination's, else its gateway's, else IPv4. */
export function routeFamily(route: { to: string; via?: string | undefined }): 4 | 6 {
  if (route.to !== 'default') return ipFamily(route.to);
  return route.via ? ipFamily(route.via) : 4;
}

/** Renders `route add|del` argv for a route spec. */
export function routeArgv(
  verb: 'add' | 'del',
  r: {
    to: string;
    via?: string | undefined;
    dev?: string | undefined;
    table: 'main' | number;
    metric?: number | undefined;
  },
): Argv {
  // `default` alone means IPv4 to ip; an IPv6 default needs its explicit prefix.
  const to = r.to === 'default' && routeFamily(r) === 6 ? '::/0' : r.to;
  return [
    'route',
    verb,
    to,
    ...(r.via ? ['via', r.via] : []),
    ...(r.dev ? ['dev', r.dev] : []),
    ...(r.table !== 'main' ? ['table', String(r.table)] : []),
    ...(r.metric !== undefined ? ['metric', String(r.metric)] : []),
  ];
}

/** The `link add` argv for a link that is created inside its own namespace (everything but veth). */
function addArgv(link: Exclude<ParsedLinkSpec, { kind: 'veth' }>): Argv {
  switch (link.kind) {
    case 'bridge':
      return ['link', 'add', 'name', link.name, 'type', 'bridge', 'stp_state', link.stp ? '1' : '0'];
    case 'tap':
      return [
        'tuntap',
        'add',
        'dev',
        link.name,
        'mode',
        'tap',
        ...(link.user !== undefined ? ['user', String(link.user)] : []),
        ...(link.group !== undefined ? ['group', String(link.group)] : []),
      ];
    case 'vlan':
      return ['link', 'add', 'link', link.parent, 'name', link.name, 'type', 'vlan', 'id', String(link.id)];
    case 'vxlan':
      return [
        'link',
        'add',
        'name',
        link.name,
        'type',
        'vxlan',
        'id',
        String(link.vni),
        'dstport',
        String(link.dstport),
        ...(link.local ? ['local', link.local] : []),
        ...(link.dev ? ['dev', link.dev] : []),
        'nolearning',
      ];
    case 'ifb':
      return ['link', 'add', 'name', link.name, 'type', link.kind];
  }
}

/** Checks an existing link against the spec; throws `Conflict` when they differ in what cannot converge. */
function checkExisting(
  spec: { name: string; namespace?: string | undefined; mtu?: number | undefined; mac?: string | undefined },
  kind: ParsedLinkSpec['kind'],
  found: Link,
  owner: string,
  extra: Record<string, [unknown, unknown]> = {},
): void {
  const details = { namespace: spec.namespace, name: spec.name };
  const diffs: Record<string, [unknown, unknown]> = { ...extra };
  if (found.kind !== KERNEL_KIND[kind]) diffs.kind = [kind, found.kind];
  if (spec.mtu !== undefined && found.mtu !== spec.mtu) diffs.mtu = [spec.mtu, found.mtu];
  if (spec.mac !== undefined && found.mac !== spec.mac) diffs.mac = [spec.mac, found.mac];
  const tag = parseOwnerAlias(found.alias);
  if (tag.owner !== undefined && tag.owner !== owner) diffs.owner = [owner, tag.owner];
  const differing = Object.entries(diffs).filter(([, [want, have]]) => want !== have);
  if (differing.length) {
    throw conflict(`link ${spec.name} in ${where(spec.namespace)}`, {
      ...details,
      differences: Object.fromEntries(differing.map(([k, [want, have]]) => [k, { want, have }])),
    });
  }
}

interface End {
  namespace?: string | undefined;
  name: string;
  mtu?: number | undefined;
  mac?: string | undefined;
  up: boolean;
  master?: string | undefined;
  alias?: string | undefined;
}

/**
 * Plans the commands that make `topology` exist on a host in `current` state. Pure: it reads no
 * kernel state and runs nothing, so every decision (what to create, what already matches, what
 * conflicts) is tested without root.
 *
 * Batches come in three rounds: namespaces and veth pairs from the root namespace (a veth is
 * created with each end directly in its namespace), then other links inside their namespaces,
 * then per-namespace configuration (owner alias, MTU, MAC, bridge ports, up, addresses, routes,
 * neighbors), then VXLAN FDB entries.
 */
export function planTopology(topology: ParsedTopology, current: HostState, owner: string): TopologyPlan {
  const stateOf = (ns: string | undefined): NamespaceState =>
    current.state.get(key(ns)) ?? { links: [], addresses: [], routes: [], neighbors: [] };
  const findLink = (ns: string | undefined, name: string) => stateOf(ns).links.find((l) => l.name === name);

  const createdNamespaces = [...new Set(topology.namespaces)].filter((n) => !current.namespaces.has(n));
  const knownNamespaces = new Set([...current.namespaces, ...createdNamespaces]);
  const needNamespace = (ns: string | undefined, field: string) => {
    if (ns !== undefined && !knownNamespaces.has(ns)) {
      throw new NubesError('NotFound', `${field}: namespace ${JSON.stringify(ns)} does not exist`, {
        details: { field, namespace: ns },
      });
    }
  };

  const root: Argv[] = createdNamespaces.map((n) => ['netns', 'add', n]);
  const inside = new Map<string, Argv[]>();
  const configure = new Map<string, Argv[]>();
  const undo = new Map<string, Argv[]>();
  const push = (map: Map<string, Argv[]>, ns: string | undefined, line: Argv) => {
    const list = map.get(key(ns)) ?? [];
    list.push(line);
    map.set(key(ns), list);
  };
  const isNew = (ns: string | undefined) => ns !== undefined && createdNamespaces.includes(ns);
  const createdLinks: TopologyPlan['createdLinks'] = [];
  const fdb: Batch[] = [];
  const seen = new Set<string>();

  const configureEnd = (end: End, existing: Link | undefined) => {
    const set: string[] = [];
    const alias = ownerAlias(owner, end.alias);
    if (existing?.alias !== alias) set.push('alias', alias);
    if (end.mtu !== undefined && existing?.mtu !== end.mtu) set.push('mtu', String(end.mtu));
    if (end.mac !== undefined && existing?.mac !== end.mac) set.push('address', end.mac);
    if (set.length) push(configure, end.namespace, ['link', 'set', 'dev', end.name, ...set]);
    if (end.master !== undefined && existing?.master !== end.master) {
      push(configure, end.namespace, ['link', 'set', 'dev', end.name, 'master', end.master]);
    }
    if (end.up && !existing?.up) push(configure, end.namespace, ['link', 'set', 'dev', end.name, 'up']);
    if (!end.up && existing?.up) push(configure, end.namespace, ['link', 'set', 'dev', end.name, 'down']);
  };

  const claim = (ns: string | undefined, name: string, field: string) => {
    const id = `${key(ns)}/${name}`;
    if (seen.has(id)) {
      throw new NubesError('InvalidInput', `${field}: link ${name} is listed twice in ${where(ns)}`, {
        details: { field },
      });
    }
    seen.add(id);
  };

  topology.links.forEach((link, i) => {
    const field = `links.${i}`;
    needNamespace(link.namespace, `${field}.namespace`);
    claim(link.namespace, link.name, `${field}.name`);
    const existing = findLink(link.namespace, link.name);
    if (link.kind === 'veth') {
      needNamespace(link.peer.namespace, `${field}.peer.namespace`);
      claim(link.peer.namespace, link.peer.name, `${field}.peer.name`);
      const peer = findLink(link.peer.namespace, link.peer.name);
      if (existing || peer) {
        if (!existing || !peer) {
          throw conflict(`veth ${link.name}/${link.peer.name}`, {
            namespace: link.namespace,
            name: link.name,
            reason: `only the ${existing ? 'first end' : 'peer'} exists`,
          });
        }
        checkExisting(link, 'veth', existing, owner);
        checkExisting(link.peer, 'veth', peer, owner);
      } else {
        root.push([
          'link',
          'add',
          'name',
          link.name,
          ...(link.namespace !== undefined ? ['netns', link.namespace] : []),
          'type',
          'veth',
          'peer',
          'name',
          link.peer.name,
          ...(link.peer.namespace !== undefined ? ['netns', link.peer.namespace] : []),
        ]);
        createdLinks.push({ namespace: link.namespace, name: link.name });
        if (!isNew(link.namespace)) push(undo, link.namespace, ['link', 'del', 'dev', link.name]);
        else if (!isNew(link.peer.namespace))
          push(undo, link.peer.namespace, ['link', 'del', 'dev', link.peer.name]);
      }
      configureEnd(link, existing);
      configureEnd({ ...link.peer, alias: link.alias }, peer);
      return;
    }
    if (existing) {
      const extra: Record<string, [unknown, unknown]> = {};
      if (link.kind === 'bridge') extra.stp = [link.stp, existing.bridge?.stp];
      if (link.kind === 'vlan') extra.vlanId = [link.id, existing.vlan?.id];
      if (link.kind === 'vxlan') {
        extra.vni = [link.vni, existing.vxlan?.vni];
        extra.dstport = [link.dstport, existing.vxlan?.port];
        extra.learning = [false, existing.vxlan?.learning];
        if (link.local) extra.local = [link.local, existing.vxlan?.local];
      }
      if (existing.kind === KERNEL_KIND[link.kind]) checkExisting(link, link.kind, existing, owner, extra);
      else checkExisting(link, link.kind, existing, owner);
    } else {
      push(inside, link.namespace, addArgv(link));
      createdLinks.push({ namespace: link.namespace, name: link.name });
      if (!isNew(link.namespace)) push(undo, link.namespace, ['link', 'del', 'dev', link.name]);
    }
    configureEnd(link, existing);
    if (link.kind === 'vxlan' && link.remotes.length) {
      fdb.push({
        tool: 'bridge',
        namespace: link.namespace,
        tolerateExisting: true,
        lines: link.remotes.map((dst) => [
          'fdb',
          'append',
          '00:00:00:00:00:00',
          'dev',
          link.name,
          'dst',
          dst,
        ]),
      });
    }
  });

  // A namespace is useless for most programs without loopback, so new ones get lo up.
  for (const ns of createdNamespaces) push(configure, ns, ['link', 'set', 'dev', 'lo', 'up']);

  topology.addresses.forEach((a, i) => {
    needNamespace(a.namespace, `addresses.${i}.namespace`);
    const address = a.cidr.split('/')[0] as string;
    const found = stateOf(a.namespace).addresses.find((x) => x.dev === a.dev && x.address === address);
    if (found) {
      if (found.cidr !== a.cidr)
        throw conflict(`address ${address} on ${a.dev}`, { want: a.cidr, have: found.cidr });
      return;
    }
    // IPv6 duplicate address detection would leave the address unusable for a second or two.
    const nodad = ipFamily(a.cidr) === 6 ? ['nodad'] : [];
    push(configure, a.namespace, ['address', 'add', a.cidr, 'dev', a.dev, ...nodad]);
    if (!isNew(a.namespace)) push(undo, a.namespace, ['address', 'del', a.cidr, 'dev', a.dev]);
  });

  topology.routes.forEach((r, i) => {
    needNamespace(r.namespace, `routes.${i}.namespace`);
    const family = routeFamily(r);
    const want = routeKey(r.to, family, String(r.table));
    const found = stateOf(r.namespace).routes.find((x) => routeKey(x.to, x.family, x.table) === want);
    if (found) {
      const same = found.via === r.via && (r.dev === undefined || found.dev === r.dev);
      if (!same)
        throw conflict(`route ${r.to} (table ${r.table})`, { want: { via: r.via, dev: r.dev }, have: found });
      return;
    }
    push(configure, r.namespace, routeArgv('add', r));
    if (!isNew(r.namespace)) push(undo, r.namespace, routeArgv('del', r));
  });

  topology.neighbors.forEach((n, i) => {
    needNamespace(n.namespace, `neighbors.${i}.namespace`);
    const found = stateOf(n.namespace).neighbors.find((x) => x.dev === n.dev && x.address === n.address);
    if (found?.lladdr === n.lladdr && found.state.includes('PERMANENT')) return;
    if (found?.state.includes('PERMANENT') && found.lladdr !== n.lladdr) {
      throw conflict(`neighbor ${n.address} on ${n.dev}`, { want: n.lladdr, have: found.lladdr });
    }
    push(configure, n.namespace, [
      'neigh',
      'replace',
      n.address,
      'lladdr',
      n.lladdr,
      'dev',
      n.dev,
      'nud',
      'permanent',
    ]);
    if (!isNew(n.namespace)) push(undo, n.namespace, ['neigh', 'del', n.address, 'dev', n.dev]);
  });

  const toBatches = (map: Map<string, Argv[]>): Batch[] =>
    [...map].map(([ns, lines]) => ({ tool: 'ip' as const, namespace: ns === '' ? undefined : ns, lines }));
  const batches: Batch[] = [
    ...(root.length ? [{ tool: 'ip' as const, lines: root }] : []),
    ...toBatches(inside),
    ...toBatches(configure),
    ...fdb,
  ];
  const undoBatches = toBatches(undo).map((b) => ({ ...b, lines: [...b.lines].reverse() }));
  return { createdNamespaces, createdLinks, batches, undo: undoBatches };
}
