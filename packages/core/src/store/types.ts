/** A value the Store keeps: anything JSON can represent. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** One key with its value and revisions, as etcd reports them. */
export interface Entry<T = JsonValue> {
  /** The key, `/`-separated by convention (`projects/p1/quota`). */
  key: string;
  /** The value last written. */
  value: T;
  /** Store revision of the last write to this key (etcd's mod_revision). */
  revision: number;
  /** Store revision at which the key was created (since its last deletion). */
  createRevision: number;
  /** Number of writes since creation, starting at 1. */
  version: number;
}

/** Options for {@link StoreReader.list}. */
export interface ListOptions {
  /** At most this many entries (1 to 10 000; default 1000). */
  limit?: number;
  /** Continue after this key: pass the previous page's `next`. */
  startAfter?: string;
}

/** One page of {@link StoreReader.list}. */
export interface ListPage<T = JsonValue> {
  /** Entries in ascending key order (by UTF-8 bytes). */
  items: Entry<T>[];
  /** Present when more entries follow: pass it as `startAfter`. */
  next?: string;
}

/** Options for {@link Store.put}. */
export interface PutOptions {
  /** Compare-and-put: write only if the key's current revision equals this; `0` means "only if absent". */
  ifRevision?: number;
}

/** Options for {@link Store.delete}. */
export interface DeleteOptions {
  /** Compare-and-delete: delete only if the key's current revision equals this. */
  ifRevision?: number;
}

/** Reads shared by a store and a transaction. */
export interface StoreReader {
  /** The entry at `key`, or `undefined`. */
  get<T = JsonValue>(key: string): Promise<Entry<T> | undefined>;
  /** Entries whose key starts with `prefix`, in key order, one page at a time. */
  list<T = JsonValue>(prefix: string, options?: ListOptions): Promise<ListPage<T>>;
}

/**
 * The view a transaction function gets: reads see the transaction's own writes, writes are
 * buffered and applied atomically when the function returns.
 */
export interface Transaction extends StoreReader {
  /** Buffers a write of `value` at `key`. */
  put(key: string, value: JsonValue): void;
  /** Buffers a deletion of `key` (a no-op if it does not exist at commit). */
  delete(key: string): void;
}

/** Options for {@link Store.transaction}. */
export interface TransactionOptions {
  /** Attempts before giving up with `Conflict` (default 50). Between attempts the store waits a jittered, growing delay. */
  maxAttempts?: number;
}

/** A change delivered by {@link Store.watch}. */
export interface WatchEvent<T = JsonValue> {
  /** `put` for a create or update, `delete` for a removal. */
  type: 'put' | 'delete';
  /** The key that changed. */
  key: string;
  /** The store revision of the change (one transaction's changes share it). */
  revision: number;
  /** The new value for `put`; absent for `delete`. */
  value?: T;
  /** Revision at which the key was created (0 for `delete`). */
  createRevision: number;
  /** The key's version after the change (0 for `delete`). */
  version: number;
}

/** Options for {@link Store.watch}. */
export interface WatchOptions {
  /** Deliver changes from this revision on (inclusive); default: only changes after the call. */
  fromRevision?: number;
}

/** A running watch: iterate it with `for await`, stop it with `close()`. */
export interface Watch<T = JsonValue> extends AsyncIterable<WatchEvent<T>> {
  /** Stops the watch; a pending iteration ends. */
  close(): void;
}

/**
 * A transactional key-value store with revisions, in the model of etcd.
 * Implementations: `MemoryStore`, `SqliteStore`, `PostgresStore`; all pass one conformance suite.
 */
export interface Store extends StoreReader {
  /** Writes `value` at `key` and returns the new store revision. */
  put(key: string, value: JsonValue, options?: PutOptions): Promise<number>;
  /** Deletes `key`; resolves `true` if it existed. */
  delete(key: string, options?: DeleteOptions): Promise<boolean>;
  /**
   * Runs `fn` as one serializable transaction: everything it reads is validated and everything it writes is
   * applied atomically at one new revision, or not at all. On a conflicting concurrent change `fn` runs
   * again (so it must not have side effects outside the transaction); after `maxAttempts` it throws `Conflict`.
   * If `fn` throws, nothing is written; if everything it read still holds the error propagates, otherwise
   * (the error may come from a torn read) `fn` runs again.
   */
  transaction<R>(fn: (tx: Transaction) => Promise<R> | R, options?: TransactionOptions): Promise<R>;
  /**
   * Streams every change under `prefix` in revision order. It resolves once the watch is in place:
   * any write that starts after that is delivered.
   */
  watch<T = JsonValue>(prefix: string, options?: WatchOptions): Promise<Watch<T>>;
  /** The current store revision (0 for an empty store). */
  revision(): Promise<number>;
  /** Forgets change history up to and including `revision`; watches from before it then fail with `Gone`. */
  compact(revision: number): Promise<void>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}
