import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';

/**
 * Schemas for the names and addresses that reach the kernel. They are strict on purpose: a name
 * that iproute2 would parse as a keyword, or a path component, never gets that far.
 */

// iproute2 accepts more, but '/', ':', '@' and whitespace break `ip` parsing or sysfs paths.
const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** A network interface name: 1 to 15 characters (IFNAMSIZ - 1) of letters, digits, `_`, `.`, `-`. */
export const interfaceNameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(15, 'must be at most 15 characters (the kernel limit)')
  .regex(SAFE_NAME, 'may only hold letters, digits, "_", "." and "-" and must not start with "." or "-"');

/** A network namespace name: a file name under /run/netns, 1 to 64 safe characters. */
export const namespaceNameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters')
  .regex(SAFE_NAME, 'may only hold letters, digits, "_", "." and "-" and must not start with "." or "-"');

/** An owner tag: the prefix of everything a client creates, so {@link gc} can find it again. */
export const ownerSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(24, 'must be at most 24 characters')
  .regex(/^[a-z0-9][a-z0-9-]*$/, 'may only hold lower-case letters, digits and "-"');

/** A cgroup name (one path component). */
export const cgroupNameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(SAFE_NAME, 'may only hold letters, digits, "_", "." and "-" and must not start with "." or "-"');

/** An IPv4 or IPv6 address without a prefix length. */
export const ipAddressSchema = z
  .string()
  .refine((s) => isIPv4(s) || isIPv6(s), 'must be an IPv4 or IPv6 address');

/** True when `text` is `address/prefix` with a prefix length that fits the family. */
export function isCidr(text: string): boolean {
  const slash = text.indexOf('/');
  if (slash < 0) return false;
  const address = text.slice(0, slash);
  const prefix = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefix)) return false;
  const bits = Number(prefix);
  if (isIPv4(address)) return bits <= 32;
  if (isIPv6(address)) return bits <= 128;
  return false;
}

/** An address with its prefix length, IPv4 (`10.0.0.1/24`) or IPv6 (`fd00::1/64`). */
export const cidrSchema = z
  .string()
  .refine(isCidr, 'must be an address with a prefix length, like 10.0.0.1/24');

/** An Ethernet MAC address, `02:00:00:00:00:01`. */
export const macSchema = z
  .string()
  .regex(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/, 'must be a MAC address like 02:00:00:00:00:01')
  .transform((s) => s.toLowerCase());

/** An interface alias (ifalias). No whitespace or quotes, because `ip -batch` splits lines on them. */
export const aliasSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(/^[^\s"'\\]+$/, 'must not contain whitespace, quotes or backslashes');

/** The address family of an IP address or CIDR: 4 or 6. */
export function ipFamily(addressOrCidr: string): 4 | 6 {
  return isIPv4(addressOrCidr.split('/')[0] ?? '') ? 4 : 6;
}
