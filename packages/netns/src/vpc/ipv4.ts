import { isIPv4 } from 'node:net';

/**
 * IPv4 arithmetic and address management as pure functions over 32-bit integers, so the IPAM
 * rules (containment, overlap, pools, first free address) are tested without a Store or a kernel.
 */

/** An IPv4 network: its first address and prefix length. */
export interface Ipv4Network {
  /** The network address as an unsigned 32-bit integer. */
  base: number;
  /** Prefix length, 0 to 32. */
  prefix: number;
}

/** An inclusive range of addresses, as in Neutron's allocation pools. */
export interface AddressRange {
  start: string;
  end: string;
}

/** Converts a dotted IPv4 address to an unsigned 32-bit integer. */
export function ipv4ToInt(address: string): number {
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

/** Converts an unsigned 32-bit integer to a dotted IPv4 address. */
export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The number of addresses in a prefix (2^(32-prefix)), as a plain number. */
export function prefixSize(prefix: number): number {
  return 2 ** (32 - prefix);
}

/**
 * Parses `a.b.c.d/len`. Returns `undefined` when it is not IPv4 CIDR syntax; `hostBits` is true when the
 * address has bits set below the prefix (`10.0.0.1/24`), which a subnet's CIDR must not have.
 */
export function parseIpv4Cidr(text: string): (Ipv4Network & { hostBits: boolean }) | undefined {
  const match = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!match || !isIPv4(match[1] as string)) return undefined;
  const prefix = Number(match[2]);
  if (prefix > 32) return undefined;
  const address = ipv4ToInt(match[1] as string);
  const size = prefixSize(prefix);
  const base = address - (address % size);
  return { base, prefix, hostBits: base !== address };
}

/** Renders a network as `a.b.c.d/len`. */
export function formatIpv4Network(net: Ipv4Network): string {
  return `${intToIpv4(net.base)}/${net.prefix}`;
}

/** True when `address` lies in `net`. */
export function ipv4InNetwork(net: Ipv4Network, address: string): boolean {
  const n = ipv4ToInt(address);
  return n >= net.base && n < net.base + prefixSize(net.prefix);
}

/** True when two networks share at least one address. */
export function ipv4NetworksOverlap(a: Ipv4Network, b: Ipv4Network): boolean {
  return a.base < b.base + prefixSize(b.prefix) && b.base < a.base + prefixSize(a.prefix);
}

/** The usable host range of a network: without network and broadcast address, except for /31 and /32. */
export function hostRange(net: Ipv4Network): { first: number; last: number } {
  const size = prefixSize(net.prefix);
  if (net.prefix >= 31) return { first: net.base, last: net.base + size - 1 };
  return { first: net.base + 1, last: net.base + size - 2 };
}

/**
 * The default allocation pools of a subnet: its host range minus the gateway, split around it
 * (Neutron's behaviour).
 */
export function defaultPools(net: Ipv4Network, gateway: string | null): AddressRange[] {
  const { first, last } = hostRange(net);
  const gw = gateway === null ? undefined : ipv4ToInt(gateway);
  const ranges: [number, number][] =
    gw === undefined || gw < first || gw > last
      ? [[first, last]]
      : [
          [first, gw - 1],
          [gw + 1, last],
        ];
  return ranges.filter(([s, e]) => s <= e).map(([s, e]) => ({ start: intToIpv4(s), end: intToIpv4(e) }));
}

/**
 * The first address of `pools`, in order, that is not in `taken`; `undefined` when they are exhausted.
 * Linear in the pool size in the worst case, which stays cheap for the /16-and-smaller subnets tenants use,
 * and it hands out addresses densely and predictably (the lowest free one), as Neutron does.
 */
export function firstFreeAddress(
  pools: readonly AddressRange[],
  taken: ReadonlySet<string>,
): string | undefined {
  for (const pool of pools) {
    const end = ipv4ToInt(pool.end);
    for (let n = ipv4ToInt(pool.start); n <= end; n++) {
      const candidate = intToIpv4(n);
      if (!taken.has(candidate)) return candidate;
    }
  }
  return undefined;
}

/** True when `address` is inside one of `pools`. */
export function inPools(pools: readonly AddressRange[], address: string): boolean {
  const n = ipv4ToInt(address);
  return pools.some((p) => n >= ipv4ToInt(p.start) && n <= ipv4ToInt(p.end));
}
