/**
 * Nova's microversions: which version of the compute API a request asks for, how that is negotiated against
 * the range this cloud implements, and the version documents clients read to learn that range.
 *
 * novaclient (what python-openstackclient uses for servers, hypervisors and quotas) sends 2.1 unless told
 * otherwise; openstacksdk (flavors, server groups) reads the version document and asks for up to the
 * version each resource knows (2.61 for flavors, 2.64 for server groups). Both headers Nova ever accepted
 * are honoured, the newer one first, exactly as Nova's `api_version_request` does.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { invalidInput } from '@nubes/core';

/** A compute API microversion, `major.minor`. */
export class Microversion {
  constructor(
    readonly major: number,
    readonly minor: number,
  ) {}

  /** Parses `2.61`; `undefined` for anything else (Nova's format: no leading zeros, no sign). */
  static parse(text: string): Microversion | undefined {
    const m = /^([1-9]\d*)\.([1-9]\d*|0)$/.exec(text.trim());
    if (!m) return undefined;
    return new Microversion(Number(m[1]), Number(m[2]));
  }

  /** Orders two versions: negative, zero or positive. */
  compare(other: Microversion): number {
    return this.major - other.major || this.minor - other.minor;
  }

  /** True when this version is `version` or newer (`'2.47'`): how features are gated. */
  atLeast(version: string): boolean {
    const other = Microversion.parse(version);
    if (!other) throw new Error(`not a microversion: ${version}`);
    return this.compare(other) >= 0;
  }

  /** `2.61` */
  toString(): string {
    return `${this.major}.${this.minor}`;
  }
}

/** The oldest microversion served: 2.1, the base of the v2.1 API. */
export const MIN_MICROVERSION = new Microversion(2, 1);

/**
 * The newest microversion served. 2.73 covers everything openstacksdk 0.101 asks for (flavors 2.61, server
 * groups 2.64, servers 2.72): every change up to it that touches what this cloud serves is implemented
 * (see the README for the list and for the calls outside this cloud's scope).
 */
export const MAX_MICROVERSION = new Microversion(2, 73);

/** The headers a response carries for its negotiated version, so caches and clients see what was served. */
export function versionHeaders(version: Microversion): Record<string, string> {
  return {
    'openstack-api-version': `compute ${version}`,
    'x-openstack-nova-api-version': String(version),
    vary: 'OpenStack-API-Version, X-OpenStack-Nova-API-Version',
  };
}

/** What {@link negotiate} decided: the version to serve, or why none can be (HTTP 406). */
export type Negotiation =
  | { ok: true; version: Microversion }
  | { ok: false; requested: string; message: string };

/** The compute entry of an `OpenStack-API-Version` header (`compute 2.61, image 2.5`), if any. */
function fromServiceHeader(value: string | string[] | undefined): string | undefined {
  const values = Array.isArray(value) ? value : value === undefined ? [] : [value];
  for (const item of values.flatMap((v) => v.split(','))) {
    const [service, version, ...rest] = item.trim().split(/\s+/);
    if (service?.toLowerCase() === 'compute' && version !== undefined && rest.length === 0) return version;
  }
  return undefined;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Picks the version a request is served at. `OpenStack-API-Version: compute X` wins over
 * `X-OpenStack-Nova-API-Version: X`; no header means the minimum (as Nova does, so old clients keep working);
 * `latest` means the maximum.
 *
 * @throws NubesError `InvalidInput` (field `OpenStack-API-Version`) for a string that is not a version.
 */
export function negotiate(
  headers: IncomingHttpHeaders,
  range: { min: Microversion; max: Microversion } = { min: MIN_MICROVERSION, max: MAX_MICROVERSION },
): Negotiation {
  const fromNew = fromServiceHeader(headers['openstack-api-version']);
  const fromLegacy = single(headers['x-openstack-nova-api-version']);
  const raw = fromNew ?? fromLegacy;
  const field = fromNew !== undefined ? 'OpenStack-API-Version' : 'X-OpenStack-Nova-API-Version';
  if (raw === undefined || raw.trim() === '') return { ok: true, version: range.min };
  if (raw.trim().toLowerCase() === 'latest') return { ok: true, version: range.max };
  const version = Microversion.parse(raw);
  if (!version)
    throw invalidInput(
      field,
      `API Version String ${raw} is of invalid format. Must be of format MajorNum.MinorNum.`,
    );
  if (version.compare(range.min) < 0 || version.compare(range.max) > 0)
    return {
      ok: false,
      requested: raw,
      message: `Version ${version} is not supported by the API. Minimum is ${range.min} and maximum is ${range.max}.`,
    };
  return { ok: true, version };
}

/** The v2.1 version entry, as `GET /compute/v2.1` and the root list show it. */
export function versionEntry(base: string): Record<string, unknown> {
  return {
    id: 'v2.1',
    status: 'CURRENT',
    version: String(MAX_MICROVERSION),
    min_version: String(MIN_MICROVERSION),
    updated: '2013-07-23T11:33:21Z',
    links: [
      { rel: 'self', href: `${base}/compute/v2.1/` },
      { rel: 'describedby', type: 'text/html', href: 'http://docs.openstack.org/' },
    ],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.compute+json;version=2.1' }],
  };
}

/**
 * `GET /compute/`: the versions this endpoint serves. Only v2.1: the legacy v2.0 API (no microversions) is
 * not served, so it is not advertised.
 */
export function versionsDocument(base: string): Record<string, unknown> {
  return { versions: [versionEntry(base)] };
}
