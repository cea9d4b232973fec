import { invalidInput, parseInput } from '@nubes/core';
import { z } from 'zod';
import {
  amzDateOf,
  canonicalRequest,
  computeSignature,
  credentialScope,
  deriveSigningKey,
  type HeaderBag,
  normalizeHeaders,
  SIGV4_ALGORITHM,
  sha256,
  splitTarget,
  stringToSign,
} from './canonical.js';

/** An HTTP request to sign or verify. `url` is the request target (`/path?query`) or an absolute URL. */
export interface SigV4Request {
  method: string;
  url: string;
  headers: HeaderBag;
  /** The body; its SHA-256 is signed unless `x-amz-content-sha256` says `UNSIGNED-PAYLOAD`. */
  body?: string | Buffer;
}

/** An access key pair and where the request goes. */
export interface SigV4Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  service: string;
}

/** The zod schema of a {@link SigV4Request}. */
export const sigv4RequestSchema = z.object({
  method: z.string().regex(/^[A-Za-z]{1,16}$/),
  url: z.string().min(1).max(16_384),
  headers: z.record(z.string(), z.union([z.string(), z.array(z.string()), z.number(), z.undefined()])),
  body: z.union([z.string(), z.instanceof(Buffer)]).optional(),
});
const credentialsSchema = z.object({
  accessKeyId: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[^/\s,=]+$/),
  secretAccessKey: z.string().min(1).max(256),
  region: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[^/\s]+$/),
  service: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[^/\s]+$/),
});

/** The headers AWS signs besides those the caller names. */
const ALWAYS_SIGNED = /^(host|content-type|content-md5|x-amz-.*)$/;

/**
 * Signs a request in the manner of AWS Signature Version 4 (client side) and returns the headers to add:
 * `authorization`, `x-amz-date`, and `x-amz-content-sha256`. `host` must be among the headers (or in an
 * absolute `url`).
 */
export function signRequest(
  request: SigV4Request,
  credentials: SigV4Credentials,
  options: { now?: number } = {},
): { authorization: string; 'x-amz-date': string; 'x-amz-content-sha256': string } {
  const r = parseInput(sigv4RequestSchema, request, 'request');
  const c = parseInput(credentialsSchema, credentials, 'credentials');
  const amzDate = amzDateOf(options.now ?? Date.now());
  const headers = normalizeHeaders(r.headers);
  if (!headers.has('host')) {
    const host = /^https?:\/\/([^/?#]+)/.exec(r.url)?.[1];
    if (!host) throw invalidInput('request.headers.host', 'is required to sign a request');
    headers.set('host', host);
  }
  const payloadHash = headers.get('x-amz-content-sha256') ?? sha256(r.body ?? '');
  headers.set('x-amz-date', amzDate);
  headers.set('x-amz-content-sha256', payloadHash);
  headers.delete('authorization');
  const signedHeaders = [...headers.keys()].filter((h) => ALWAYS_SIGNED.test(h)).sort();
  const { path, query } = splitTarget(r.url);
  const scope = credentialScope(amzDate.slice(0, 8), c.region, c.service);
  const canonical = canonicalRequest({
    method: r.method,
    path,
    query,
    headers,
    signedHeaders,
    payloadHash,
    service: c.service,
  });
  const signature = computeSignature(
    deriveSigningKey(c.secretAccessKey, amzDate.slice(0, 8), c.region, c.service),
    stringToSign(amzDate, scope, canonical),
  );
  return {
    authorization: `${SIGV4_ALGORITHM} Credential=${c.accessKeyId}/${scope}, SignedHeaders=${signedHeaders.join(';')}, Signature=${signature}`,
    'x-amz-date': amzDate,
    'x-amz-content-sha256': payloadHash,
  };
}
