import type { Resources, Transaction } from '@nubes/core';
import {
  changeUsage,
  type QuotaContext,
  readConfig,
  readProject,
  readTrackedParent,
  writeReceipt,
} from './context.js';
import { shift } from './hierarchy.js';
import { type ReservationRecord, toJson } from './records.js';

/** How a reservation ended. */
export type SettlementOutcome = 'committed' | 'rolledBack' | 'expired';

/** What `commit`, `rollback` and the sweeper report about a reservation they settled. */
export interface Settlement {
  reservation: string;
  project: string;
  deltas: Resources;
  outcome: SettlementOutcome;
  /** True when this call found the reservation already settled the same way and changed nothing. */
  replayed: boolean;
}

/**
 * Ends a reservation inside `tx`: its amounts leave `reserved` and, when committed, join `inUse`; the
 * reservation and its expiry entry go, and a receipt stays so a retried call sees how it ended.
 */
export async function settleInTx(
  tx: Transaction,
  ctx: QuotaContext,
  reservation: ReservationRecord,
  outcome: SettlementOutcome,
  now: number,
): Promise<Settlement> {
  const [config, record] = await Promise.all([
    readConfig(tx, ctx),
    readProject(tx, ctx, reservation.project),
  ]);
  const parent = await readTrackedParent(tx, ctx, config, record);
  changeUsage(tx, ctx, config, reservation.project, record, parent, (own) => {
    const released = shift(own, 'reserved', reservation.deltas, -1);
    return outcome === 'committed' ? shift(released, 'inUse', reservation.deltas, 1) : released;
  });
  tx.delete(ctx.keys.reservation(reservation.id));
  tx.delete(ctx.keys.expiry(reservation.expiresAt, reservation.id));
  const settlement: Settlement = {
    reservation: reservation.id,
    project: reservation.project,
    deltas: reservation.deltas,
    outcome,
    replayed: false,
  };
  writeReceipt(tx, ctx, 'settle', reservation.id, reservation.id, toJson(settlement), now);
  return settlement;
}
