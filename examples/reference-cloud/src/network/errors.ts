/**
 * Neutron's error shape, `{"NeutronError": {"type", "message", "detail"}}`, and the translation of the
 * errors the Nubes packages throw into Neutron's types, status codes and attribute names, so a client sees
 * `cidr` and `gateway_ip` where `@nubes/netns` says `subnet.cidr` and `subnet.gateway`.
 */
import { NubesError } from '@nubes/core';

/** The `type` Neutron gives an error when nothing more specific is known, by HTTP status. */
const TYPE_BY_STATUS: Record<number, string> = {
  400: 'HTTPBadRequest',
  401: 'HTTPUnauthorized',
  403: 'HTTPForbidden',
  404: 'HTTPNotFound',
  405: 'HTTPMethodNotAllowed',
  409: 'Conflict',
  413: 'HTTPRequestEntityTooLarge',
  500: 'HTTPInternalServerError',
  501: 'HTTPNotImplemented',
  503: 'ServiceUnavailable',
};

/** Neutron's error body for a status, message and the error thrown. */
export function neutronErrorBody(status: number, message: string, error: unknown): unknown {
  const type =
    error instanceof NubesError && typeof error.details.neutronType === 'string'
      ? error.details.neutronType
      : (TYPE_BY_STATUS[status] ?? 'NeutronException');
  return { NeutronError: { type, message, detail: '' } };
}

/** A `NotFound` with Neutron's type and message (`Network <id> could not be found.`). */
export function neutronNotFound(kind: string, id: string): NubesError {
  const type = `${kind.replace(/\s+(\w)/g, (_m, c: string) => c.toUpperCase()).replace(/^\w/, (c) => c.toUpperCase())}NotFound`;
  return new NubesError('NotFound', `${kind[0]?.toUpperCase()}${kind.slice(1)} ${id} could not be found.`, {
    details: { neutronType: type, id },
  });
}

/** A `Conflict` with a Neutron type (`NetworkInUse`, `IpAddressAlreadyAllocated`, ...). */
export function neutronConflict(type: string, message: string): NubesError {
  return new NubesError('Conflict', message, { details: { neutronType: type } });
}

/** A policy refusal (403), as Neutron words it. */
export function policyRefusal(action: string): NubesError {
  return new NubesError('Forbidden', `(rule:${action}) is disallowed by policy`, {
    details: { neutronType: 'PolicyNotAuthorized', action },
  });
}

/** `@nubes/netns` field names (camelCase, under `subnet.`, `port.` ...) and the Neutron attributes they are. */
const ATTRIBUTES: [RegExp, string][] = [
  [/\ballocationPools\b/g, 'allocation_pools'],
  [/\bdnsNameservers\b/g, 'dns_nameservers'],
  [/\bhostRoutes\b/g, 'host_routes'],
  [/\bfixedIps\b/g, 'fixed_ips'],
  [/\bnetworkId\b/g, 'network_id'],
  [/\bsubnetId\b/g, 'subnet_id'],
  [/\bportId\b/g, 'port_id'],
  [/\brouterId\b/g, 'router_id'],
  [/\bfloatingIpId\b/g, 'floatingip_id'],
  [/\bsecurityGroups\b/g, 'security_groups'],
  [/\bportSecurity\b/g, 'port_security_enabled'],
  [/\bportRangeMin\b/g, 'port_range_min'],
  [/\bportRangeMax\b/g, 'port_range_max'],
  [/\bremoteIpPrefix\b/g, 'remote_ip_prefix'],
  [/\bremoteGroupId\b/g, 'remote_group_id'],
  [/\bsubnet\.gateway\b/g, 'subnet.gateway_ip'],
  [/\bport\.mac\b/g, 'port.mac_address'],
  [/\bfloatingIp\.ip\b/g, 'floatingIp.floating_ip_address'],
  [/^(?:subnet|port|network|router|floatingIp|securityGroup|rule|update|binding)\./, ''],
];

function neutronField(field: string): string {
  return ATTRIBUTES.reduce((f, [pattern, name]) => f.replace(pattern, name), field);
}

/**
 * Rewrites an error a Nubes package threw into Neutron's terms: field names become Neutron attribute
 * names, a quota refusal is Neutron's `OverQuota` (409), a taken address `IpAddressAlreadyAllocated`, an
 * exhausted subnet `IpAddressGenerationFailure`. Anything else passes through unchanged.
 */
export function toNeutronError(error: unknown): unknown {
  if (!(error instanceof NubesError)) return error;
  if (error.code === 'QuotaExceeded') return overQuota(error);
  if (typeof error.details.neutronType === 'string') return error;
  const field = typeof error.details.field === 'string' ? error.details.field : undefined;
  if (!field) return error;
  const name = neutronField(field);
  const rest = error.message.startsWith(`${field}: `) ? error.message.slice(field.length + 2) : error.message;
  let type: string | undefined;
  if (error.code === 'Conflict' && /already allocated/.test(rest)) type = 'IpAddressAlreadyAllocated';
  else if (error.code === 'Conflict' && /no free address/.test(rest)) type = 'IpAddressGenerationFailure';
  else if (error.code === 'Conflict' && /already in use/.test(rest)) type = 'MacAddressInUse';
  else if (error.code === 'InvalidInput') type = 'HTTPBadRequest';
  return new NubesError(error.code, `${name}: ${rest}`, {
    cause: error,
    details: { ...error.details, field: name, ...(type ? { neutronType: type } : {}) },
  });
}

function overQuota(error: NubesError): NubesError {
  const resources = Array.isArray(error.details.resources)
    ? (error.details.resources as { resource?: unknown }[]).map((r) => String(r.resource))
    : [];
  const names = resources.map((r) => QUOTA_NAMES[r] ?? r);
  return new NubesError(
    'Conflict',
    `Quota exceeded for resources: [${names.map((n) => `'${n}'`).join(', ')}].`,
    {
      cause: error,
      details: { neutronType: 'OverQuota', resources: names },
    },
  );
}

/** Neutron's quota resource names by `@nubes/quota` resource. */
export const QUOTA_NAMES: Record<string, string> = {
  networks: 'network',
  subnets: 'subnet',
  ports: 'port',
  routers: 'router',
  floatingIps: 'floatingip',
  securityGroups: 'security_group',
  securityGroupRules: 'security_group_rule',
};
