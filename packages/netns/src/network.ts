import { type ChildProcess, spawn } from 'node:child_process';
import {
  type CommandResult,
  type CommandRunner,
  commandRunner,
  invalidInput,
  type NubesError,
  notFound,
  parseInput,
} from '@nubes/core';
import { z } from 'zod';
import { Iproute, isMissingError } from './ip/ip.js';
import type { Address, Link, Neighbor, Route } from './ip/state.js';
import {
  interfaceNameSchema,
  ipAddressSchema,
  macSchema,
  namespaceNameSchema,
  ownerSchema,
} from './names.js';
import { applyQos, clearQosOf, type QosStats, readQosStats } from './tc/apply.js';
import { type QosSpec, qosSchema } from './tc/spec.js';
import {
  type Batch,
  ownerAlias,
  parseOwnerAlias,
  planTopology,
  routeArgv,
  type TopologyPlan,
} from './topology/plan.js';
import {
  type AddressSpec,
  addressSpecSchema,
  type LinkSpec,
  linkSpecSchema,
  type NeighborSpec,
  neighborSpecSchema,
  type ParsedTopology,
  type RouteSpec,
  routeSpecSchema,
  type Topology,
  topologySchema,
} from './topology/spec.js';
import { listNamespaceNames, readHostState, readNamespaceState } from './topology/state.js';

/** Options of a {@link NetworkHost}. */
export interface NetworkHostOptions {
  /**
   * Owner tag: namespaces this client creates must be named `<owner>-...`, links it creates carry
   * `nubes:<owner>` in their alias, and {@link NetworkHost.gc} removes exactly those. Default `nubes`.
   */
  owner?: string;
  /** Runs `ip`, `tc`, `bridge`, `sysctl`. Wrap it for sudo, logging or a remote host. */
  runner?: CommandRunner;
  /** Run each planned line as its own `ip` call instead of one `ip -batch` per namespace (for comparison). */
  batch?: boolean;
}

/** What {@link NetworkHost.apply} did. */
export interface ApplyResult {
  /** Namespaces created (existing ones are not listed). */
  createdNamespaces: string[];
  /** Links created. */
  createdLinks: { namespace?: string | undefined; name: string }[];
  /** Host commands run (a batch counts once). */
  commands: number;
}

/** Options for running a command inside a namespace. */
export interface ExecOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** Kill after this many milliseconds (default 60 s). */
  timeoutMs?: number;
  /** Standard input. */
  input?: string | Uint8Array;
  /** Exit codes that count as success (default `[0]`). */
  okExitCodes?: number[];
}

/** Per-namespace sysctls the library manages. */
export interface NamespaceSysctls {
  /** net.ipv4.ip_forward */
  ipForward?: boolean;
  /** net.ipv6.conf.all.forwarding */
  ipv6Forward?: boolean;
  /** net.ipv4.conf.all.rp_filter and .default.rp_filter: 0 off, 1 strict, 2 loose. */
  rpFilter?: 0 | 1 | 2;
  /** net.ipv4.conf.all.proxy_arp */
  proxyArp?: boolean;
}

const SYSCTL_KEYS = {
  ipForward: ['net.ipv4.ip_forward'],
  ipv6Forward: ['net.ipv6.conf.all.forwarding'],
  rpFilter: ['net.ipv4.conf.all.rp_filter', 'net.ipv4.conf.default.rp_filter'],
  proxyArp: ['net.ipv4.conf.all.proxy_arp'],
} as const;

const sysctlsSchema = z
  .object({
    ipForward: z.boolean().optional(),
    ipv6Forward: z.boolean().optional(),
    rpFilter: z.union([z.literal(0), z.literal(1), z.literal(2)]).optional(),
    proxyArp: z.boolean().optional(),
  })
  .strict();

const argvSchema = z.array(z.string()).min(1, 'must name a program');
const linkRefSchema = z.object({ namespace: namespaceNameSchema.optional(), name: interfaceNameSchema });
const linkChangeSchema = z
  .object({
    namespace: namespaceNameSchema.optional(),
    name: interfaceNameSchema,
    up: z.boolean().optional(),
    mtu: z.number().int().min(68).max(65535).optional(),
    mac: macSchema.optional(),
    /** A bridge to join, or `null` to leave the current one. */
    master: interfaceNameSchema.nullable().optional(),
  })
  .strict();

/** A change to an existing link, for {@link NetworkHost.setLink}. */
export type LinkChange = z.input<typeof linkChangeSchema>;

/**
 * Network namespaces and links on this host, managed declaratively and idempotently.
 *
 * Every method validates its input before touching the host, reads current state with `ip -json`,
 * plans the commands as data ({@link planTopology}) and runs them in as few `ip -batch` calls as
 * possible. A failed apply rolls back what it created.
 */
export class NetworkHost {
  /** The owner tag of this client. */
  readonly owner: string;
  /** The iproute2 edge, exposed for callers who need a raw command in the same runner. */
  readonly iproute: Iproute;
  private readonly batchMode: boolean;

  constructor(options: NetworkHostOptions = {}) {
    this.owner = parseInput(ownerSchema, options.owner ?? 'nubes', 'owner');
    this.iproute = new Iproute(options.runner ?? commandRunner);
    this.batchMode = options.batch ?? true;
  }

  /** Checks that a namespace this client is about to create carries its owner prefix. */
  private checkOwned(name: string, field: string): void {
    if (!name.startsWith(`${this.owner}-`)) {
      throw invalidInput(field, `must start with the owner prefix "${this.owner}-"`);
    }
  }

  /** Parses a topology and checks ownership of the namespaces it would create; changes nothing. */
  parseTopology(topology: Topology): ParsedTopology {
    const parsed = parseInput(topologySchema, topology, 'topology');
    for (const [i, n] of parsed.namespaces.entries()) this.checkOwned(n, `topology.namespaces.${i}`);
    return parsed;
  }

  /** Plans a topology against the live host without running anything (a dry run). */
  async plan(topology: Topology): Promise<TopologyPlan> {
    const parsed = this.parseTopology(topology);
    return planTopology(parsed, await readHostState(this.iproute, parsed), this.owner);
  }

  /**
   * Makes a topology exist: namespaces, links, addresses, routes and neighbors. Idempotent: what
   * exists with the same settings is left alone; what exists with different settings is a `Conflict`
   * raised before anything changes. If a command fails, what this call created is removed again.
   */
  async apply(topology: Topology): Promise<ApplyResult> {
    const plan = await this.plan(topology);
    let commands = 0;
    try {
      for (const batch of plan.batches) commands += await this.runBatch(batch);
    } catch (error) {
      await this.rollback(plan);
      throw error;
    }
    return { createdNamespaces: plan.createdNamespaces, createdLinks: plan.createdLinks, commands };
  }

  private async runBatch(batch: Batch): Promise<number> {
    const where = { namespace: batch.namespace };
    if (batch.tool === 'bridge') {
      for (const line of batch.lines) {
        try {
          await this.iproute.bridge(line, where);
        } catch (error) {
          if (!(batch.tolerateExisting && /exists/i.test(String((error as NubesError).details?.stderr))))
            throw error;
        }
      }
      return batch.lines.length;
    }
    if (this.batchMode) {
      await this.iproute.ipBatch(batch.lines, where);
      return 1;
    }
    for (const line of batch.lines) await this.iproute.ip(line, where);
    return batch.lines.length;
  }

  private async rollback(plan: TopologyPlan): Promise<void> {
    for (const batch of plan.undo) {
      for (const line of batch.lines) {
        await this.iproute.ip(line, { namespace: batch.namespace }).catch(() => undefined);
      }
    }
    await this.deleteNamespaces(plan.createdNamespaces).catch(() => undefined);
  }

  /** Creates a named network namespace (`<owner>-...`) with loopback up; succeeds if it exists. */
  async createNamespace(name: string): Promise<void> {
    await this.apply({ namespaces: [parseInput(namespaceNameSchema, name, 'name')] });
  }

  /** Names of all named network namespaces on the host (not only this owner's). */
  async listNamespaces(): Promise<string[]> {
    return listNamespaceNames(this.iproute);
  }

  /** Deletes a namespace and every interface in it; succeeds if it is already gone. */
  async deleteNamespace(name: string): Promise<void> {
    await this.deleteNamespaces([parseInput(namespaceNameSchema, name, 'name')]);
  }

  /**
   * Deletes several namespaces in one `ip -batch`; succeeds for those already gone. The common
   * case (all exist) costs one process; only when one is missing does it list and retry.
   */
  async deleteNamespaces(names: readonly string[]): Promise<void> {
    const valid = parseInput(z.array(namespaceNameSchema), [...names], 'names');
    if (valid.length === 0) return;
    try {
      await this.iproute.ipBatch(valid.map((n) => ['netns', 'del', n]));
    } catch (error) {
      if (!isMissingError(error)) throw error;
      const existing = new Set(await listNamespaceNames(this.iproute));
      await this.iproute.ipBatch(valid.filter((n) => existing.has(n)).map((n) => ['netns', 'del', n]));
    }
  }

  /** Runs a command inside a namespace (`ip netns exec`) and resolves with its captured output. */
  async exec(namespace: string, argv: readonly string[], options: ExecOptions = {}): Promise<CommandResult> {
    const ns = parseInput(namespaceNameSchema, namespace, 'namespace');
    const args = parseInput(argvSchema, [...argv], 'argv');
    return this.iproute.runner.run('ip', ['netns', 'exec', ns, ...args], options);
  }

  /**
   * Starts a long-running process inside a namespace and returns it. It does not go through the
   * runner (a runner returns when a command ends); kill it yourself, or delete the namespace's
   * processes with a cgroup.
   */
  spawn(
    namespace: string,
    argv: readonly string[],
    options: Omit<ExecOptions, 'timeoutMs' | 'input' | 'okExitCodes'> = {},
  ): ChildProcess {
    const ns = parseInput(namespaceNameSchema, namespace, 'namespace');
    const args = parseInput(argvSchema, [...argv], 'argv');
    return spawn('ip', ['netns', 'exec', ns, ...args], {
      env: { ...process.env, ...options.env },
      ...(options.cwd ? { cwd: options.cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** Creates a link (veth pair, bridge, tap, VLAN, VXLAN, ifb); idempotent. */
  async addLink(link: LinkSpec): Promise<ApplyResult> {
    return this.apply({ links: [parseInput(linkSpecSchema, link, 'link')] as LinkSpec[] });
  }

  /** Changes up/down, MTU, MAC or bridge membership of an existing link. */
  async setLink(change: LinkChange): Promise<void> {
    const c = parseInput(linkChangeSchema, change, 'change');
    await this.link(c.name, c.namespace);
    const set: string[] = [];
    if (c.mtu !== undefined) set.push('mtu', String(c.mtu));
    if (c.mac !== undefined) set.push('address', c.mac);
    if (c.master === null) set.push('nomaster');
    else if (c.master !== undefined) set.push('master', c.master);
    if (c.up !== undefined) set.push(c.up ? 'up' : 'down');
    if (set.length) await this.iproute.ip(['link', 'set', 'dev', c.name, ...set], { namespace: c.namespace });
  }

  /** Deletes a link (both ends of a veth); succeeds if it is already gone. */
  async deleteLink(ref: { namespace?: string; name: string }): Promise<void> {
    const r = parseInput(linkRefSchema, ref, 'link');
    try {
      await this.iproute.ip(['link', 'del', 'dev', r.name], { namespace: r.namespace });
    } catch (error) {
      if (!isMissingError(error)) throw error;
    }
  }

  /** The links of a namespace (root when omitted), with owner tags split out of the alias. */
  async links(namespace?: string): Promise<(Link & { owner?: string })[]> {
    const ns = parseInput(namespaceNameSchema.optional(), namespace, 'namespace');
    const state = await readNamespaceState(this.iproute, ns);
    return state.links.map((l) => {
      const tag = parseOwnerAlias(l.alias);
      const { alias: _raw, ...rest } = l;
      return { ...rest, ...tag };
    });
  }

  /** One link, or `NotFound`. */
  async link(name: string, namespace?: string): Promise<Link & { owner?: string }> {
    const n = parseInput(interfaceNameSchema, name, 'name');
    const found = (await this.links(namespace)).find((l) => l.name === n);
    if (!found) throw notFound('link', n);
    return found;
  }

  /** Adds an address (IPv4 or IPv6); idempotent. */
  async addAddress(address: AddressSpec): Promise<void> {
    await this.apply({ addresses: [parseInput(addressSpecSchema, address, 'address')] });
  }

  /** Removes an address; succeeds if it is not there. */
  async removeAddress(address: AddressSpec): Promise<void> {
    const a = parseInput(addressSpecSchema, address, 'address');
    try {
      await this.iproute.ip(['address', 'del', a.cidr, 'dev', a.dev], { namespace: a.namespace });
    } catch (error) {
      if (!/Cannot assign|Cannot find|does not exist/i.test(String((error as NubesError).details?.stderr)))
        throw error;
    }
  }

  /** The addresses of a namespace. */
  async addresses(namespace?: string): Promise<Address[]> {
    const ns = parseInput(namespaceNameSchema.optional(), namespace, 'namespace');
    return (await readNamespaceState(this.iproute, ns)).addresses;
  }

  /** Adds a route (default routes, routes in other tables); idempotent. */
  async addRoute(route: RouteSpec): Promise<void> {
    await this.apply({ routes: [parseInput(routeSpecSchema, route, 'route')] });
  }

  /** Deletes a route; succeeds if it is not there. */
  async deleteRoute(route: RouteSpec): Promise<void> {
    const r = parseInput(routeSpecSchema, route, 'route');
    try {
      await this.iproute.ip(routeArgv('del', r), { namespace: r.namespace });
    } catch (error) {
      if (!/No such process|not found/i.test(String((error as NubesError).details?.stderr))) throw error;
    }
  }

  /** Routes of a namespace, both families, all tables except `local`. */
  async routes(namespace?: string): Promise<(Route & { family: 4 | 6 })[]> {
    const ns = parseInput(namespaceNameSchema.optional(), namespace, 'namespace');
    return (await readNamespaceState(this.iproute, ns)).routes.filter((r) => r.table !== 'local');
  }

  /** Adds a permanent neighbor entry; idempotent. */
  async addNeighbor(neighbor: NeighborSpec): Promise<void> {
    await this.apply({ neighbors: [parseInput(neighborSpecSchema, neighbor, 'neighbor')] });
  }

  /** Neighbor entries of a namespace. */
  async neighbors(namespace?: string): Promise<Neighbor[]> {
    const ns = parseInput(namespaceNameSchema.optional(), namespace, 'namespace');
    return (await readNamespaceState(this.iproute, ns)).neighbors;
  }

  /** Adds a static FDB entry on a VXLAN device: frames for `mac` (all zeros: flood) go to `dst`. */
  async addFdbEntry(entry: { namespace?: string; dev: string; dst: string; mac?: string }): Promise<void> {
    const e = parseInput(
      z.object({
        namespace: namespaceNameSchema.optional(),
        dev: interfaceNameSchema,
        dst: ipAddressSchema,
        mac: macSchema.default('00:00:00:00:00:00'),
      }),
      entry,
      'entry',
    );
    await this.runBatch({
      tool: 'bridge',
      namespace: e.namespace,
      tolerateExisting: true,
      lines: [['fdb', 'append', e.mac, 'dev', e.dev, 'dst', e.dst]],
    });
  }

  /** Sets forwarding, rp_filter and proxy_arp inside a namespace in one `sysctl` call. */
  async setSysctls(namespace: string, sysctls: NamespaceSysctls): Promise<void> {
    const ns = parseInput(namespaceNameSchema, namespace, 'namespace');
    const s = parseInput(sysctlsSchema, sysctls, 'sysctls');
    const assignments = Object.entries(s).flatMap(([name, value]) =>
      SYSCTL_KEYS[name as keyof typeof SYSCTL_KEYS].map((k) => `${k}=${Number(value)}`),
    );
    if (assignments.length === 0) return;
    await this.iproute.runner.run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...assignments]);
  }

  /** Reads the managed sysctls of a namespace. */
  async sysctls(namespace: string): Promise<Required<NamespaceSysctls>> {
    const ns = parseInput(namespaceNameSchema, namespace, 'namespace');
    const keys = ['ipForward', 'ipv6Forward', 'rpFilter', 'proxyArp'] as const;
    const result = await this.iproute.runner.run('ip', [
      'netns',
      'exec',
      ns,
      'sysctl',
      '-n',
      ...keys.map((k) => SYSCTL_KEYS[k][0]),
    ]);
    const values = result.stdout.trim().split('\n').map(Number);
    return {
      ipForward: values[0] === 1,
      ipv6Forward: values[1] === 1,
      rpFilter: (values[2] ?? 0) as 0 | 1 | 2,
      proxyArp: values[3] === 1,
    };
  }

  /**
   * Sets the QoS of one interface: egress rate (tbf, or htb with ceiling and classes), ingress
   * policing or shaping through an ifb device, and netem. It replaces whatever was there, so
   * applying the same spec twice is a no-op in effect; omitted parts are removed.
   */
  async setQos(qos: QosSpec): Promise<void> {
    const q = parseInput(qosSchema, qos, 'qos');
    await this.link(q.dev, q.namespace);
    await applyQos(this.iproute, q, async (ifb) => {
      await this.addLink({ kind: 'ifb', name: ifb, ...(q.namespace ? { namespace: q.namespace } : {}) });
    });
  }

  /** Removes all shaping from an interface; succeeds if there was none. */
  async clearQos(ref: { namespace?: string; name: string }): Promise<void> {
    const r = parseInput(linkRefSchema, ref, 'link');
    await clearQosOf(this.iproute, r.name, r.namespace);
  }

  /** Per-qdisc and per-class statistics of an interface. */
  async qosStats(ref: { namespace?: string; name: string }): Promise<QosStats> {
    const r = parseInput(linkRefSchema, ref, 'link');
    return readQosStats(this.iproute, r.name, r.namespace);
  }

  /**
   * Removes everything of this owner: namespaces named `<owner>-...` and, in the root namespace,
   * links whose alias carries the owner tag. Run it at start-up so a crashed process leaves nothing.
   */
  async gc(): Promise<{ namespaces: string[]; links: string[] }> {
    const namespaces = (await listNamespaceNames(this.iproute)).filter((n) => n.startsWith(`${this.owner}-`));
    await this.deleteNamespaces(namespaces);
    const tag = ownerAlias(this.owner);
    const root = await readNamespaceState(this.iproute, undefined);
    const links = root.links
      .filter((l) => l.alias === tag || l.alias?.startsWith(`${tag}:`))
      .map((l) => l.name);
    for (const name of links) await this.deleteLink({ name });
    return { namespaces, links };
  }
}
