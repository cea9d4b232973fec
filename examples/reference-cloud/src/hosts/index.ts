/**
 * Several compute hosts on one machine: a network namespace per host, joined by an underlay (a bridge in a
 * namespace of its own and a veth per host), so the VXLAN overlay between "hosts" really crosses an
 * Ethernet segment. Nothing is configured in the machine's own namespace: the underlay addresses exist only
 * inside the namespaces, and everything is named `<owner>-...` so {@link SimulatedHosts.destroy} (and a
 * later run, after a crash) removes exactly what was made.
 */
import { NubesError } from '@nubes/core';
import { NetworkHost } from '@nubes/netns';

/** One simulated host, as a compute agent is told about it. */
export interface SimulatedHost {
  /** Its name (the scheduler's host id and the Vpc's host name): `h1`, `h2`, ... */
  name: string;
  /** Its network namespace: the agent's "root" namespace, where taps, bridges and VXLAN devices live. */
  namespace: string;
  /** Its underlay address (the VTEP), inside `namespace` only. */
  underlayIp: string;
  /** Its underlay interface inside `namespace`. */
  underlayDev: string;
}

/** Options of {@link SimulatedHosts.create}. */
export interface SimulatedHostsOptions {
  /** How many hosts (1 to 200). */
  count: number;
  /**
   * Owner tag and name prefix (lower-case letters, digits and `-`, at most 20 characters so host
   * namespaces stay valid VpcAgent owners). Default `rc-<pid>`.
   */
  owner?: string;
  /** Underlay /24 as its first three octets. Default `10.255.0`; host i gets `.<10 + i>`. */
  underlayPrefix?: string;
}

/** The underlay interface name inside each host namespace. */
export const UNDERLAY_DEV = 'ul0';

/** N hosts as network namespaces on one machine. */
export class SimulatedHosts {
  private constructor(
    /** The owner tag every namespace is prefixed with. */
    readonly owner: string,
    /** The hosts, in order. */
    readonly hosts: SimulatedHost[],
    /** The namespace holding the underlay bridge. */
    readonly underlayNamespace: string,
    private readonly net: NetworkHost,
  ) {}

  /**
   * Creates the hosts. What a previous run with the same owner left behind is removed first, so a crashed
   * test run never makes the next one fail.
   */
  static async create(options: SimulatedHostsOptions): Promise<SimulatedHosts> {
    const owner = options.owner ?? `rc-${process.pid}`;
    if (!/^[a-z0-9][a-z0-9-]{0,19}$/.test(owner))
      throw new NubesError('InvalidInput', 'owner: 1-20 lower-case letters, digits and "-"', {
        details: { field: 'owner' },
      });
    if (!Number.isInteger(options.count) || options.count < 1 || options.count > 200)
      throw new NubesError('InvalidInput', 'count: must be an integer from 1 to 200', {
        details: { field: 'count' },
      });
    const prefix = options.underlayPrefix ?? '10.255.0';
    const net = new NetworkHost({ owner });
    await net.gc();
    const underlayNamespace = `${owner}-ul`;
    const hosts: SimulatedHost[] = Array.from({ length: options.count }, (_, i) => ({
      name: `h${i + 1}`,
      namespace: `${owner}-h${i + 1}`,
      underlayIp: `${prefix}.${11 + i}`,
      underlayDev: UNDERLAY_DEV,
    }));
    try {
      await net.apply({
        namespaces: [underlayNamespace, ...hosts.map((h) => h.namespace)],
        links: [
          { kind: 'bridge', name: 'br-ul', namespace: underlayNamespace },
          ...hosts.map((h) => ({
            kind: 'veth' as const,
            name: h.name,
            namespace: underlayNamespace,
            master: 'br-ul',
            peer: { name: UNDERLAY_DEV, namespace: h.namespace },
          })),
        ],
        addresses: hosts.map((h) => ({
          namespace: h.namespace,
          dev: UNDERLAY_DEV,
          cidr: `${h.underlayIp}/24`,
        })),
      });
    } catch (error) {
      await net.gc();
      throw error;
    }
    return new SimulatedHosts(owner, hosts, underlayNamespace, net);
  }

  /** One host by name (`NotFound` when there is none). */
  host(name: string): SimulatedHost {
    const host = this.hosts.find((h) => h.name === name);
    if (!host) throw new NubesError('NotFound', `no simulated host ${name}`, { details: { host: name } });
    return host;
  }

  /** Runs a command inside a host's namespace (argv, no shell), e.g. `ping` or `ip link`. */
  exec(
    host: string,
    argv: readonly string[],
    options: { timeoutMs?: number; okExitCodes?: number[] } = {},
  ): ReturnType<NetworkHost['exec']> {
    return this.net.exec(this.host(host).namespace, argv, options);
  }

  /**
   * Removes every namespace of this owner (the hosts, the underlay and whatever agents made inside them,
   * such as router namespaces named after a host) and any link tagged with the owner. Idempotent.
   */
  async destroy(): Promise<void> {
    await this.net.gc();
  }
}
