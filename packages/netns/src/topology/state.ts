import type { Iproute } from '../ip/ip.js';
import { parseAddresses, parseLinks, parseNeighbors, parseRoutes } from '../ip/state.js';
import type { HostState, NamespaceState } from './plan.js';
import type { ParsedTopology } from './spec.js';

/** Names of the named network namespaces (`ip netns list`). */
export async function listNamespaceNames(ip: Iproute): Promise<string[]> {
  const list = await ip.ipJson<{ name: string }>(['netns', 'list']);
  return list.map((n) => n.name);
}

/** Reads links, addresses, routes (both families, all tables) and neighbors of one namespace. */
export async function readNamespaceState(
  ip: Iproute,
  namespace: string | undefined,
): Promise<NamespaceState> {
  const where = { namespace };
  const [links, addresses, routes4, routes6, neighbors] = await Promise.all([
    ip.ipJson(['-details', 'link', 'show'], where),
    ip.ipJson(['address', 'show'], where),
    ip.ipJson(['-4', 'route', 'show', 'table', 'all'], where),
    ip.ipJson(['-6', 'route', 'show', 'table', 'all'], where),
    ip.ipJson(['neigh', 'show'], where),
  ]);
  return {
    links: parseLinks(links),
    addresses: parseAddresses(addresses),
    routes: [
      ...parseRoutes(routes4).map((r) => ({ ...r, family: 4 as const })),
      ...parseRoutes(routes6).map((r) => ({ ...r, family: 6 as const })),
    ],
    neighbors: parseNeighbors(neighbors),
  };
}

/** The namespaces a topology touches, `undefined` being the root namespace. */
export function touchedNamespaces(topology: ParsedTopology): (string | undefined)[] {
  const all = new Set<string | undefined>();
  for (const l of topology.links) {
    all.add(l.namespace);
    if (l.kind === 'veth') all.add(l.peer.namespace);
  }
  for (const x of [...topology.addresses, ...topology.routes, ...topology.neighbors]) all.add(x.namespace);
  return [...all];
}

/** Reads the host state a topology plan needs: skips namespaces that do not exist yet (they are empty). */
export async function readHostState(ip: Iproute, topology: ParsedTopology): Promise<HostState> {
  const namespaces = new Set(await listNamespaceNames(ip));
  const state = new Map<string, NamespaceState>();
  const touched = touchedNamespaces(topology).filter((ns) => ns === undefined || namespaces.has(ns));
  await Promise.all(
    touched.map(async (ns) => {
      state.set(ns ?? '', await readNamespaceState(ip, ns));
    }),
  );
  return { namespaces, state };
}
