import { randomBytes, scrypt } from 'node:crypto';
import { safeEqual } from '../internal/encoding.js';

/** scrypt cost parameters. `N` must be a power of two. */
export interface ScryptParams {
  /** CPU/memory cost (default 2^16, Keystone's default; about 64 MiB and tens of ms per hash). */
  N: number;
  /** Block size (default 8). */
  r: number;
  /** Parallelism (default 1). */
  p: number;
}

/** The default scrypt cost: Keystone's defaults (`scrypt_block_size` 8, `scrypt_parallelism` 1, N = 2^16). */
export const DEFAULT_SCRYPT: ScryptParams = { N: 2 ** 16, r: 8, p: 1 };

const KEY_LENGTH = 32;
const FORMAT = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

function derive(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // maxmem must cover 128·N·r bytes, or node refuses the larger costs.
    const maxmem = 128 * params.N * params.r * 2 + 1024 * 1024;
    scrypt(password.normalize('NFKC'), salt, KEY_LENGTH, { ...params, maxmem }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

/**
 * Hashes a password with scrypt and a random salt, as a PHC-style string
 * (`$scrypt$ln=16,r=8,p=1$<salt>$<hash>`) that records its own cost, so the cost can be raised later
 * without breaking stored hashes.
 */
export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(password, salt, params);
  const ln = Math.log2(params.N);
  return `$scrypt$ln=${ln},r=${params.r},p=${params.p}$${salt.toString('base64').replace(/=+$/, '')}$${hash
    .toString('base64')
    .replace(/=+$/, '')}`;
}

/** True when `password` matches `stored`; the comparison is constant-time. A malformed hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const m = FORMAT.exec(stored);
  if (!m) return false;
  const params = { N: 2 ** Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
  const expected = Buffer.from(m[5] as string, 'base64');
  const actual = await derive(password, Buffer.from(m[4] as string, 'base64'), params);
  return safeEqual(actual, expected);
}
