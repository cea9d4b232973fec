import type { CommitRequest, Engine, KeyCheck, RangeCheck, StoredEntry } from './engine.js';
import { checkKey, checkListOptions, checkPrefix, compareKeys, encodeValue } from './keys.js';
import type { Entry, JsonValue, ListOptions, ListPage, Transaction } from './types.js';

/** Decodes a stored entry's JSON value. */
export function decodeEntry<T>(entry: StoredEntry): Entry<T> {
  return {
    key: entry.key,
    value: JSON.parse(entry.value) as T,
    revision: entry.revision,
    createRevision: entry.createRevision,
    version: entry.version,
  };
}

/**
 * One attempt of a transaction: reads go to the engine and are remembered with their revisions,
 * writes stay in a buffer that reads see. `request()` is what the engine must check and apply.
 */
export class BufferedTransaction implements Transaction {
  private readonly checks = new Map<string, KeyCheck>();
  private readonly ranges: RangeCheck[] = [];
  private readonly writes = new Map<string, string | undefined>();
  private readonly readCache = new Map<string, StoredEntry | undefined>();

  constructor(private readonly engine: Engine) {}

  async get<T = JsonValue>(key: string): Promise<Entry<T> | undefined> {
    checkKey(key);
    if (this.writes.has(key)) {
      const value = this.writes.get(key);
      return value === undefined ? undefined : this.pendingEntry<T>(key, value);
    }
    return this.fetch(key).then((entry) => (entry ? decodeEntry<T>(entry) : undefined));
  }

  async list<T = JsonValue>(prefix: string, options?: ListOptions): Promise<ListPage<T>> {
    checkPrefix(prefix);
    const { limit, startAfter } = checkListOptions(options);
    const inWindow = (key: string) =>
      key.startsWith(prefix) && (startAfter === undefined || compareKeys(key, startAfter) > 0);
    const pending = [...this.writes.keys()].filter(inWindow);
    const fetchLimit = limit + pending.length + 1;
    const stored = await this.engine.range(prefix, startAfter, fetchLimit);
    this.ranges.push({
      prefix,
      startAfter,
      limit: fetchLimit,
      seen: stored.map((e) => ({ key: e.key, revision: e.revision })),
    });
    const truncated = stored.length === fetchLimit;
    const lastStored = stored.at(-1)?.key;
    const merged = new Map<string, Entry<T>>();
    for (const entry of stored) {
      this.readCache.set(entry.key, entry);
      if (!this.writes.has(entry.key)) merged.set(entry.key, decodeEntry<T>(entry));
    }
    for (const key of pending) {
      const value = this.writes.get(key);
      // Past the last stored key of a truncated page we cannot know what lies between; leave it to the next page.
      if (value === undefined || (truncated && lastStored !== undefined && compareKeys(key, lastStored) > 0))
        continue;
      merged.set(key, this.pendingEntry<T>(key, value));
    }
    const items = [...merged.values()].sort((a, b) => compareKeys(a.key, b.key));
    const more = items.length > limit || truncated;
    const page = items.slice(0, limit);
    const last = page.at(-1);
    return more && last ? { items: page, next: last.key } : { items: page };
  }

  put(key: string, value: JsonValue): void {
    checkKey(key);
    this.writes.set(key, encodeValue(value));
  }

  delete(key: string): void {
    checkKey(key);
    this.writes.set(key, undefined);
  }

  /** What the engine must check and apply for this attempt. */
  request(): CommitRequest {
    return {
      checks: [...this.checks.values()],
      ranges: this.ranges,
      writes: [...this.writes.entries()].map(([key, value]) =>
        value === undefined ? { key } : { key, value },
      ),
    };
  }

  private async fetch(key: string): Promise<StoredEntry | undefined> {
    if (this.readCache.has(key) && this.checks.has(key)) return this.readCache.get(key);
    const entry = await this.engine.read(key);
    this.readCache.set(key, entry);
    // The first read fixes the revision the commit will insist on.
    if (!this.checks.has(key)) this.checks.set(key, { key, revision: entry?.revision ?? 0 });
    return entry;
  }

  private pendingEntry<T>(key: string, value: string): Entry<T> {
    const before = this.readCache.get(key);
    return {
      key,
      value: JSON.parse(value) as T,
      revision: 0,
      createRevision: before?.createRevision ?? 0,
      version: (before?.version ?? 0) + 1,
    };
  }
}
