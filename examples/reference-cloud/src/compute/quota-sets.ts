/**
 * Nova's quota sets and absolute limits over `@nubes/quota`: Nova's names (`cores`, `ram`) mapped to the
 * Quota resources (`vcpus`, `memoryMiB`), the fields each microversion shows, and Nova's wording when a
 * reservation does not fit.
 */
import { invalidInput, isNubesError, NubesError } from '@nubes/core';
import type { ProjectUsage, Quota, QuotaFailure } from '@nubes/quota';
import type { Microversion } from './microversion.js';

/** One of Nova's quota fields and the Quota resource behind it. */
interface QuotaField {
  /** Nova's name in quota sets. */
  nova: string;
  /** The `@nubes/quota` resource. */
  resource: string;
  /** Registered with this default when the Quota does not know the resource yet (Nova's default). */
  registerDefault?: number;
  /** Shown only before this microversion (2.36 dropped the network proxies, 2.57 file injection). */
  until?: string;
  /** `limits` name of the maximum, and of the count used when Nova reports one. */
  maxName?: string;
  usedName?: string;
}

/** Nova's quota fields in the order Nova lists them. */
export const QUOTA_FIELDS: readonly QuotaField[] = [
  { nova: 'instances', resource: 'instances', maxName: 'maxTotalInstances', usedName: 'totalInstancesUsed' },
  { nova: 'cores', resource: 'vcpus', maxName: 'maxTotalCores', usedName: 'totalCoresUsed' },
  { nova: 'ram', resource: 'memoryMiB', maxName: 'maxTotalRAMSize', usedName: 'totalRAMUsed' },
  { nova: 'metadata_items', resource: 'metadataItems', registerDefault: 128, maxName: 'maxServerMeta' },
  { nova: 'key_pairs', resource: 'keyPairs', registerDefault: 100, maxName: 'maxTotalKeypairs' },
  {
    nova: 'server_groups',
    resource: 'serverGroups',
    registerDefault: 10,
    maxName: 'maxServerGroups',
    usedName: 'totalServerGroupsUsed',
  },
  {
    nova: 'server_group_members',
    resource: 'serverGroupMembers',
    registerDefault: 10,
    maxName: 'maxServerGroupMembers',
  },
  {
    nova: 'injected_files',
    resource: 'injectedFiles',
    registerDefault: 5,
    until: '2.57',
    maxName: 'maxPersonality',
  },
  {
    nova: 'injected_file_content_bytes',
    resource: 'injectedFileContentBytes',
    registerDefault: 10_240,
    until: '2.57',
    maxName: 'maxPersonalitySize',
  },
  {
    nova: 'injected_file_path_bytes',
    resource: 'injectedFilePathBytes',
    registerDefault: 255,
    until: '2.57',
  },
  {
    nova: 'floating_ips',
    resource: 'floatingIps',
    until: '2.36',
    maxName: 'maxTotalFloatingIps',
    usedName: 'totalFloatingIpsUsed',
  },
  { nova: 'fixed_ips', resource: 'fixedIps', registerDefault: -1, until: '2.36' },
  {
    nova: 'security_groups',
    resource: 'securityGroups',
    until: '2.36',
    maxName: 'maxSecurityGroups',
    usedName: 'totalSecurityGroupsUsed',
  },
  {
    nova: 'security_group_rules',
    resource: 'securityGroupRules',
    until: '2.36',
    maxName: 'maxSecurityGroupRules',
  },
];

/** Nova's name for a Quota resource (`vcpus` is `cores`), or the resource itself when Nova has none. */
export function novaQuotaName(resource: string): string {
  return QUOTA_FIELDS.find((f) => f.resource === resource)?.nova ?? resource;
}

function shown(field: QuotaField, version: Microversion): boolean {
  return field.until === undefined || !version.atLeast(field.until);
}

/**
 * Registers the compute resources the Quota does not know yet with Nova's defaults. Resources already
 * registered keep their default: another service (or an operator) may have set it.
 */
export async function registerComputeResources(quota: Quota): Promise<void> {
  const known = await quota.defaults();
  const missing: Record<string, number> = {};
  for (const f of QUOTA_FIELDS)
    if (f.registerDefault !== undefined && !(f.resource in known)) missing[f.resource] = f.registerDefault;
  if (Object.keys(missing).length) await quota.registerResources(missing);
}

/** `GET /os-quota-sets/{project}` (plain limits, with `id`) or `/detail` (limit, in_use, reserved each). */
export function quotaSetJson(
  usage: ProjectUsage,
  version: Microversion,
  options: { detail?: boolean; id?: boolean } = {},
): Record<string, unknown> {
  const out: Record<string, unknown> = options.id === false ? {} : { id: usage.project };
  for (const f of QUOTA_FIELDS) {
    if (!shown(f, version)) continue;
    const u = usage.resources[f.resource] ?? { limit: -1, inUse: 0, reserved: 0 };
    out[f.nova] = options.detail ? { limit: u.limit, in_use: u.inUse, reserved: u.reserved } : u.limit;
  }
  return out;
}

/** `GET /os-quota-sets/{project}/defaults`. */
export function quotaDefaultsJson(
  project: string,
  defaults: Record<string, number>,
  version: Microversion,
): Record<string, unknown> {
  const out: Record<string, unknown> = { id: project };
  for (const f of QUOTA_FIELDS) if (shown(f, version)) out[f.nova] = defaults[f.resource] ?? -1;
  return out;
}

/** What `PUT /os-quota-sets/{project}` asks for: new limits by Quota resource, and Nova's `force`. */
export interface QuotaSetUpdate {
  limits: Record<string, number>;
  force: boolean;
}

/** Validates `{ quota_set: { instances: 2, force?: bool } }`; unknown or out-of-version fields are `InvalidInput`. */
export function parseQuotaSetUpdate(set: Record<string, unknown>, version: Microversion): QuotaSetUpdate {
  const limits: Record<string, number> = {};
  let force = false;
  for (const [key, value] of Object.entries(set)) {
    if (key === 'force') {
      if (
        typeof value !== 'boolean' &&
        value !== 'True' &&
        value !== 'False' &&
        value !== 'true' &&
        value !== 'false'
      )
        throw invalidInput('quota_set.force', 'must be a boolean');
      force = value === true || value === 'True' || value === 'true';
      continue;
    }
    const field = QUOTA_FIELDS.find((f) => f.nova === key && shown(f, version));
    if (!field) throw invalidInput(`quota_set.${key}`, 'is not a quota this API version sets');
    const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < -1 || n > 2 ** 31 - 1)
      throw invalidInput(`quota_set.${key}`, 'must be an integer from -1 (unlimited) to 2147483647');
    limits[field.resource] = n;
  }
  return { limits, force };
}

/**
 * Nova refuses a limit below what is used and reserved unless `force` is given:
 * `Quota limit 1 for instances must be greater than or equal to already used and reserved 2.`
 */
export function checkNotBelowUsage(update: QuotaSetUpdate, usage: ProjectUsage): void {
  if (update.force) return;
  for (const [resource, limit] of Object.entries(update.limits)) {
    const u = usage.resources[resource];
    if (!u || limit === -1) continue;
    const used = u.inUse + u.reserved;
    if (limit < used)
      throw invalidInput(
        `quota_set.${novaQuotaName(resource)}`,
        `Quota limit ${limit} for ${novaQuotaName(resource)} must be greater than or equal to already used and reserved ${used}.`,
      );
  }
}

/** `GET /limits`: the absolute limits and what is used of them, with the fields of the microversion. */
export function limitsJson(usage: ProjectUsage, version: Microversion): Record<string, unknown> {
  const absolute: Record<string, number> = {};
  for (const f of QUOTA_FIELDS) {
    if (!shown(f, version)) continue;
    const u = usage.resources[f.resource] ?? { limit: -1, inUse: 0, reserved: 0 };
    if (f.maxName) absolute[f.maxName] = u.limit;
    // Nova counts a server as used from the moment it exists: a building one holds a reservation here.
    if (f.usedName) absolute[f.usedName] = u.inUse + u.reserved;
  }
  if (!version.atLeast('2.39')) absolute.maxImageMeta = absolute.maxServerMeta ?? 128;
  return { limits: { rate: [], absolute } };
}

/**
 * Rewrites `@nubes/quota`'s `QuotaExceeded` in Nova's words, which scripts grep for:
 * `Quota exceeded for instances: Requested 1, but already used 2 of 2 instances`. Other errors pass through.
 */
export function novaQuotaError(error: unknown): unknown {
  if (!isNubesError(error, 'QuotaExceeded')) return error;
  const failures = (error.details.resources as QuotaFailure[] | undefined) ?? [];
  if (!failures.length) return error;
  const sorted = [...failures].sort((a, b) =>
    novaQuotaName(a.resource).localeCompare(novaQuotaName(b.resource)),
  );
  const overs = sorted.map((f) => novaQuotaName(f.resource)).join(', ');
  const requested = sorted.map((f) => f.requested).join(', ');
  const used = sorted.map((f) => f.inUse + f.reserved).join(', ');
  const allowed = sorted.map((f) => f.limit).join(', ');
  return new NubesError(
    'QuotaExceeded',
    `Quota exceeded for ${overs}: Requested ${requested}, but already used ${used} of ${allowed} ${overs}`,
    { cause: error, details: error.details },
  );
}
