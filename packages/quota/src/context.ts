import type { Entry, JsonValue, Store, StoreReader, Transaction, TransactionOptions } from '@nubes/core';
import { addUsage, subtractUsage, tracksParent, zeroUsage } from './hierarchy.js';
import type { QuotaKeys, ReceiptKind } from './keys.js';
import { defaultConfig } from './limits.js';
import {
  type ConfigRecord,
  emptyProject,
  type ProjectRecord,
  type ReceiptRecord,
  toJson,
  type Usage,
} from './records.js';

/** What the operations of one quota domain share: its store, key layout, clock and settings. */
export interface QuotaContext {
  store: Store;
  keys: QuotaKeys;
  now(): number;
  tx: TransactionOptions;
  receiptTtlMs: number;
}

/** The domain's configuration; an unconfigured domain has the standard resources and the flat model. */
export async function readConfig(reader: StoreReader, ctx: QuotaContext): Promise<ConfigRecord> {
  return (await reader.get<ConfigRecord>(ctx.keys.config()))?.value ?? defaultConfig();
}

/** A project's record; a project never seen has the defaults and no usage. */
export async function readProject(
  reader: StoreReader,
  ctx: QuotaContext,
  id: string,
): Promise<ProjectRecord> {
  return (await reader.get<ProjectRecord>(ctx.keys.project(id)))?.value ?? emptyProject();
}

function isEmpty(record: ProjectRecord): boolean {
  const empty = (v: object | undefined) => v === undefined || Object.keys(v).length === 0;
  return (
    record.parent === null &&
    empty(record.limits) &&
    empty(record.inUse) &&
    empty(record.reserved) &&
    empty(record.children?.inUse) &&
    empty(record.children?.reserved)
  );
}

/** Buffers a project's record; one back at its pristine state is deleted so unused projects leave no keys. */
export function writeProject(tx: Transaction, ctx: QuotaContext, id: string, record: ProjectRecord): void {
  if (isEmpty(record)) tx.delete(ctx.keys.project(id));
  else tx.put(ctx.keys.project(id), toJson(record));
}

/**
 * Applies `change` to a project's own usage and, in the strict model, the same difference to its parent's
 * children total, so the parent's tree usage stays the sum of its members.
 */
export function changeUsage(
  tx: Transaction,
  ctx: QuotaContext,
  config: ConfigRecord,
  id: string,
  record: ProjectRecord,
  parent: ProjectRecord | undefined,
  change: (own: Usage) => Usage,
): void {
  const before: Usage = { inUse: record.inUse, reserved: record.reserved };
  const after = change(before);
  writeProject(tx, ctx, id, { ...record, inUse: after.inUse, reserved: after.reserved });
  if (tracksParent(config.model, record) && parent) {
    const diff = subtractUsage(after, before);
    writeProject(tx, ctx, record.parent, {
      ...parent,
      children: addUsage(parent.children ?? zeroUsage(), diff),
    });
  }
}

/** The parent record a change to `record` must also update, if the model tracks one. */
export async function readTrackedParent(
  reader: StoreReader,
  ctx: QuotaContext,
  config: ConfigRecord,
  record: ProjectRecord,
): Promise<ProjectRecord | undefined> {
  return tracksParent(config.model, record) ? readProject(reader, ctx, record.parent) : undefined;
}

/** A receipt, if the operation it proves was applied and not yet forgotten. */
export async function readReceipt(
  reader: StoreReader,
  ctx: QuotaContext,
  kind: ReceiptKind,
  key: string,
): Promise<ReceiptRecord | undefined> {
  return (await reader.get<ReceiptRecord>(ctx.keys.receipt(kind, key)))?.value;
}

/** Records that an idempotent operation was applied; the sweeper forgets it after `receiptTtlMs`. */
export function writeReceipt(
  tx: Transaction,
  ctx: QuotaContext,
  kind: ReceiptKind,
  key: string,
  fingerprint: string,
  result: JsonValue,
  now: number,
): void {
  const forgetAt = now + ctx.receiptTtlMs;
  const receipt: ReceiptRecord = { kind, fingerprint, result, forgetAt };
  tx.put(ctx.keys.receipt(kind, key), toJson(receipt));
  tx.put(ctx.keys.receiptExpiry(forgetAt, kind, key), true);
}

/** Every entry under `prefix`, page by page (inside a transaction every page is validated at commit). */
export async function listAll<T>(reader: StoreReader, prefix: string): Promise<Entry<T>[]> {
  const out: Entry<T>[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await reader.list<T>(prefix, {
      limit: 1000,
      ...(startAfter === undefined ? {} : { startAfter }),
    });
    out.push(...page.items);
    if (page.next === undefined) return out;
    startAfter = page.next;
  }
}
