/**
 * The shape checks of `POST /servers` and of the server actions: everything that can be decided from the body
 * alone, before anything is looked up or changed. Each refusal is `InvalidInput` naming the field
 * (`server.flavorRef`, `server.networks.0.uuid`).
 */
import { invalidInput } from '@nubes/core';
import { optionalInt, optionalString } from '../api/http.js';
import type { Microversion } from './microversion.js';

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** True for a UUID, with or without dashes (Nova accepts both, as oslo's `is_uuid_like` does). */
export function isUuidLike(value: string): boolean {
  return UUID.test(value);
}

/** A UUID in its dashed, lower-case form (image and server ids). */
export function dashedUuid(value: string): string {
  const hex = value.replaceAll('-', '').toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A UUID as 32 hex digits (network and port ids, as `@nubes/netns` names them). */
export function hexUuid(value: string): string {
  return value.replaceAll('-', '').toLowerCase();
}

/** One requested network attachment. */
export interface NetworkRequest {
  networkId?: string;
  portId?: string;
  fixedIp?: string;
}

/** Scheduler hints Nova takes that this cloud honours. */
export interface SchedulerHintsInput {
  group?: string;
  sameHost?: string[];
  differentHost?: string[];
  query?: string;
}

/** A `POST /servers` body, checked. */
export interface ServerCreateRequest {
  name: string;
  imageRef: string;
  flavorRef: string;
  /** A list, `auto` / `none` (2.37), or absent (before 2.37: Nova's default attachment). */
  networks: NetworkRequest[] | 'auto' | 'none' | undefined;
  /** Security group names or ids; empty: the project's `default`. */
  securityGroups: string[];
  minCount: number;
  maxCount: number;
  availabilityZone?: string;
  metadata: Record<string, string>;
  hints: SchedulerHintsInput;
}

// Keys Nova's schema knows that this cloud accepts and ignores (they have no effect on a guest here).
const IGNORED_SERVER_KEYS = new Set([
  'accessIPv4',
  'accessIPv6',
  'adminPass',
  'OS-DCF:diskConfig',
  'config_drive',
  'user_data',
  'description',
  'return_reservation_id',
  'tags',
  'trusted_image_certificates',
  'hostname',
]);
// Keys Nova's schema knows that this cloud refuses: they ask for something it cannot do.
const REFUSED_SERVER_KEYS: Record<string, string> = {
  block_device_mapping: 'booting from volumes is not supported by this cloud',
  block_device_mapping_v2: 'booting from volumes is not supported by this cloud',
  personality: 'file injection is not supported by this cloud',
  key_name: 'key pairs are not supported by this cloud',
  host: 'requesting a host is not supported by this cloud',
  hypervisor_hostname: 'requesting a hypervisor is not supported by this cloud',
};
const KNOWN_SERVER_KEYS = new Set([
  'name',
  'imageRef',
  'flavorRef',
  'networks',
  'security_groups',
  'min_count',
  'max_count',
  'availability_zone',
  'metadata',
]);

function stringList(value: unknown, field: string): string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.some((v) => typeof v !== 'string' || !isUuidLike(v)))
    throw invalidInput(field, 'must be a server UUID or a list of them');
  return (list as string[]).map(dashedUuid);
}

function parseHints(hints: unknown): SchedulerHintsInput {
  if (hints === undefined || hints === null) return {};
  if (typeof hints !== 'object' || Array.isArray(hints))
    throw invalidInput('os:scheduler_hints', 'must be an object');
  const h = hints as Record<string, unknown>;
  const out: SchedulerHintsInput = {};
  if (h.group !== undefined) {
    if (typeof h.group !== 'string' || !isUuidLike(h.group))
      throw invalidInput('os:scheduler_hints.group', 'must be a server group UUID');
    out.group = dashedUuid(h.group);
  }
  if (h.same_host !== undefined) out.sameHost = stringList(h.same_host, 'os:scheduler_hints.same_host');
  if (h.different_host !== undefined)
    out.differentHost = stringList(h.different_host, 'os:scheduler_hints.different_host');
  if (h.query !== undefined) {
    if (typeof h.query !== 'string') throw invalidInput('os:scheduler_hints.query', 'must be a JSON string');
    out.query = h.query;
  }
  // Other hints (target_cell, build_near_host_ip, ...) are ignored, as Nova ignores hints no filter reads.
  return out;
}

function parseNetworks(value: unknown, version: Microversion): ServerCreateRequest['networks'] {
  if (value === undefined) {
    if (version.atLeast('2.37')) throw invalidInput('server.networks', 'is required from microversion 2.37');
    return undefined;
  }
  if (value === 'auto' || value === 'none') {
    if (!version.atLeast('2.37')) throw invalidInput('server.networks', `"${value}" needs microversion 2.37`);
    return value;
  }
  if (!Array.isArray(value)) throw invalidInput('server.networks', 'must be a list, "auto" or "none"');
  return value.map((n, i): NetworkRequest => {
    const field = `server.networks.${i}`;
    if (n === null || typeof n !== 'object' || Array.isArray(n))
      throw invalidInput(field, 'must be an object');
    const entry = n as Record<string, unknown>;
    for (const k of Object.keys(entry))
      if (!['uuid', 'port', 'fixed_ip', 'tag'].includes(k))
        throw invalidInput(`${field}.${k}`, 'is not allowed');
    const out: NetworkRequest = {};
    const uuid = optionalString(entry.uuid, `${field}.uuid`);
    const port = optionalString(entry.port, `${field}.port`);
    const fixed = optionalString(entry.fixed_ip, `${field}.fixed_ip`);
    if (uuid !== undefined) {
      if (!isUuidLike(uuid))
        throw invalidInput(`${field}.uuid`, `network uuid is not in proper format (${uuid})`);
      out.networkId = hexUuid(uuid);
    }
    if (port !== undefined && port !== '') {
      if (!isUuidLike(port)) throw invalidInput(`${field}.port`, `port id is not in proper format (${port})`);
      out.portId = hexUuid(port);
    }
    if (fixed !== undefined) {
      if (!IPV4.test(fixed)) throw invalidInput(`${field}.fixed_ip`, `${fixed} is not a valid IPv4 address`);
      out.fixedIp = fixed;
    }
    if (out.portId && (out.networkId || out.fixedIp))
      throw invalidInput(field, 'a port cannot be combined with a network uuid or a fixed_ip');
    if (!out.portId && !out.networkId)
      throw invalidInput(field, 'needs a network uuid or a port (a fixed_ip alone names no network)');
    return out;
  });
}

function parseMetadata(value: unknown, field: string): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw invalidInput(field, 'must be an object');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k.length < 1 || k.length > 255) throw invalidInput(`${field}.${k}`, 'keys must be 1-255 characters');
    if (typeof v !== 'string' || v.length > 255)
      throw invalidInput(`${field}.${k}`, 'must be a string of at most 255 characters');
    out[k] = v;
  }
  return out;
}

/**
 * Checks a `POST /servers` body: `{ server: {...}, "os:scheduler_hints": {...} }`. Keys Nova knows but that
 * have no effect here are ignored; the ones that ask for something this cloud cannot do are refused; unknown
 * keys are refused, as Nova's schema refuses additional properties.
 */
export function parseServerCreate(body: Record<string, unknown>, version: Microversion): ServerCreateRequest {
  const s = body.server;
  if (s === null || typeof s !== 'object' || Array.isArray(s))
    throw invalidInput('server', 'is required and must be an object');
  const server = s as Record<string, unknown>;
  for (const key of Object.keys(server)) {
    const refused = REFUSED_SERVER_KEYS[key];
    if (refused) throw invalidInput(`server.${key}`, refused);
    if (!KNOWN_SERVER_KEYS.has(key) && !IGNORED_SERVER_KEYS.has(key))
      throw invalidInput(`server.${key}`, 'is not allowed (additional properties are not allowed)');
  }
  const name = optionalString(server.name, 'server.name', 255);
  if (name === undefined || name.trim() === '') throw invalidInput('server.name', 'is required');
  const imageRef = optionalString(server.imageRef, 'server.imageRef');
  if (!imageRef) throw invalidInput('server.imageRef', 'is required (booting from volumes is not supported)');
  if (!isUuidLike(imageRef)) throw invalidInput('server.imageRef', `Invalid imageRef provided: ${imageRef}`);
  const rawFlavor = server.flavorRef;
  if (rawFlavor === undefined || rawFlavor === null || rawFlavor === '')
    throw invalidInput('server.flavorRef', 'is required');
  if (typeof rawFlavor !== 'string' && !(typeof rawFlavor === 'number' && Number.isInteger(rawFlavor)))
    throw invalidInput('server.flavorRef', 'must be a flavor id');
  // Old clients send the flavor's URL (`.../flavors/42`); its last segment is the id.
  const flavorRef = String(rawFlavor).split('/').pop() as string;
  const minCount = optionalInt(server.min_count, 'server.min_count', 1, 1000) ?? 1;
  const maxCount = optionalInt(server.max_count, 'server.max_count', 1, 1000) ?? minCount;
  if (minCount > maxCount) throw invalidInput('server.min_count', 'must be <= max_count');
  const groups = server.security_groups;
  let securityGroups: string[] = [];
  if (groups !== undefined && groups !== null) {
    if (!Array.isArray(groups))
      throw invalidInput('server.security_groups', 'must be a list of {"name": ...}');
    securityGroups = groups.map((g, i) => {
      const n = g && typeof g === 'object' ? (g as Record<string, unknown>).name : undefined;
      if (typeof n !== 'string' || n === '')
        throw invalidInput(`server.security_groups.${i}.name`, 'is required and must be a string');
      return n;
    });
  }
  const availabilityZone = optionalString(server.availability_zone, 'server.availability_zone');
  return {
    name,
    imageRef: dashedUuid(imageRef),
    flavorRef,
    networks: parseNetworks(server.networks, version),
    securityGroups: [...new Set(securityGroups)],
    minCount,
    maxCount,
    ...(availabilityZone ? { availabilityZone } : {}),
    metadata: parseMetadata(server.metadata, 'server.metadata'),
    hints: parseHints(body['os:scheduler_hints'] ?? body['OS-SCH-HNT:scheduler_hints']),
  };
}

/** The one action of a `POST /servers/{id}/action` body (`{"os-stop": null}`) and its argument. */
export function actionOf(body: Record<string, unknown>): { name: string; args: Record<string, unknown> } {
  const keys = Object.keys(body);
  if (keys.length !== 1) throw invalidInput('body', 'must name exactly one action');
  const name = keys[0] as string;
  const args = body[name];
  if (args === null || args === undefined) return { name, args: {} };
  if (typeof args !== 'object' || Array.isArray(args)) throw invalidInput(name, 'must be an object or null');
  return { name, args: args as Record<string, unknown> };
}
