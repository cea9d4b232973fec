import { isNubesError } from '@nubes/core';
import type { QuotaContext } from './context.js';
import type { ReceiptKind } from './keys.js';
import type { ReservationRecord } from './records.js';
import { settleInTx } from './settle.js';

/** What one sweep did. */
export interface SweepResult {
  /** Ids of the reservations this sweep expired and released. */
  expired: string[];
  /** Idempotency receipts forgotten. */
  forgotten: number;
}

/** A running background sweeper. */
export interface Sweeper {
  /** Stops it; resolves once a sweep in progress has finished. */
  stop(): Promise<void>;
}

const PAGE = 100;

async function expireOne(ctx: QuotaContext, id: string, indexKey: string, now: number): Promise<boolean> {
  return ctx.store.transaction(async (tx) => {
    const entry = await tx.get<ReservationRecord>(ctx.keys.reservation(id));
    if (!entry) {
      // Settled meanwhile (by a commit or another sweeper); only a stale index entry could be left.
      tx.delete(indexKey);
      return false;
    }
    if (entry.value.expiresAt > now) return false;
    await settleInTx(tx, ctx, entry.value, 'expired', now);
    return true;
  }, ctx.tx);
}

async function expireReservations(ctx: QuotaContext, now: number): Promise<string[]> {
  const prefix = ctx.keys.expiries();
  const expired: string[] = [];
  for (;;) {
    const page = await ctx.store.list<boolean>(prefix, { limit: PAGE });
    const due = page.items.filter((e) => ctx.keys.parseIndex(prefix, e.key).at <= now);
    for (const entry of due) {
      const id = ctx.keys.parseIndex(prefix, entry.key).rest;
      if (await expireOne(ctx, id, entry.key, now)) expired.push(id);
    }
    // The index is in time order: a page with anything not yet due ends the sweep.
    if (due.length < page.items.length || page.next === undefined) return expired;
  }
}

async function forgetReceipts(ctx: QuotaContext, now: number): Promise<number> {
  const prefix = ctx.keys.receiptExpiries();
  let forgotten = 0;
  for (;;) {
    const page = await ctx.store.list<boolean>(prefix, { limit: PAGE });
    const due = page.items.filter((e) => ctx.keys.parseIndex(prefix, e.key).at <= now);
    if (due.length > 0) {
      await ctx.store.transaction((tx) => {
        for (const entry of due) {
          const rest = ctx.keys.parseIndex(prefix, entry.key).rest;
          const slash = rest.indexOf('/');
          tx.delete(ctx.keys.receipt(rest.slice(0, slash) as ReceiptKind, rest.slice(slash + 1)));
          tx.delete(entry.key);
        }
      }, ctx.tx);
      forgotten += due.length;
    }
    if (due.length < page.items.length || page.next === undefined) return forgotten;
  }
}

/** Expires due reservations and forgets old receipts, once. */
export async function sweep(ctx: QuotaContext): Promise<SweepResult> {
  const now = ctx.now();
  const expired = await expireReservations(ctx, now);
  const forgotten = await forgetReceipts(ctx, now);
  return { expired, forgotten };
}

/** Runs {@link sweep} every `intervalMs`, never two at once, without keeping the process alive. */
export function startSweeper(
  ctx: QuotaContext,
  intervalMs: number,
  onError?: (error: unknown) => void,
): Sweeper {
  let running: Promise<void> | undefined;
  let stopped = false;
  const tick = () => {
    if (running || stopped) return;
    running = sweep(ctx)
      .then(
        () => undefined,
        (error: unknown) => {
          // A store that is closing is the normal end of a sweeper's life, not an error worth reporting.
          if (!(stopped && isNubesError(error, 'Unavailable'))) onError?.(error);
        },
      )
      .finally(() => {
        running = undefined;
      });
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
