import { createHash } from 'node:crypto';
import type { SecurityGroupRule } from '../vpc/model.js';

/**
 * Security groups rendered as nftables text, as pure functions: the agent feeds the result to `nft -f`
 * in one transaction, so a ruleset is replaced atomically and conntrack entries survive the swap.
 */

/**
 * How the kernel lets a bridge filter statefully.
 * - `br_netfilter`: the bridge family has no conntrack (CONFIG_NF_CONNTRACK_BRIDGE off) but
 *   `net.bridge.bridge-nf-call-iptables=1` passes bridged IP through the inet hooks, where conntrack
 *   runs. The inet forward hook only sees the bridge, not its ports, so a bridge-family chain marks each
 *   frame with its ingress port (low 16 bits) and egress port (high 16 bits) and the inet chains
 *   dispatch on the mark: Neutron's iptables driver with marks instead of `physdev`.
 * - `bridge`: the bridge family has conntrack; everything lives in one bridge table, keyed on ports.
 */
export type FilterMode = 'br_netfilter' | 'bridge';

/** One port to filter: its host-side device and what it may send from. */
export interface FilteredPort {
  /** Port id (for comments and stable ordering). */
  id: string;
  /** The interface on the host bridge (the veth's host end or the tap). */
  device: string;
  mac: string;
  ips: string[];
  /** Ids of its security groups; rules are looked up in {@link HostFilter.groups}. */
  groups: string[];
}

/** Everything the host's ruleset depends on. */
export interface HostFilter {
  /** Filtered ports, in any order (they are sorted by id for stable marks). */
  ports: FilteredPort[];
  /** Rules of every group a port or a remote-group rule names. */
  groups: Record<string, { rules: SecurityGroupRule[] }>;
  /** Addresses of the members of every group a rule names as its remote group. */
  members: Record<string, string[]>;
  /** One conntrack zone per tenant bridge, so equal addresses in two tenants never share a flow. */
  zones: { bridge: string; zone: number }[];
}

const PROTO_NUMBER: Record<string, number> = { tcp: 6, udp: 17, sctp: 132, icmp: 1, icmpv6: 58 };

/** The set name holding the members of a remote group. */
function memberSet(groupId: string): string {
  return `rg_${groupId.slice(0, 16)}`;
}

/** Renders one rule as an nftables rule body (matches and verdict); pure and exported for tests. */
export function renderRule(rule: SecurityGroupRule, verdict: 'accept' | 'return'): string {
  const v6 = rule.ethertype === 'IPv6';
  const parts = [`meta nfproto ${v6 ? 'ipv6' : 'ipv4'}`];
  const addr = v6 ? 'ip6' : 'ip';
  const side = rule.direction === 'ingress' ? 'saddr' : 'daddr';
  if (rule.remoteIpPrefix !== undefined && !/^(0\.0\.0\.0|::)\/0$/.test(rule.remoteIpPrefix))
    parts.push(`${addr} ${side} ${rule.remoteIpPrefix}`);
  if (rule.remoteGroupId !== undefined) {
    // Sets hold IPv4 members only (subnets are IPv4), so an IPv6 remote-group rule matches nothing.
    if (v6) return `# rule ${rule.id}: IPv6 remote groups have no members`;
    parts.push(`${addr} ${side} @${memberSet(rule.remoteGroupId)}`);
  }
  const proto = rule.protocol;
  if (proto === 'icmp' || proto === 'icmpv6') {
    parts.push(`meta l4proto ${proto === 'icmp' ? 'icmp' : 'ipv6-icmp'}`);
    const kw = proto === 'icmp' ? 'icmp' : 'icmpv6';
    if (rule.portRangeMin !== undefined) parts.push(`${kw} type ${rule.portRangeMin}`);
    if (rule.portRangeMax !== undefined) parts.push(`${kw} code ${rule.portRangeMax}`);
  } else if (proto !== undefined) {
    const name = typeof proto === 'number' ? undefined : proto;
    parts.push(`meta l4proto ${PROTO_NUMBER[String(proto)] ?? proto}`);
    if (name && rule.portRangeMin !== undefined) {
      const max = rule.portRangeMax ?? rule.portRangeMin;
      parts.push(`${name} dport ${max === rule.portRangeMin ? max : `${rule.portRangeMin}-${max}`}`);
    }
  }
  return `${parts.join(' ')} ${verdict}`;
}

/** Per-port chains: stateful egress (return when allowed) and ingress (accept when allowed), default drop. */
function portChains(port: FilteredPort, index: number, filter: HostFilter): string[] {
  const rules = port.groups.flatMap((g) => filter.groups[g]?.rules ?? []);
  const chain = (name: string, established: string, body: string[], comment: string) => [
    `  chain ${name} {`,
    `    comment "${comment}"`,
    `    ct state established,related ${established}`,
    '    ct state invalid drop',
    ...body.map((b) => `    ${b}`),
    '    drop',
    '  }',
  ];
  return [
    ...chain(
      `out_${index}`,
      'return',
      rules.filter((r) => r.direction === 'egress').map((r) => renderRule(r, 'return')),
      `egress of port ${port.id}`,
    ),
    ...chain(
      `in_${index}`,
      'accept',
      rules.filter((r) => r.direction === 'ingress').map((r) => renderRule(r, 'accept')),
      `ingress of port ${port.id}`,
    ),
  ];
}

/** Anti-spoofing: a port may only send from its own MAC and IPv4 addresses (IPv6 is not offered). */
function spoofChain(port: FilteredPort, index: number, mark: boolean): string[] {
  const ips = port.ips.length ? `{ ${port.ips.join(', ')} }` : '{ 0.0.0.0 }';
  return [
    `  chain spoof_${index} {`,
    `    ether saddr != ${port.mac} drop`,
    `    ether type arp arp saddr ether != ${port.mac} drop`,
    `    ether type arp arp saddr ip != ${ips} drop`,
    `    ether type ip ip saddr != ${ips} drop`,
    '    ether type ip6 drop',
    ...(mark ? [`    meta mark set 0x${index.toString(16)}`] : []),
    '  }',
  ];
}

function vmap(key: string, entries: [string, string][]): string[] {
  if (entries.length === 0) return [];
  return [`    ${key} vmap { ${entries.map(([k, v]) => `${k} : ${v}`).join(', ')} }`];
}

function memberSets(filter: HostFilter): string[] {
  const referenced = new Set(
    Object.values(filter.groups).flatMap((g) =>
      g.rules.flatMap((r) => (r.remoteGroupId ? [r.remoteGroupId] : [])),
    ),
  );
  return [...referenced].sort().flatMap((g) => {
    const members = [...new Set(filter.members[g] ?? [])].sort();
    return [
      `  set ${memberSet(g)} {`,
      '    type ipv4_addr',
      ...(members.length ? [`    elements = { ${members.join(', ')} }`] : []),
      '  }',
    ];
  });
}

/** A rendered host ruleset: the tables it defines and the text for `nft -f` that defines them. */
export interface RenderedRuleset {
  /** `family name` of each table. */
  tables: { family: string; name: string }[];
  /** Text that (re)creates the tables atomically: each is declared, deleted and defined again. */
  text: string;
}

/** Wraps table bodies so one `nft -f` replaces each table atomically, also when it does not exist yet. */
export function replaceTables(tables: { family: string; name: string; body: string[] }[]): RenderedRuleset {
  const text = tables
    .flatMap((t) => [
      `table ${t.family} ${t.name}`,
      `delete table ${t.family} ${t.name}`,
      `table ${t.family} ${t.name} {`,
      ...t.body,
      '}',
    ])
    .join('\n');
  return { tables: tables.map(({ family, name }) => ({ family, name })), text: `${text}\n` };
}

/** A short digest of rendered text: tables carry it in their name, so an unchanged ruleset costs one listing. */
export function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

/**
 * Renders the security groups of every filtered port on one host. Tables are named
 * `<prefix>-<digest>`, so the agent can tell from `nft list tables` alone whether the kernel already
 * holds exactly this ruleset.
 */
export function renderHostFilter(filter: HostFilter, mode: FilterMode, prefix: string): RenderedRuleset {
  const ports = [...filter.ports].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (ports.length > 0xffff) throw new RangeError('at most 65535 filtered ports per host');
  const indexed = ports.map((p, i) => ({ port: p, index: i + 1 }));
  const quoted = (s: string) => `"${s}"`;
  const zones = filter.zones.map((z) => [quoted(z.bridge), String(z.zone)] as [string, string]);
  const perPort = indexed.flatMap(({ port, index }) => portChains(port, index, filter));
  const build = (name: string): RenderedRuleset => {
    if (mode === 'bridge') {
      return replaceTables([
        {
          family: 'bridge',
          name,
          body: [
            ...memberSets(filter),
            '  chain zones {',
            '    type filter hook prerouting priority -300; policy accept;',
            ...(zones.length
              ? [`    ct zone set meta ibrname map { ${zones.map(([k, v]) => `${k} : ${v}`).join(', ')} }`]
              : []),
            '  }',
            '  chain antispoof {',
            '    type filter hook prerouting priority -250; policy accept;',
            ...vmap(
              'iifname',
              indexed.map(({ port, index }) => [quoted(port.device), `jump spoof_${index}`]),
            ),
            '  }',
            '  chain ports {',
            '    type filter hook forward priority 0; policy accept;',
            ...vmap(
              'iifname',
              indexed.map(({ port, index }) => [quoted(port.device), `jump out_${index}`]),
            ),
            ...vmap(
              'oifname',
              indexed.map(({ port, index }) => [quoted(port.device), `jump in_${index}`]),
            ),
            '  }',
            ...indexed.flatMap(({ port, index }) => spoofChain(port, index, false)),
            ...perPort,
          ],
        },
      ]);
    }
    return replaceTables([
      {
        family: 'bridge',
        name,
        body: [
          '  chain antispoof {',
          '    type filter hook prerouting priority -300; policy accept;',
          ...vmap(
            'iifname',
            indexed.map(({ port, index }) => [quoted(port.device), `jump spoof_${index}`]),
          ),
          '  }',
          // Runs before br_netfilter hands the frame to the inet forward hook (bridge priority 0).
          '  chain marks {',
          '    type filter hook forward priority -200; policy accept;',
          ...vmap(
            'oifname',
            indexed.map(({ port, index }) => [quoted(port.device), `jump to_${index}`]),
          ),
          '  }',
          ...indexed.flatMap(({ port, index }) => spoofChain(port, index, true)),
          ...indexed.flatMap(({ index }) => [
            `  chain to_${index} {`,
            `    meta mark set meta mark | 0x${(index * 0x10000).toString(16)}`,
            '  }',
          ]),
        ],
      },
      {
        family: 'inet',
        name,
        body: [
          ...memberSets(filter),
          // Inside br_netfilter the inet prerouting hook sees the bridge as input device.
          '  chain zones {',
          '    type filter hook prerouting priority -300; policy accept;',
          ...(zones.length
            ? [`    ct zone set iifname map { ${zones.map(([k, v]) => `${k} : ${v}`).join(', ')} }`]
            : []),
          '  }',
          '  chain ports {',
          '    type filter hook forward priority 0; policy accept;',
          ...vmap(
            'meta mark & 0xffff',
            indexed.map(({ index }) => [`0x${index.toString(16)}`, `jump out_${index}`]),
          ),
          ...vmap(
            'meta mark & 0xffff0000',
            indexed.map(({ index }) => [`0x${(index * 0x10000).toString(16)}`, `jump in_${index}`]),
          ),
          '  }',
          ...perPort,
        ],
      },
    ]);
  };
  const hash = digest(build(`${prefix}-x`).text);
  return build(`${prefix}-${hash}`);
}
