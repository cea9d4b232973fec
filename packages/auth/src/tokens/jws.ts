import { type KeyObject, sign, verify } from 'node:crypto';
import { decodeBase64url, encodeBase64url } from '../internal/encoding.js';
import { unauthorized } from '../internal/errors.js';

/** The signature algorithms this package signs and accepts: EdDSA (Ed25519, the default) and ES256 (P-256). */
export type SigningAlgorithm = 'EdDSA' | 'ES256';

/** The protected header of a token. */
export interface JwsHeader {
  alg: SigningAlgorithm;
  typ: 'JWT';
  kid: string;
}

/** A compact JWS split into its parts, before any check of the signature. */
export interface DecodedJws {
  header: { alg?: unknown; kid?: unknown; typ?: unknown; crit?: unknown; [key: string]: unknown };
  payload: Buffer;
  signingInput: string;
  signature: Buffer;
}

/** Longest token accepted, far above a real one, so a hostile header cannot cost much to parse. */
export const MAX_TOKEN_LENGTH = 8192;

/** Signs `payload` as a compact JWS (RFC 7515) with `key`, whose type must suit `header.alg`. */
export function signJws(header: JwsHeader, payload: object, key: KeyObject): string {
  const signingInput = `${encodeBase64url(JSON.stringify(header))}.${encodeBase64url(JSON.stringify(payload))}`;
  return `${signingInput}.${encodeBase64url(signBytes(header.alg, key, Buffer.from(signingInput)))}`;
}

/** Raw signature of `data`: Ed25519, or ECDSA P-256 with SHA-256 in the 64-byte JOSE form. */
export function signBytes(alg: SigningAlgorithm, key: KeyObject, data: Buffer): Buffer {
  return alg === 'EdDSA' ? sign(null, data, key) : sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
}

/** True when `signature` over `data` verifies with `key` under `alg`. */
export function verifyBytes(alg: SigningAlgorithm, key: KeyObject, data: Buffer, signature: Buffer): boolean {
  if (alg === 'EdDSA') return signature.length === 64 && verify(null, data, key, signature);
  return signature.length === 64 && verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
}

/** Splits and decodes a compact JWS; throws `Unauthorized` (`malformed`) on anything but three canonical parts. */
export function decodeJws(token: string): DecodedJws {
  if (token.length > MAX_TOKEN_LENGTH) throw unauthorized('malformed', 'the token is too long');
  const first = token.indexOf('.');
  const second = token.indexOf('.', first + 1);
  if (first <= 0 || second <= first + 1 || token.indexOf('.', second + 1) !== -1)
    throw unauthorized('malformed', 'the token is not a compact JWS of three parts');
  const headerBytes = decodeBase64url(token.slice(0, first));
  const payload = decodeBase64url(token.slice(first + 1, second));
  const signature = decodeBase64url(token.slice(second + 1));
  if (!headerBytes || !payload || !signature)
    throw unauthorized('malformed', 'a token part is not canonical base64url');
  let header: unknown;
  try {
    header = JSON.parse(headerBytes.toString('utf8'));
  } catch {
    throw unauthorized('malformed', 'the token header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    throw unauthorized('malformed', 'the token header is not a JSON object');
  return { header: header as DecodedJws['header'], payload, signingInput: token.slice(0, second), signature };
}
