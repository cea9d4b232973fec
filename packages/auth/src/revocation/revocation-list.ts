import { randomBytes } from 'node:crypto';
import { parseInput, type Store, type Transaction, type Watch } from '@nubes/core';
import { type Clock, systemClock } from '../internal/clock.js';
import { listAll, toJson } from '../internal/store-util.js';
import {
  matchesEvent,
  type RevocationCriteria,
  type RevocationEvent,
  type RevocationSource,
  type RevocationSubject,
  revocationCriteriaSchema,
  revocationEventSchema,
} from './events.js';

/** Options of {@link RevocationList.open}. */
export interface RevocationListOptions {
  /** Store key prefix of the auth state (default `auth/`). */
  prefix?: string;
  /** How long an event is kept: the longest token lifetime in ms (default 1 hour). */
  retentionMs?: number;
  /** Follow the Store with a watch so events from other processes apply at once (default true). */
  watch?: boolean;
  clock?: Clock;
}

/** The Store key prefix of revocation events. */
export function revocationPrefix(prefix: string): string {
  return `${prefix}revocations/`;
}

/**
 * Builds an event for `criteria`, issued now. Ids sort by time so the Store lists events in the order
 * they were made. Pure apart from the random suffix.
 */
export function buildEvent(criteria: RevocationCriteria, now: number, retentionMs: number): RevocationEvent {
  const issuedBefore = criteria.issuedBefore ?? now;
  const id = `${String(issuedBefore).padStart(15, '0')}-${randomBytes(6).toString('hex')}`;
  return { ...criteria, id, issuedBefore, expiresAt: Math.max(issuedBefore, now) + retentionMs };
}

/**
 * The revocation events of the Store, held in memory so a verifier checks them without I/O. Events are
 * written once and never updated; other processes learn them through a Store watch.
 */
export class RevocationList implements RevocationSource {
  private events = new Map<string, RevocationEvent>();
  private cached: RevocationEvent[] = [];
  private watcher: Watch | undefined;
  private versionCounter = 0;
  private readonly keyPrefix: string;
  private readonly retentionMs: number;
  private readonly clock: Clock;

  private constructor(
    private readonly store: Store,
    options: RevocationListOptions,
  ) {
    this.keyPrefix = revocationPrefix(options.prefix ?? 'auth/');
    this.retentionMs = options.retentionMs ?? 3_600_000;
    this.clock = options.clock ?? systemClock;
  }

  /** Loads the events of `store` and, unless `watch: false`, follows new ones. */
  static async open(store: Store, options: RevocationListOptions = {}): Promise<RevocationList> {
    const list = new RevocationList(store, options);
    if (options.watch !== false) {
      // The watch starts first so that nothing written between the load and the watch is missed.
      list.watcher = await store.watch(list.keyPrefix);
      void list.follow(list.watcher);
    }
    await list.refresh();
    return list;
  }

  /** Changes whenever an event is added or removed; verifiers use it to revalidate cached results. */
  get version(): number {
    return this.versionCounter;
  }

  /** All events held in memory, oldest first. */
  list(): RevocationEvent[] {
    return [...this.cached];
  }

  /** The first event that revokes a token with these claims. */
  findMatch(token: RevocationSubject): RevocationEvent | undefined {
    for (const event of this.cached) if (matchesEvent(event, token)) return event;
    return undefined;
  }

  /** Revokes every token matching `criteria` issued up to now; returns the event written. */
  async revoke(criteria: RevocationCriteria): Promise<RevocationEvent> {
    const parsed = parseInput(revocationCriteriaSchema, criteria, 'criteria');
    const event = buildEvent(parsed, this.clock(), this.retentionMs);
    await this.store.put(`${this.keyPrefix}${event.id}`, toJson(event));
    this.apply(event);
    return event;
  }

  /** Buffers `event` in a transaction; call {@link apply} after the commit so this process sees it at once. */
  write(tx: Transaction, event: RevocationEvent): void {
    tx.put(`${this.keyPrefix}${event.id}`, toJson(event));
  }

  /** Builds an event with this list's retention. */
  build(criteria: RevocationCriteria): RevocationEvent {
    return buildEvent(criteria, this.clock(), this.retentionMs);
  }

  /** Adds an event to the in-memory list (idempotent). */
  apply(event: RevocationEvent): void {
    if (this.events.has(event.id)) return;
    this.events.set(event.id, event);
    this.reindex();
  }

  /** Reloads every event from the Store. */
  async refresh(): Promise<void> {
    const entries = await listAll(this.store, this.keyPrefix);
    const next = new Map<string, RevocationEvent>();
    for (const entry of entries) {
      const parsed = revocationEventSchema.safeParse(entry.value);
      if (parsed.success) next.set(parsed.data.id, parsed.data as RevocationEvent);
    }
    this.events = next;
    this.reindex();
  }

  /** Deletes events whose matching tokens have all expired; returns how many were removed. */
  async prune(): Promise<number> {
    const now = this.clock();
    const expired = [...this.events.values()].filter((e) => e.expiresAt <= now);
    if (expired.length === 0) return 0;
    await this.store.transaction((tx) => {
      for (const event of expired) tx.delete(`${this.keyPrefix}${event.id}`);
    });
    for (const event of expired) this.events.delete(event.id);
    this.reindex();
    return expired.length;
  }

  /** Stops following the Store. */
  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  private reindex(): void {
    this.cached = [...this.events.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    this.versionCounter++;
  }

  private async follow(watch: Watch): Promise<void> {
    try {
      for await (const change of watch) {
        if (change.type === 'put') {
          const parsed = revocationEventSchema.safeParse(change.value);
          if (parsed.success) this.apply(parsed.data as RevocationEvent);
        } else {
          const id = change.key.slice(this.keyPrefix.length);
          if (this.events.delete(id)) this.reindex();
        }
      }
    } catch {
      // A compacted history ends the watch; reload so nothing is missed, and keep going with polling by callers.
      if (this.watcher === watch) await this.refresh().catch(() => undefined);
    }
  }
}
