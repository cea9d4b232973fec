import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { NubesError } from '../errors.js';
import { parseInput } from '../validation.js';
import { BufferedTransaction, decodeEntry } from './buffered-transaction.js';
import type { CommitConflict, CommitRequest, Engine } from './engine.js';
import { checkKey, checkListOptions, checkPrefix, checkRevision, encodeValue } from './keys.js';
import { LogWatch } from './log-watch.js';
import type {
  DeleteOptions,
  Entry,
  JsonValue,
  ListOptions,
  ListPage,
  PutOptions,
  Store,
  Transaction,
  TransactionOptions,
  Watch,
  WatchOptions,
} from './types.js';

const putOptionsSchema = z.object({ ifRevision: z.number().int().nonnegative().optional() }).strict();
const txOptionsSchema = z.object({ maxAttempts: z.number().int().min(1).max(10_000).default(50) }).strict();
const watchOptionsSchema = z.object({ fromRevision: z.number().int().min(1).optional() }).strict();

function conflictError(conflict: CommitConflict, attempts?: number): NubesError {
  const what =
    conflict.key !== undefined
      ? `key ${JSON.stringify(conflict.key)}`
      : `prefix ${JSON.stringify(conflict.prefix)}`;
  const state =
    attempts === undefined && conflict.expected !== undefined
      ? `is at revision ${conflict.actual ?? 0}, not ${conflict.expected}`
      : 'changed concurrently';
  const suffix = attempts === undefined ? '' : ` (gave up after ${attempts} attempts)`;
  return new NubesError('Conflict', `${what} ${state}${suffix}`, {
    details: { ...conflict, ...(attempts === undefined ? {} : { attempts }) },
  });
}

/** Jittered exponential backoff: up to 1, 2, 4 ... 128 ms, then up to 250 ms. */
function backoff(attempt: number): number {
  return Math.random() * Math.min(250, 2 ** Math.min(attempt, 7));
}

/** The public Store API, built once over any {@link Engine}. */
export class EngineStore implements Store {
  private closed = false;

  constructor(private readonly engine: Engine) {}

  async get<T = JsonValue>(key: string): Promise<Entry<T> | undefined> {
    this.assertOpen();
    const entry = await this.engine.read(checkKey(key));
    return entry ? decodeEntry<T>(entry) : undefined;
  }

  async list<T = JsonValue>(prefix: string, options?: ListOptions): Promise<ListPage<T>> {
    this.assertOpen();
    checkPrefix(prefix);
    const { limit, startAfter } = checkListOptions(options);
    const stored = await this.engine.range(prefix, startAfter, limit + 1);
    const items = stored.slice(0, limit).map((e) => decodeEntry<T>(e));
    const last = items.at(-1);
    return stored.length > limit && last ? { items, next: last.key } : { items };
  }

  async put(key: string, value: JsonValue, options?: PutOptions): Promise<number> {
    this.assertOpen();
    checkKey(key);
    const { ifRevision } = options === undefined ? {} : parseInput(putOptionsSchema, options, 'options');
    const request: CommitRequest = {
      checks: ifRevision === undefined ? [] : [{ key, revision: ifRevision }],
      ranges: [],
      writes: [{ key, value: encodeValue(value) }],
    };
    const outcome = await this.engine.commit(request);
    if (!outcome.ok) throw conflictError(outcome.conflict);
    return outcome.revision;
  }

  async delete(key: string, options?: DeleteOptions): Promise<boolean> {
    this.assertOpen();
    checkKey(key);
    const { ifRevision } = options === undefined ? {} : parseInput(putOptionsSchema, options, 'options');
    const outcome = await this.engine.commit({
      checks: ifRevision === undefined ? [] : [{ key, revision: ifRevision }],
      ranges: [],
      writes: [{ key }],
    });
    if (!outcome.ok) throw conflictError(outcome.conflict);
    return outcome.removed > 0;
  }

  async transaction<R>(fn: (tx: Transaction) => Promise<R> | R, options?: TransactionOptions): Promise<R> {
    this.assertOpen();
    if (typeof fn !== 'function')
      throw new NubesError('InvalidInput', 'fn: must be a function', { details: { field: 'fn' } });
    const { maxAttempts } =
      options === undefined ? { maxAttempts: 50 } : parseInput(txOptionsSchema, options, 'options');
    let conflict: CommitConflict = {};
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const tx = new BufferedTransaction(this.engine);
      let result: R;
      try {
        result = await fn(tx);
      } catch (error) {
        // Reads inside one attempt are not a snapshot, so an error may rest on a torn read: retry if any read is stale.
        const stale = await this.staleRead(tx);
        if (!stale) throw error;
        conflict = stale;
        if (attempt < maxAttempts) await sleep(backoff(attempt));
        continue;
      }
      const request = tx.request();
      if (request.writes.length === 0 && request.checks.length === 0 && request.ranges.length === 0)
        return result;
      const outcome = await this.engine.commit(request);
      if (outcome.ok) return result;
      conflict = outcome.conflict;
      if (attempt < maxAttempts) await sleep(backoff(attempt));
    }
    throw conflictError(conflict, maxAttempts);
  }

  /** The first read of `tx` that no longer holds, if any. */
  private async staleRead(tx: BufferedTransaction): Promise<CommitConflict | undefined> {
    const { checks, ranges } = tx.request();
    if (checks.length === 0 && ranges.length === 0) return undefined;
    const outcome = await this.engine.commit({ checks, ranges, writes: [] });
    return outcome.ok ? undefined : outcome.conflict;
  }

  async watch<T = JsonValue>(prefix: string, options?: WatchOptions): Promise<Watch<T>> {
    this.assertOpen();
    checkPrefix(prefix);
    const { fromRevision } = parseInput(watchOptionsSchema, options ?? {}, 'options');
    const from = fromRevision ?? (await this.engine.revision()) + 1;
    return new LogWatch<T>(this.engine, prefix, from);
  }

  revision(): Promise<number> {
    this.assertOpen();
    return this.engine.revision();
  }

  async compact(revision: number): Promise<void> {
    this.assertOpen();
    checkRevision(revision, 'revision');
    const current = await this.engine.revision();
    if (revision > current) {
      throw new NubesError('InvalidInput', `revision: ${revision} is after the current revision ${current}`, {
        details: { field: 'revision', current },
      });
    }
    await this.engine.compact(revision);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.engine.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new NubesError('Unavailable', 'store is closed');
  }
}
