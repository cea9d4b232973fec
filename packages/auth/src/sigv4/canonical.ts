import { createHash, createHmac } from 'node:crypto';

/** The algorithm name of AWS Signature Version 4 with HMAC-SHA256. */
export const SIGV4_ALGORITHM = 'AWS4-HMAC-SHA256';

/** Header values as node:http gives them. */
export type HeaderBag = Record<string, string | string[] | number | undefined>;

/** RFC 3986 encoding as SigV4 wants it: every byte but `A-Z a-z 0-9 - _ . ~` percent-encoded, upper-case hex. */
export function uriEncode(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, '%20'));
  } catch {
    return text;
  }
}

/**
 * The canonical URI: each path segment normalized to one level of encoding; services other than S3 encode
 * it a second time, as AWS specifies.
 */
export function canonicalUri(path: string, service: string): string {
  if (path === '' || path === '/') return '/';
  const segments = path.split('/').map((s) => uriEncode(safeDecode(s)));
  const once = segments.join('/');
  return service === 's3' ? once : once.split('/').map(uriEncode).join('/');
}

/** The canonical query string: pairs encoded, sorted by name then value; `X-Amz-Signature` left out. */
export function canonicalQuery(query: string): string {
  if (query === '') return '';
  return query
    .split('&')
    .filter((p) => p !== '')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq === -1 ? pair : pair.slice(0, eq);
      const value = eq === -1 ? '' : pair.slice(eq + 1);
      return [uriEncode(safeDecode(name)), uriEncode(safeDecode(value))] as const;
    })
    .filter(([name]) => name !== 'X-Amz-Signature')
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([n, v]) => `${n}=${v}`)
    .join('&');
}

/** Lower-cased header names mapped to their canonical values (trimmed, inner spaces collapsed, joined by `,`). */
export function normalizeHeaders(headers: HeaderBag): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, raw] of Object.entries(headers)) {
    if (raw === undefined) continue;
    const values = (Array.isArray(raw) ? raw : [String(raw)]).map((v) => v.trim().replace(/\s+/g, ' '));
    const key = name.toLowerCase();
    out.set(key, out.has(key) ? `${out.get(key)},${values.join(',')}` : values.join(','));
  }
  return out;
}

/** The canonical request of SigV4 task 1. */
export function canonicalRequest(parts: {
  method: string;
  path: string;
  query: string;
  headers: Map<string, string>;
  signedHeaders: readonly string[];
  payloadHash: string;
  service: string;
}): string {
  const headerLines = parts.signedHeaders.map((h) => `${h}:${parts.headers.get(h) ?? ''}\n`).join('');
  return [
    parts.method.toUpperCase(),
    canonicalUri(parts.path, parts.service),
    canonicalQuery(parts.query),
    headerLines,
    parts.signedHeaders.join(';'),
    parts.payloadHash,
  ].join('\n');
}

/** The credential scope: `date/region/service/aws4_request`. */
export function credentialScope(date: string, region: string, service: string): string {
  return `${date}/${region}/${service}/aws4_request`;
}

/** The string to sign of SigV4 task 2. */
export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return [SIGV4_ALGORITHM, amzDate, scope, sha256(canonical)].join('\n');
}

/** The derived signing key of SigV4 task 3: HMAC chain over date, region, service and `aws4_request`. */
export function deriveSigningKey(
  secretAccessKey: string,
  date: string,
  region: string,
  service: string,
): Buffer {
  const kDate = hmac(`AWS4${secretAccessKey}`, date);
  const kRegion = hmac(kDate, region);
  const kService = hmac(kRegion, service);
  return hmac(kService, 'aws4_request');
}

/** The final signature (hex) of SigV4 task 4. */
export function computeSignature(signingKey: Buffer, toSign: string): string {
  return createHmac('sha256', signingKey).update(toSign, 'utf8').digest('hex');
}

/** Hex SHA-256. */
export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** `YYYYMMDDTHHMMSSZ` of a time. */
export function amzDateOf(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

/** Milliseconds of an `YYYYMMDDTHHMMSSZ` time, or NaN. */
export function parseAmzDate(text: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) return Number.NaN;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** Splits a request target (`/path?query`) into path and query. */
export function splitTarget(url: string): { path: string; query: string } {
  const start =
    url.startsWith('http://') || url.startsWith('https://') ? url.indexOf('/', url.indexOf('//') + 2) : 0;
  const target = start === -1 ? '/' : url.slice(start);
  const q = target.indexOf('?');
  const hash = target.indexOf('#');
  const end = hash === -1 ? target.length : hash;
  return q === -1 || q > end
    ? { path: target.slice(0, end) || '/', query: '' }
    : { path: target.slice(0, q) || '/', query: target.slice(q + 1, end) };
}
