import { EngineStore } from './base-store.js';
import { findConflict, keysToRead, planWrites } from './commit-plan.js';
import type {
  CommitOutcome,
  CommitRequest,
  Engine,
  EventPage,
  LogCursor,
  StoredEntry,
  StoredEvent,
} from './engine.js';
import { compareKeys } from './keys.js';

/** Index of the first key in sorted `keys` that is not below `key` (by UTF-8 bytes). */
function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(keys[mid] as string, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function after(event: StoredEvent, cursor: LogCursor): boolean {
  return event.revision > cursor.revision || (event.revision === cursor.revision && event.seq > cursor.seq);
}

class MemoryEngine implements Engine {
  private readonly entries = new Map<string, StoredEntry>();
  private readonly sortedKeys: string[] = [];
  private log: StoredEvent[] = [];
  private current = 0;
  private compacted = 0;
  private readonly listeners = new Set<() => void>();

  async read(key: string): Promise<StoredEntry | undefined> {
    return this.entries.get(key);
  }

  async range(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredEntry[]> {
    return this.rangeNow(prefix, startAfter, limit);
  }

  async commit(request: CommitRequest): Promise<CommitOutcome> {
    // Everything below runs without an await, so no other commit can interleave.
    const current = new Map(keysToRead(request).map((key) => [key, this.entries.get(key)?.revision ?? 0]));
    const ranges = request.ranges.map((r) => this.rangeNow(r.prefix, r.startAfter, r.limit));
    const conflict = findConflict(request, current, ranges);
    if (conflict) return { ok: false, conflict };
    const existing = new Map<string, StoredEntry>();
    for (const write of request.writes) {
      const entry = this.entries.get(write.key);
      if (entry) existing.set(write.key, entry);
    }
    const plan = planWrites(request.writes, existing, this.current + 1);
    if (plan.events.length === 0) return { ok: true, revision: this.current, removed: 0 };
    this.current += 1;
    for (const entry of plan.upserts) {
      if (!this.entries.has(entry.key))
        this.sortedKeys.splice(lowerBound(this.sortedKeys, entry.key), 0, entry.key);
      this.entries.set(entry.key, entry);
    }
    for (const key of plan.deletes) {
      this.entries.delete(key);
      this.sortedKeys.splice(lowerBound(this.sortedKeys, key), 1);
    }
    this.log.push(...plan.events);
    for (const listener of this.listeners) listener();
    return { ok: true, revision: this.current, removed: plan.deletes.length };
  }

  async events(cursor: LogCursor, prefix: string, limit: number): Promise<EventPage> {
    const events: StoredEvent[] = [];
    for (const event of this.log) {
      if (events.length >= limit) break;
      if (after(event, cursor) && event.key.startsWith(prefix)) events.push(event);
    }
    return { events, revision: this.current, compacted: this.compacted };
  }

  async revision(): Promise<number> {
    return this.current;
  }

  async compact(revision: number): Promise<void> {
    this.log = this.log.filter((event) => event.revision > revision);
    this.compacted = Math.max(this.compacted, revision);
  }

  subscribe(wake: () => void): () => void {
    const listener = () => queueMicrotask(wake);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }

  private rangeNow(prefix: string, startAfter: string | undefined, limit: number): StoredEntry[] {
    let i = lowerBound(this.sortedKeys, prefix);
    if (startAfter !== undefined && compareKeys(startAfter, prefix) >= 0) {
      i = lowerBound(this.sortedKeys, startAfter);
      if (this.sortedKeys[i] === startAfter) i += 1;
    }
    const out: StoredEntry[] = [];
    for (; i < this.sortedKeys.length && out.length < limit; i++) {
      const key = this.sortedKeys[i] as string;
      if (!key.startsWith(prefix)) break;
      out.push(this.entries.get(key) as StoredEntry);
    }
    return out;
  }
}

/**
 * A Store held in this process's memory: for tests and for programs whose state may vanish with them.
 * Same semantics as the persistent backends (it passes the same conformance suite).
 */
export class MemoryStore extends EngineStore {
  constructor() {
    super(new MemoryEngine());
  }
}
