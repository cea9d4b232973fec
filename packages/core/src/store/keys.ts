import { z } from 'zod';
import { invalidInput } from '../errors.js';
import { parseInput } from '../validation.js';
import type { JsonValue, ListOptions } from './types.js';

const keySchema = z
  .string()
  .min(1, 'must not be empty')
  .max(4096, 'must be at most 4096 characters')
  .refine((key) => !key.includes('\0'), 'must not contain NUL');

const prefixSchema = z
  .string()
  .max(4096, 'must be at most 4096 characters')
  .refine((key) => !key.includes('\0'), 'must not contain NUL');

const listOptionsSchema = z
  .object({
    limit: z.number().int().min(1).max(10_000).default(1000),
    startAfter: keySchema.optional(),
  })
  .strict();

const revisionSchema = z.number().int().nonnegative();

// Keys are checked on every call, so the common valid case skips zod; zod still words every refusal.
function plainKey(key: unknown, min: number): key is string {
  return typeof key === 'string' && key.length >= min && key.length <= 4096 && !key.includes('\0');
}

/** Validates a key, throwing `InvalidInput` naming `key`. */
export function checkKey(key: unknown, field = 'key'): string {
  return plainKey(key, 1) ? key : parseInput(keySchema, key, field);
}

/** Validates a prefix (which may be empty, meaning every key). */
export function checkPrefix(prefix: unknown): string {
  return plainKey(prefix, 0) ? prefix : parseInput(prefixSchema, prefix, 'prefix');
}

/** Validates list options and fills in the default limit. */
export function checkListOptions(options: ListOptions | undefined): { limit: number; startAfter?: string } {
  if (options === undefined) return { limit: 1000 };
  return parseInput(listOptionsSchema, options, 'options');
}

/** Validates a revision number. */
export function checkRevision(revision: unknown, field: string): number {
  return parseInput(revisionSchema, revision, field);
}

/** The UTF-8 bytes of a key: every backend orders keys by these. */
export function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'utf8');
}

/**
 * Moves UTF-16 code units into code point order: surrogates (0xD800-0xDFFF, halves of code points above
 * 0xFFFF) must sort after 0xE000-0xFFFF, as their UTF-8 bytes do.
 */
function codePointOrder(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}

/** Compares keys by UTF-8 bytes (the order SQLite BLOBs and PostgreSQL bytea use), without encoding them. */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointOrder(x) - codePointOrder(y);
  }
  return a.length - b.length;
}

/**
 * The first byte string after every key that starts with `prefix` (etcd's "prefix end"), or
 * `undefined` when there is no upper bound. UTF-8 never contains 0xFF, so incrementing the
 * last byte always works for a non-empty prefix.
 */
export function prefixEnd(prefix: string): Buffer | undefined {
  if (prefix === '') return undefined;
  const bytes = Buffer.from(keyBytes(prefix));
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) + 1;
  return bytes;
}

/** Serializes a value, throwing `InvalidInput` if it is not plain JSON (undefined, functions, NaN, cycles...). */
export function encodeValue(value: unknown, field = 'value'): string {
  assertJson(value, field, new Set());
  return JSON.stringify(value);
}

function assertJson(value: unknown, path: string, seen: Set<object>): asserts value is JsonValue {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) throw invalidInput(path, 'must be a finite number');
      return;
    case 'object': {
      if (value === null) return;
      if (seen.has(value)) throw invalidInput(path, 'must not contain cycles');
      seen.add(value);
      if (Array.isArray(value)) {
        value.forEach((item, i) => {
          assertJson(item, `${path}.${i}`, seen);
        });
      } else {
        const proto = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) throw invalidInput(path, 'must be a plain object');
        for (const [k, v] of Object.entries(value)) {
          if (v !== undefined) assertJson(v, `${path}.${k}`, seen);
        }
      }
      seen.delete(value);
      return;
    }
    default:
      throw invalidInput(path, `must be JSON, not ${typeof value}`);
  }
}
