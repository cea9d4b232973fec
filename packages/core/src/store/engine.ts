/**
 * The narrow interface a storage backend implements. Everything a user sees (validation,
 * transactions with retries, watches) is built once on top of it in `base-store.ts`.
 */

/** An entry as stored: the value is still JSON text. */
export interface StoredEntry {
  key: string;
  value: string;
  revision: number;
  createRevision: number;
  version: number;
}

/** The key must be at this revision when the commit applies (0: the key must be absent). */
export interface KeyCheck {
  key: string;
  revision: number;
}

/** Re-running this range read at commit time must return exactly `seen`. */
export interface RangeCheck {
  prefix: string;
  startAfter?: string;
  limit: number;
  seen: KeyCheck[];
}

/** A buffered write: `value` is JSON text, or `undefined` for a deletion. */
export interface Write {
  key: string;
  value?: string;
}

/** Everything a commit must check and apply, atomically. */
export interface CommitRequest {
  checks: KeyCheck[];
  ranges: RangeCheck[];
  writes: Write[];
}

/** Where a commit found the state changed under it. */
export interface CommitConflict {
  key?: string;
  prefix?: string;
  expected?: number;
  actual?: number;
}

/** The result of a commit attempt. */
export type CommitOutcome =
  | { ok: true; revision: number; removed: number }
  | { ok: false; conflict: CommitConflict };

/** One logged change; `seq` orders changes within a revision. */
export interface StoredEvent {
  type: 'put' | 'delete';
  key: string;
  revision: number;
  seq: number;
  value?: string;
  createRevision: number;
  version: number;
}

/** A position in the change log: after the event (revision, seq). */
export interface LogCursor {
  revision: number;
  seq: number;
}

/** A page of the change log. */
export interface EventPage {
  events: StoredEvent[];
  /** The store revision in the snapshot the page was read from. */
  revision: number;
  /** Events at or below this revision have been compacted away. */
  compacted: number;
}

/** A storage backend. */
export interface Engine {
  read(key: string): Promise<StoredEntry | undefined>;
  range(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredEntry[]>;
  commit(request: CommitRequest): Promise<CommitOutcome>;
  /** Events after `after` under `prefix`, read in one snapshot with the store's revision and compaction point. */
  events(after: LogCursor, prefix: string, limit: number): Promise<EventPage>;
  revision(): Promise<number>;
  compact(revision: number): Promise<void>;
  /** Calls `wake` whenever the log may have grown (local commits at once, other processes' soon). */
  subscribe(wake: () => void): () => void;
  close(): Promise<void>;
}
