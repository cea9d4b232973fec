import Database from 'better-sqlite3';
import { z } from 'zod';
import { NubesError } from '../errors.js';
import { parseInput } from '../validation.js';
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
import { keyBytes, prefixEnd } from './keys.js';

/** Options for {@link SqliteStore}. */
export interface SqliteStoreOptions {
  /** Path of the database file (created if missing). `:memory:` works for a throwaway store. */
  path: string;
  /**
   * `full` (default): every commit is fsynced before it resolves, so it survives power loss.
   * `normal`: WAL without fsync per commit: faster, still never corrupt, but a power cut may lose the last commits.
   */
  durability?: 'full' | 'normal';
  /** How often a watch looks for commits made by other processes, in ms (default 100). */
  pollIntervalMs?: number;
  /** How long a commit waits for another process's write lock, in ms (default 10 000). */
  busyTimeoutMs?: number;
}

const optionsSchema = z
  .object({
    path: z.string().min(1),
    durability: z.enum(['full', 'normal']).default('full'),
    pollIntervalMs: z.number().int().min(5).max(60_000).default(100),
    busyTimeoutMs: z.number().int().min(0).max(600_000).default(10_000),
  })
  .strict();

interface EntryRow {
  key: Buffer;
  value: string;
  revision: number;
  create_revision: number;
  version: number;
}

interface EventRow extends EntryRow {
  seq: number;
  type: 'put' | 'delete';
  value: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS nubes_kv (
  key BLOB PRIMARY KEY, value TEXT NOT NULL,
  revision INTEGER NOT NULL, create_revision INTEGER NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nubes_events (
  revision INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, key BLOB NOT NULL, value TEXT,
  create_revision INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nubes_meta (
  id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL, compacted INTEGER NOT NULL
);
INSERT OR IGNORE INTO nubes_meta (id, revision, compacted) VALUES (1, 0, 0);
`;

const ENTRY_COLUMNS = 'key, value, revision, create_revision, version';

function toEntry(row: EntryRow): StoredEntry {
  return {
    key: row.key.toString('utf8'),
    value: row.value,
    revision: row.revision,
    createRevision: row.create_revision,
    version: row.version,
  };
}

class SqliteEngine implements Engine {
  private readonly db: Database.Database;
  private readonly listeners = new Set<() => void>();
  private poller: NodeJS.Timeout | undefined;
  private dataVersion = 0;
  private readonly statements: {
    read: Database.Statement<[Buffer], EntryRow>;
    meta: Database.Statement<[], { revision: number; compacted: number }>;
    upsert: Database.Statement<[Buffer, string, number, number, number]>;
    remove: Database.Statement<[Buffer]>;
    logEvent: Database.Statement<[number, number, string, Buffer, string | null, number, number]>;
    setRevision: Database.Statement<[number]>;
    events: Database.Statement<[number, number, Buffer, Buffer, number], EventRow>;
    eventsAll: Database.Statement<[number, number, number], EventRow>;
    range: Database.Statement<[Buffer, Buffer, Buffer, number], EntryRow>;
    rangeAll: Database.Statement<[Buffer, number], EntryRow>;
    dataVersion: Database.Statement<[], { data_version: number }>;
  };
  private readonly commitWrite: (request: CommitRequest) => CommitOutcome;
  private readonly commitRead: (request: CommitRequest) => CommitOutcome;
  private readonly readEvents: (cursor: LogCursor, prefix: string, limit: number) => EventPage;

  constructor(private readonly options: z.output<typeof optionsSchema>) {
    try {
      this.db = new Database(options.path, { timeout: options.busyTimeoutMs });
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${options.durability === 'full' ? 'FULL' : 'NORMAL'}`);
      this.db.exec(SCHEMA);
    } catch (cause) {
      throw new NubesError(
        'Unavailable',
        `cannot open SQLite store at ${options.path}: ${(cause as Error).message}`,
        {
          cause,
          details: { path: options.path },
        },
      );
    }
    const db = this.db;
    this.statements = {
      read: db.prepare(`SELECT ${ENTRY_COLUMNS} FROM nubes_kv WHERE key = ?`),
      meta: db.prepare('SELECT revision, compacted FROM nubes_meta WHERE id = 1'),
      upsert: db.prepare(
        `INSERT INTO nubes_kv (${ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision,
           create_revision = excluded.create_revision, version = excluded.version`,
      ),
      remove: db.prepare('DELETE FROM nubes_kv WHERE key = ?'),
      logEvent: db.prepare(
        'INSERT INTO nubes_events (revision, seq, type, key, value, create_revision, version) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      setRevision: db.prepare('UPDATE nubes_meta SET revision = ? WHERE id = 1'),
      events: db.prepare(
        `SELECT revision, seq, type, key, value, create_revision, version FROM nubes_events
         WHERE (revision, seq) > (?, ?) AND key >= ? AND key < ? ORDER BY revision, seq LIMIT ?`,
      ),
      eventsAll: db.prepare(
        `SELECT revision, seq, type, key, value, create_revision, version FROM nubes_events
         WHERE (revision, seq) > (?, ?) ORDER BY revision, seq LIMIT ?`,
      ),
      range: db.prepare(
        `SELECT ${ENTRY_COLUMNS} FROM nubes_kv WHERE key >= ? AND key < ? AND key > ? ORDER BY key LIMIT ?`,
      ),
      rangeAll: db.prepare(`SELECT ${ENTRY_COLUMNS} FROM nubes_kv WHERE key > ? ORDER BY key LIMIT ?`),
      dataVersion: db.prepare('PRAGMA data_version'),
    };
    const commit = (request: CommitRequest) => this.commitNow(request);
    this.commitWrite = db.transaction(commit).immediate;
    this.commitRead = db.transaction(commit).deferred;
    this.readEvents = db.transaction((cursor: LogCursor, prefix: string, limit: number) =>
      this.eventsNow(cursor, prefix, limit),
    ).deferred;
  }

  async read(key: string): Promise<StoredEntry | undefined> {
    const row = this.statements.read.get(keyBytes(key));
    return row ? toEntry(row) : undefined;
  }

  async range(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredEntry[]> {
    return this.rangeNow(prefix, startAfter, limit);
  }

  async commit(request: CommitRequest): Promise<CommitOutcome> {
    const outcome = request.writes.length > 0 ? this.commitWrite(request) : this.commitRead(request);
    if (outcome.ok && outcome.revision > 0 && request.writes.length > 0) this.notify();
    return outcome;
  }

  async events(cursor: LogCursor, prefix: string, limit: number): Promise<EventPage> {
    return this.readEvents(cursor, prefix, limit);
  }

  async revision(): Promise<number> {
    return this.statements.meta.get()?.revision ?? 0;
  }

  async compact(revision: number): Promise<void> {
    this.db
      .transaction(() => {
        this.db.prepare('DELETE FROM nubes_events WHERE revision <= ?').run(revision);
        this.db.prepare('UPDATE nubes_meta SET compacted = max(compacted, ?) WHERE id = 1').run(revision);
      })
      .immediate();
  }

  subscribe(wake: () => void): () => void {
    this.listeners.add(wake);
    if (!this.poller) {
      this.dataVersion = this.statements.dataVersion.get()?.data_version ?? 0;
      // data_version changes only when another connection commits, so this finds other processes' writes cheaply.
      this.poller = setInterval(() => {
        const version = this.statements.dataVersion.get()?.data_version ?? 0;
        if (version !== this.dataVersion) {
          this.dataVersion = version;
          this.notify();
        }
      }, this.options.pollIntervalMs);
      this.poller.unref();
    }
    return () => {
      this.listeners.delete(wake);
      if (this.listeners.size === 0 && this.poller) {
        clearInterval(this.poller);
        this.poller = undefined;
      }
    };
  }

  async close(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    this.poller = undefined;
    this.listeners.clear();
    this.db.close();
  }

  private notify(): void {
    for (const listener of this.listeners) queueMicrotask(listener);
  }

  private commitNow(request: CommitRequest): CommitOutcome {
    const existing = new Map<string, StoredEntry>();
    const current = new Map<string, number>();
    for (const key of keysToRead(request)) {
      const row = this.statements.read.get(keyBytes(key));
      if (row) existing.set(key, toEntry(row));
      current.set(key, row?.revision ?? 0);
    }
    const ranges = request.ranges.map((r) => this.rangeNow(r.prefix, r.startAfter, r.limit));
    const conflict = findConflict(request, current, ranges);
    if (conflict) return { ok: false, conflict };
    const revisionNow = this.statements.meta.get()?.revision ?? 0;
    const plan = planWrites(request.writes, existing, revisionNow + 1);
    if (plan.events.length === 0) return { ok: true, revision: revisionNow, removed: 0 };
    for (const e of plan.upserts)
      this.statements.upsert.run(keyBytes(e.key), e.value, e.revision, e.createRevision, e.version);
    for (const key of plan.deletes) this.statements.remove.run(keyBytes(key));
    for (const e of plan.events) {
      this.statements.logEvent.run(
        e.revision,
        e.seq,
        e.type,
        keyBytes(e.key),
        e.value ?? null,
        e.createRevision,
        e.version,
      );
    }
    this.statements.setRevision.run(revisionNow + 1);
    return { ok: true, revision: revisionNow + 1, removed: plan.deletes.length };
  }

  private rangeNow(prefix: string, startAfter: string | undefined, limit: number): StoredEntry[] {
    const after = startAfter === undefined ? Buffer.alloc(0) : keyBytes(startAfter);
    const end = prefixEnd(prefix);
    const rows = end
      ? this.statements.range.all(keyBytes(prefix), end, after, limit)
      : this.statements.rangeAll.all(after, limit);
    return rows.map(toEntry);
  }

  private eventsNow(cursor: LogCursor, prefix: string, limit: number): EventPage {
    const end = prefixEnd(prefix);
    const rows = end
      ? this.statements.events.all(cursor.revision, cursor.seq, keyBytes(prefix), end, limit)
      : this.statements.eventsAll.all(cursor.revision, cursor.seq, limit);
    const meta = this.statements.meta.get() ?? { revision: 0, compacted: 0 };
    const events = rows.map(
      (row): StoredEvent => ({
        type: row.type,
        key: row.key.toString('utf8'),
        revision: row.revision,
        seq: row.seq,
        ...(row.value === null ? {} : { value: row.value }),
        createRevision: row.create_revision,
        version: row.version,
      }),
    );
    return { events, revision: meta.revision, compacted: meta.compacted };
  }
}

/**
 * The embedded default Store: one SQLite file in WAL mode, safe to share between processes on one machine
 * (commits take SQLite's write lock; watches see other processes' commits within `pollIntervalMs`).
 *
 * @example
 * ```ts
 * const store = new SqliteStore({ path: '/var/lib/myservice/state.db' });
 * await store.transaction(async (tx) => {
 *   const n = (await tx.get<number>('counters/boots'))?.value ?? 0;
 *   tx.put('counters/boots', n + 1);
 * });
 * ```
 */
export class SqliteStore extends EngineStore {
  constructor(options: SqliteStoreOptions | string) {
    const parsed = parseInput(
      optionsSchema,
      typeof options === 'string' ? { path: options } : options,
      'options',
    );
    super(new SqliteEngine(parsed));
  }
}
