import { z } from 'zod';

/**
 * Rates and sizes in a typed form. Numbers are plain units (bits per second, bytes); strings carry
 * a unit. Rendering for tc is always exact integers with an explicit unit, so tc never guesses.
 */

const RATE_UNITS: Record<string, number> = {
  bit: 1,
  kbit: 1e3,
  mbit: 1e6,
  gbit: 1e9,
  tbit: 1e12,
  kibit: 1024,
  mibit: 1024 ** 2,
  gibit: 1024 ** 3,
};

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** A rate: bits per second as a number, or a string such as `'10mbit'`, `'1.5gbit'`, `'512kbit'`. */
export type Rate = number | string;

/** A size: bytes as a number, or a string such as `'32k'`, `'256MiB'`, `'1g'` (K, M, G are powers of 1024). */
export type Size = number | string;

/** Parses a rate to bits per second, or returns an error message. */
export function parseRate(input: Rate): number | string {
  if (typeof input === 'number') {
    return Number.isFinite(input) && input >= 1 ? Math.round(input) : 'must be at least 1 bit per second';
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)(?:\/s)?\s*$/i.exec(input);
  if (!match) return `"${input}" is not a rate like 10mbit`;
  const unit = (match[2] ?? '').toLowerCase();
  // tc reads "mbps" as megabytes per second; people usually mean megabits, so refuse to guess.
  if (unit.endsWith('bps'))
    return `"${input}" is ambiguous: write ${unit.replace('bps', 'bit')} for bits per second`;
  const factor = RATE_UNITS[unit === '' ? 'bit' : unit];
  if (factor === undefined) return `"${input}" has an unknown unit (use bit, kbit, mbit, gbit)`;
  const bits = Math.round(Number(match[1]) * factor);
  return bits >= 1 ? bits : 'must be at least 1 bit per second';
}

/** Parses a size to bytes, or returns an error message. */
export function parseSize(input: Size): number | string {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0 ? input : 'must be a whole number of bytes';
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(input);
  if (!match) return `"${input}" is not a size like 32k or 256MiB`;
  const factor = SIZE_UNITS[(match[2] ?? '').toLowerCase()];
  if (factor === undefined) return `"${input}" has an unknown unit (use b, k, m, g)`;
  const bytes = Math.round(Number(match[1]) * factor);
  return Number.isSafeInteger(bytes) ? bytes : 'is too large';
}

function refineParsed<T>(parse: (v: T) => number | string) {
  return (value: T, ctx: z.RefinementCtx): number => {
    const parsed = parse(value);
    if (typeof parsed === 'string') {
      ctx.addIssue({ code: 'custom', message: parsed });
      return z.NEVER;
    }
    return parsed;
  };
}

/** A {@link Rate} validated and converted to bits per second. */
export const rateSchema = z.union([z.number(), z.string()]).transform(refineParsed<Rate>(parseRate));

/** A {@link Size} validated and converted to bytes. */
export const sizeSchema = z.union([z.number(), z.string()]).transform(refineParsed<Size>(parseSize));

/** Renders bits per second for tc, exactly: `10000000bit`. */
export function renderRate(bitsPerSecond: number): string {
  return `${Math.round(bitsPerSecond)}bit`;
}

/** Renders bytes for tc, exactly: a bare number is bytes to tc. */
export function renderSize(bytes: number): string {
  return `${Math.round(bytes)}`;
}
