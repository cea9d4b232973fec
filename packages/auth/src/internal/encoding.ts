import { createHash, timingSafeEqual } from 'node:crypto';

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** Decodes base64url, refusing anything that would not re-encode to the same text (padding, stray bits). */
export function decodeBase64url(text: string): Buffer | undefined {
  if (!BASE64URL.test(text) || text.length % 4 === 1) return undefined;
  const bytes = Buffer.from(text, 'base64url');
  // Buffer's decoder ignores the unused low bits of the last character; without this check two
  // different texts would carry the same signature, and a mutated token could still verify.
  return bytes.toString('base64url') === text ? bytes : undefined;
}

/** Encodes bytes or UTF-8 text as base64url without padding. */
export function encodeBase64url(data: Buffer | string): string {
  return (typeof data === 'string' ? Buffer.from(data, 'utf8') : data).toString('base64url');
}

/**
 * Compares two secrets in time that depends only on their lengths' digests, never on where they
 * first differ: both sides are hashed first so that unequal lengths take the same path.
 */
export function safeEqual(a: string | Buffer, b: string | Buffer): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db);
}

/** Hex SHA-256 of UTF-8 text or bytes. */
export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
