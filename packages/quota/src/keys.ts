/**
 * Where quota state lives in the Store. Everything sits under one prefix so several independent quota
 * domains (or tests) can share a store.
 */

/** Wide enough for any millisecond timestamp until the year 33658, so index keys sort by time. */
const TIME_DIGITS = 15;

function timeSegment(ms: number): string {
  return String(Math.max(0, Math.floor(ms))).padStart(TIME_DIGITS, '0');
}

/** Kinds of idempotency receipt. */
export type ReceiptKind = 'reserve' | 'settle' | 'release';

/** The key layout of one quota domain. */
export class QuotaKeys {
  constructor(readonly prefix: string) {}

  /** Registered resources and the enforcement model: one key, so every operation reads them in one go. */
  config(): string {
    return `${this.prefix}config`;
  }

  /** A project's limits, parent, usage and (strict model, parents only) its children's totals. */
  project(id: string): string {
    return `${this.prefix}projects/${id}`;
  }

  projects(): string {
    return `${this.prefix}projects/`;
  }

  /** Index of a parent's children, so tree reports and hierarchy checks need no full scan. */
  child(parent: string, child: string): string {
    return `${this.prefix}children/${parent}/${child}`;
  }

  children(parent: string): string {
    return `${this.prefix}children/${parent}/`;
  }

  reservation(id: string): string {
    return `${this.prefix}reservations/${id}`;
  }

  /** Reservations ordered by expiry, so the sweeper reads only what is due. */
  expiry(expiresAt: number, id: string): string {
    return `${this.prefix}expiry/${timeSegment(expiresAt)}/${id}`;
  }

  expiries(): string {
    return `${this.prefix}expiry/`;
  }

  receipt(kind: ReceiptKind, key: string): string {
    return `${this.prefix}receipts/${kind}/${key}`;
  }

  /** Receipts ordered by the time they may be forgotten. */
  receiptExpiry(forgetAt: number, kind: ReceiptKind, key: string): string {
    return `${this.prefix}receipt-expiry/${timeSegment(forgetAt)}/${kind}/${key}`;
  }

  receiptExpiries(): string {
    return `${this.prefix}receipt-expiry/`;
  }

  /** The time and the rest of an index key written by {@link expiry} or {@link receiptExpiry}. */
  parseIndex(indexPrefix: string, key: string): { at: number; rest: string } {
    const tail = key.slice(indexPrefix.length);
    const slash = tail.indexOf('/');
    return { at: Number(tail.slice(0, slash)), rest: tail.slice(slash + 1) };
  }
}
