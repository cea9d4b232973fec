import { type CommandRunner, commandRunner, NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { type Argv, renderBatch } from '../ip/ip.js';
import { parseAddresses } from '../ip/state.js';
import { namespaceNameSchema, ownerSchema } from '../names.js';
import { NetworkHost } from '../network.js';
import type { FilterMode } from '../secgroups/render.js';
import { parseOwnerAlias } from '../topology/plan.js';
import type { Topology } from '../topology/spec.js';
import { listNamespaceNames, readNamespaceState } from '../topology/state.js';
import { hostNameSchema } from '../vpc/model.js';
import type { Vpc } from '../vpc/vpc.js';
import { type AgentLoop, type AgentLoopOptions, ReconcileLoop } from './loop.js';
import {
  type ActualHost,
  type DesiredHost,
  diffHost,
  fingerprintAlias,
  type HostContext,
  names,
  planHost,
} from './plan.js';

/** Options of a {@link VpcAgent}. */
export interface VpcAgentOptions {
  /** The desired state. */
  vpc: Vpc;
  /** This host's name, as ports and routers name it. */
  host: string;
  /** Owner tag: the agent owns every namespace `<owner>-...`, links tagged with it and nft tables `nubes-<owner>-...`. */
  owner: string;
  /** A namespace to use as the host's root namespace (to simulate several hosts on one machine). */
  namespace?: string;
  /** Runs `ip`, `bridge`, `nft`, `sysctl`. */
  runner?: CommandRunner;
  /** Force a filter mode instead of detecting what the kernel offers. */
  mode?: FilterMode;
}

/** What one reconcile changed. */
export interface ReconcileResult {
  /** Ports (re)wired. */
  wiredPorts: string[];
  deletedNamespaces: string[];
  deletedLinks: string[];
  /** Remote FDB and neighbor entries added or removed. */
  fdbChanges: number;
  neighborChanges: number;
  /** Whether the security-group ruleset was replaced. */
  filterReplaced: boolean;
  routers: number;
}

const optionsSchema = z.object({
  host: hostNameSchema,
  owner: ownerSchema,
  namespace: namespaceNameSchema.optional(),
  mode: z.enum(['br_netfilter', 'bridge']).optional(),
});

const BRIDGE_CT_PROBE =
  'table bridge nubes-probe {\n chain c {\n type filter hook forward priority 0; policy accept;\n ct state established accept\n }\n}\n';

/**
 * The per-host agent: reconciles the kernel to the {@link Vpc} in the Store. `reconcile()` creates what
 * is missing, fixes what differs and removes what is no longer wanted; it can run at any time, and a run
 * that died half-way is repaired by the next one, because every step is idempotent and a port's
 * fingerprint is only written onto its host-side link after everything else of the port is in place.
 */
export class VpcAgent {
  /** The part 1 client the agent applies topologies with (same owner). */
  readonly net: NetworkHost;
  readonly host: string;
  readonly owner: string;
  readonly namespace: string | undefined;
  private readonly vpc: Vpc;
  private readonly runner: CommandRunner;
  private mode: FilterMode | undefined;

  constructor(options: VpcAgentOptions) {
    const o = parseInput(
      optionsSchema,
      { host: options.host, owner: options.owner, namespace: options.namespace, mode: options.mode },
      'options',
    );
    this.vpc = options.vpc;
    this.host = o.host;
    this.owner = o.owner;
    this.namespace = o.namespace;
    this.mode = o.mode;
    this.runner = options.runner ?? commandRunner;
    this.net = new NetworkHost({ owner: o.owner, runner: this.runner });
  }

  /** Runs a program in the host namespace. */
  private run(argv: string[], input?: string) {
    const [program, ...args] = argv as [string, ...string[]];
    return this.namespace === undefined
      ? this.runner.run(program, args, input === undefined ? {} : { input })
      : this.runner.run(
          'ip',
          ['netns', 'exec', this.namespace, ...argv],
          input === undefined ? {} : { input },
        );
  }

  private async batch(tool: 'ip' | 'bridge', lines: Argv[], namespace = this.namespace): Promise<void> {
    if (lines.length === 0) return;
    await this.runner.run(tool, [...(namespace ? ['-n', namespace] : []), '-batch', '-'], {
      input: renderBatch(lines),
    });
  }

  /**
   * Which stateful bridge filtering the kernel offers: conntrack in the bridge family if
   * nf_conntrack_bridge is there (checked with `nft -c`, which asks the kernel without committing),
   * otherwise br_netfilter's hand-off to the inet hooks; `Unsupported` when neither.
   */
  async detectMode(): Promise<FilterMode> {
    if (this.mode) return this.mode;
    try {
      await this.run(['nft', '-c', '-f', '-'], BRIDGE_CT_PROBE);
      this.mode = 'bridge';
    } catch {
      const probe = await this.run(['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables']).catch(
        () => undefined,
      );
      if (!probe) {
        throw new NubesError(
          'Unsupported',
          'the kernel offers neither bridge-family conntrack nor br_netfilter: security groups cannot be stateful',
        );
      }
      this.mode = 'br_netfilter';
    }
    return this.mode;
  }

  private context(mode: FilterMode): HostContext {
    return { host: this.host, owner: this.owner, hostNamespace: this.namespace, mode };
  }

  /** Reads what the diff needs from the host namespace. */
  private async readActual(): Promise<ActualHost> {
    const [namespaces, state, fdb, ports, tables] = await Promise.all([
      listNamespaceNames(this.net.iproute),
      readNamespaceState(this.net.iproute, this.namespace),
      this.runner.run('bridge', [...(this.namespace ? ['-n', this.namespace] : []), '-j', 'fdb', 'show']),
      this.runner.run('bridge', [
        ...(this.namespace ? ['-n', this.namespace] : []),
        '-d',
        '-j',
        'link',
        'show',
      ]),
      this.run(['nft', 'list', 'tables']),
    ]);
    const json = (text: string) => (text.trim() ? (JSON.parse(text) as Record<string, unknown>[]) : []);
    return {
      namespaces,
      links: state.links,
      neighbors: state.neighbors,
      fdb: json(fdb.stdout) as unknown as ActualHost['fdb'],
      suppressing: json(ports.stdout)
        .filter((p) => p.neigh_suppress === true)
        .map((p) => String(p.ifname)),
      tables: parseTables(tables.stdout),
    };
  }

  /** Plans without changing anything: what this host should hold for the current Store. */
  async plan(): Promise<DesiredHost> {
    return planHost(await this.vpc.snapshot(), this.context(await this.detectMode()));
  }

  /** Makes the kernel match the Store for this host. */
  async reconcile(): Promise<ReconcileResult> {
    const ctx = this.context(await this.detectMode());
    const [snap, actual] = await Promise.all([this.vpc.snapshot(), this.readActual()]);
    const desired = planHost(snap, ctx);
    const changes = diffHost(desired, actual, ctx);
    const where = this.namespace;

    // Removals first, so a name that moves to a new port is free again.
    await this.net.deleteNamespaces(changes.deleteNamespaces);
    await this.batch(
      'ip',
      changes.deleteLinks.map((l) => ['link', 'del', 'dev', l]),
    ).catch(async () => {
      for (const l of changes.deleteLinks)
        await this.net.deleteLink({ name: l, ...(where ? { namespace: where } : {}) });
    });
    await this.batch(
      'bridge',
      changes.fdbDelete.map((f) =>
        f.master
          ? ['fdb', 'del', f.mac, 'dev', f.vxlan, 'master']
          : ['fdb', 'del', f.mac, 'dev', f.vxlan, ...(f.dst ? ['dst', f.dst] : []), 'self'],
      ),
    );
    await this.batch(
      'ip',
      changes.neighborDelete.map((n) => ['neigh', 'del', n.ip, 'dev', n.bridge]),
    );

    const topology: Required<Pick<Topology, 'namespaces' | 'links' | 'addresses' | 'routes'>> = {
      namespaces: [],
      links: [...(desired.fabric.links ?? [])],
      addresses: [],
      routes: [],
    };
    for (const part of [
      ...changes.applyPorts.map((p) => p.topology),
      ...desired.routers.map((r) => r.topology),
    ]) {
      topology.namespaces.push(...(part.namespaces ?? []));
      topology.links.push(...(part.links ?? []));
      topology.addresses.push(...(part.addresses ?? []));
      topology.routes.push(...(part.routes ?? []));
    }
    topology.namespaces = [...new Set(topology.namespaces)];
    await this.applyRepairing(topology, actual.links);

    await this.batch(
      'bridge',
      changes.suppress.map((v) => ['link', 'set', 'dev', v, 'neigh_suppress', 'on', 'learning', 'off']),
    );
    await this.batch(
      'bridge',
      changes.fdbAdd.flatMap((f) => [
        ['fdb', 'replace', f.mac, 'dev', f.vxlan, 'dst', f.dst, 'self', 'permanent'],
        ['fdb', 'replace', f.mac, 'dev', f.vxlan, 'master', 'static'],
      ]),
    );
    await this.batch(
      'ip',
      changes.neighborAdd.map((n) => [
        'neigh',
        'replace',
        n.ip,
        'lladdr',
        n.mac,
        'dev',
        n.bridge,
        'nud',
        'permanent',
      ]),
    );

    for (const router of desired.routers) await this.reconcileRouter(router);

    if (changes.filter !== undefined) {
      if (ctx.mode === 'br_netfilter') {
        // Bridged IP only reaches the inet hooks (and conntrack) with these on, per namespace.
        await this.run([
          'sysctl',
          '-q',
          '-w',
          'net.bridge.bridge-nf-call-iptables=1',
          'net.bridge.bridge-nf-call-ip6tables=1',
        ]);
      }
      await this.run(['nft', '-f', '-'], changes.filter);
    }

    await this.batch(
      'ip',
      changes.applyPorts.map((p) => [
        'link',
        'set',
        'dev',
        p.device,
        'alias',
        fingerprintAlias(this.owner, p.fingerprint),
      ]),
    );
    return {
      wiredPorts: changes.applyPorts.map((p) => p.id),
      deletedNamespaces: changes.deleteNamespaces,
      deletedLinks: changes.deleteLinks,
      fdbChanges: changes.fdbAdd.length + changes.fdbDelete.length,
      neighborChanges: changes.neighborAdd.length + changes.neighborDelete.length,
      filterReplaced: changes.filter !== undefined,
      routers: desired.routers.length,
    };
  }

  /**
   * Applies the topology, first repairing links an agent was killed between creating and configuring:
   * part 1 creates veths, bridges and VXLAN devices bare and sets MTU, MAC and owner tag afterwards,
   * and it refuses (`Conflict`) to adopt an existing link whose MTU or MAC differs. A wanted link in
   * the host namespace without this agent's tag, of another kind or with the wrong MTU is such a
   * half-made one and is deleted up front (a veth with its peer); a `Conflict` on a wanted link (a
   * veth's peer only in a namespace the agent owns) is repaired the same way and the apply retried,
   * at most once per link. Taps are left alone: QEMU may have made them.
   */
  private async applyRepairing(topology: Topology, links: ActualHost['links']): Promise<void> {
    const where = this.namespace ? { namespace: this.namespace } : {};
    const kernelKind = { veth: 'veth', bridge: 'bridge', vxlan: 'vxlan' } as Record<string, string>;
    const repairable = (topology.links ?? []).filter((l) => kernelKind[l.kind] !== undefined);
    const found = new Map(links.map((l) => [l.name, l]));
    const halfMade = repairable
      .filter((l) => {
        const link = found.get(l.name);
        return (
          link !== undefined &&
          (link.kind !== kernelKind[l.kind] ||
            parseOwnerAlias(link.alias).owner !== this.owner ||
            (l.mtu !== undefined && link.mtu !== l.mtu))
        );
      })
      .map((l) => l.name);
    for (const name of halfMade) await this.net.deleteLink({ name, ...where });
    for (let attempt = 0; ; attempt++) {
      try {
        await this.net.apply(topology);
        return;
      } catch (error) {
        const d = error instanceof NubesError && error.code === 'Conflict' ? error.details : undefined;
        const owned = (ns: unknown) =>
          typeof ns === 'string' && ns.startsWith(`${this.owner}-`) && ns !== this.namespace;
        const link = repairable.find(
          (l) =>
            (d?.namespace === l.namespace && d?.name === l.name) ||
            (l.kind === 'veth' &&
              d?.namespace === l.peer.namespace &&
              d?.name === l.peer.name &&
              owned(d?.namespace)),
        );
        if (!link || attempt >= repairable.length) throw error;
        await this.net.deleteLink({ name: link.name, ...where });
      }
    }
  }

  /** Forwarding, stale addresses (disassociated floating IPs) and the NAT table of a router namespace. */
  private async reconcileRouter(router: DesiredHost['routers'][number]): Promise<void> {
    const ns = router.namespace;
    const [addresses, tables] = await Promise.all([
      this.runner.run('ip', ['-n', ns, '-json', 'address', 'show']),
      this.runner.run('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables']),
      this.net.setSysctls(ns, { ipForward: true }),
    ]);
    const wanted = new Set(router.addresses.map((a) => `${a.dev} ${a.cidr}`));
    const stale = parseAddresses(addresses.stdout.trim() ? JSON.parse(addresses.stdout) : [])
      .filter((a) => /^q[rg]-/.test(a.dev) && !wanted.has(`${a.dev} ${a.cidr}`) && !a.cidr.includes(':'))
      .map((a) => ['address', 'del', a.cidr, 'dev', a.dev]);
    await this.batch('ip', stale, ns);
    const present = parseTables(tables.stdout).filter((t) =>
      t.name.startsWith(`${names.natTable(this.owner)}-`),
    );
    const want = router.nat.tables[0];
    const current =
      present.length === 1 && present[0]?.name === want?.name && present[0]?.family === want?.family;
    if (!current) {
      const drop = present
        .filter((t) => t.name !== want?.name)
        .map((t) => `delete table ${t.family} ${t.name}\n`);
      await this.runner.run('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
        input: router.nat.text + drop.join(''),
      });
    }
  }

  /**
   * Runs the agent as a loop: reconciles now, then whenever the desired state under the Vpc's prefix
   * changes (`store.watch`, debounced, so a burst of changes costs one reconcile; a change made while
   * a reconcile runs gets another one after it). A failed reconcile is reported to `onError` and
   * retried; a failed watch is reopened. Resolves once the watch is in place.
   */
  watch(options: AgentLoopOptions = {}): Promise<AgentLoop> {
    return ReconcileLoop.start(this.vpc.store, this.vpc.prefix, () => this.reconcile(), options);
  }

  /**
   * Removes everything the agent owns on this host, whatever the Store says: its namespaces, its tagged
   * links in the host namespace (with their FDB and neighbor entries) and its nft tables there.
   */
  async teardown(): Promise<{ namespaces: string[]; links: string[]; tables: string[] }> {
    const namespaces = (await listNamespaceNames(this.net.iproute)).filter(
      (n) => n.startsWith(`${this.owner}-`) && n !== this.namespace,
    );
    await this.net.deleteNamespaces(namespaces);
    const state = await readNamespaceState(this.net.iproute, this.namespace).catch(() => undefined);
    const links = (state?.links ?? [])
      .filter((l) => parseOwnerAlias(l.alias).owner === this.owner)
      .map((l) => l.name);
    for (const name of links)
      await this.net.deleteLink({ name, ...(this.namespace ? { namespace: this.namespace } : {}) });
    const tables = await this.run(['nft', 'list', 'tables'])
      .then((r) => parseTables(r.stdout).filter((t) => t.name.startsWith(`nubes-${this.owner}-`)))
      .catch(() => []);
    if (tables.length)
      await this.run(['nft', '-f', '-'], tables.map((t) => `delete table ${t.family} ${t.name}\n`).join(''));
    return { namespaces, links, tables: tables.map((t) => `${t.family} ${t.name}`) };
  }
}

/** Parses `nft list tables` (`table <family> <name>` per line). */
export function parseTables(text: string): { family: string; name: string }[] {
  return text
    .split('\n')
    .map((l) => /^table (\S+) (\S+)$/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ family: m[1] as string, name: m[2] as string }));
}
