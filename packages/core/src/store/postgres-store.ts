import pg from 'pg';
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

/** Options for {@link PostgresStore}. */
export interface PostgresStoreOptions {
  /** A libpq connection string, e.g. `postgres://nubes@127.0.0.1:5432/nubes`. */
  connectionString: string;
  /** Prefix of the three tables this store uses (default `nubes`), so several stores can share a database. */
  table?: string;
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** A watch also polls this often, in ms, in case a notification was missed (default 1000). */
  pollIntervalMs?: number;
}

const optionsSchema = z
  .object({
    connectionString: z.string().min(1),
    table: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,40}$/, 'lowercase letters, digits and _ only')
      .default('nubes'),
    poolSize: z.number().int().min(1).max(1000).default(10),
    pollIntervalMs: z.number().int().min(10).max(600_000).default(1000),
  })
  .strict();

type Options = z.output<typeof optionsSchema>;

interface EntryRow {
  key: Buffer;
  value: string;
  revision: string;
  create_revision: string;
  version: string;
}

function toEntry(row: EntryRow): StoredEntry {
  return {
    key: row.key.toString('utf8'),
    value: row.value,
    revision: Number(row.revision),
    createRevision: Number(row.create_revision),
    version: Number(row.version),
  };
}

/** Connection-level failures become `Unavailable`; anything else is a bug or a schema problem. */
function storeError(cause: unknown): NubesError {
  if (cause instanceof NubesError) return cause;
  const err = cause as { code?: string; message?: string };
  const connection =
    typeof err.code === 'string' &&
    (/^(08|57P)/.test(err.code) ||
      ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND'].includes(err.code));
  const message = err.message ?? String(cause);
  return connection || /Connection terminated|connection/i.test(message)
    ? new NubesError('Unavailable', `PostgreSQL store unavailable: ${message}`, { cause })
    : new NubesError('Internal', `PostgreSQL store error: ${message}`, {
        cause,
        details: { pgCode: err.code },
      });
}

class PostgresEngine implements Engine {
  private readonly pool: pg.Pool;
  private readonly t: { kv: string; events: string; meta: string; channel: string };
  private ready: Promise<void> | undefined;
  private readonly listeners = new Set<() => void>();
  private listenClient: pg.Client | undefined;
  private listenConnecting = false;
  private poller: NodeJS.Timeout | undefined;

  constructor(private readonly options: Options) {
    this.pool = new pg.Pool({ connectionString: options.connectionString, max: options.poolSize });
    // An idle client that loses its connection must not crash the process; the next query reports it.
    this.pool.on('error', () => {});
    const p = options.table;
    this.t = { kv: `${p}_kv`, events: `${p}_events`, meta: `${p}_meta`, channel: `${p}_changes` };
  }

  async read(key: string): Promise<StoredEntry | undefined> {
    const rows = await this.query<EntryRow>(
      `SELECT key, value, revision, create_revision, version FROM ${this.t.kv} WHERE key = $1`,
      [keyBytes(key)],
    );
    return rows[0] ? toEntry(rows[0]) : undefined;
  }

  async range(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredEntry[]> {
    await this.schema();
    return this.rangeOn(this.pool, prefix, startAfter, limit);
  }

  async commit(request: CommitRequest): Promise<CommitOutcome> {
    await this.schema();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (cause) {
      throw storeError(cause);
    }
    let broken = false;
    try {
      await client.query('BEGIN');
      // Every commit locks the one meta row first: commits are serialized, so revisions are dense and ordered.
      const lock = request.writes.length > 0 ? 'FOR UPDATE' : 'FOR SHARE';
      const meta = await client.query<{ revision: string }>(
        `SELECT revision FROM ${this.t.meta} WHERE id = 1 ${lock}`,
      );
      const revisionNow = Number(meta.rows[0]?.revision ?? 0);
      const keys = keysToRead(request);
      const found = keys.length
        ? await client.query<EntryRow>(
            `SELECT key, value, revision, create_revision, version FROM ${this.t.kv} WHERE key = ANY($1::bytea[])`,
            [keys.map(keyBytes)],
          )
        : { rows: [] as EntryRow[] };
      const existing = new Map(found.rows.map((row) => [row.key.toString('utf8'), toEntry(row)]));
      const current = new Map(keys.map((key) => [key, existing.get(key)?.revision ?? 0]));
      const ranges: StoredEntry[][] = [];
      for (const r of request.ranges)
        ranges.push(await this.rangeOn(client, r.prefix, r.startAfter, r.limit));
      const conflict = findConflict(request, current, ranges);
      const plan = conflict ? undefined : planWrites(request.writes, existing, revisionNow + 1);
      if (!plan || plan.events.length === 0) {
        await client.query('ROLLBACK');
        return conflict ? { ok: false, conflict } : { ok: true, revision: revisionNow, removed: 0 };
      }
      const rev = revisionNow + 1;
      if (plan.upserts.length) {
        await client.query(
          `INSERT INTO ${this.t.kv} (key, value, revision, create_revision, version)
           SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
           ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision,
             create_revision = excluded.create_revision, version = excluded.version`,
          [
            plan.upserts.map((e) => keyBytes(e.key)),
            plan.upserts.map((e) => e.value),
            plan.upserts.map((e) => e.revision),
            plan.upserts.map((e) => e.createRevision),
            plan.upserts.map((e) => e.version),
          ],
        );
      }
      if (plan.deletes.length) {
        await client.query(`DELETE FROM ${this.t.kv} WHERE key = ANY($1::bytea[])`, [
          plan.deletes.map(keyBytes),
        ]);
      }
      await client.query(
        `INSERT INTO ${this.t.events} (revision, seq, type, key, value, create_revision, version)
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::bytea[], $5::text[], $6::int8[], $7::int8[])`,
        [
          plan.events.map((e) => e.revision),
          plan.events.map((e) => e.seq),
          plan.events.map((e) => e.type),
          plan.events.map((e) => keyBytes(e.key)),
          plan.events.map((e) => e.value ?? null),
          plan.events.map((e) => e.createRevision),
          plan.events.map((e) => e.version),
        ],
      );
      await client.query(`UPDATE ${this.t.meta} SET revision = $1 WHERE id = 1`, [rev]);
      await client.query('SELECT pg_notify($1, $2)', [this.t.channel, String(rev)]);
      await client.query('COMMIT');
      this.notify();
      return { ok: true, revision: rev, removed: plan.deletes.length };
    } catch (cause) {
      broken = true;
      await client.query('ROLLBACK').catch(() => {});
      throw storeError(cause);
    } finally {
      client.release(broken);
    }
  }

  async events(cursor: LogCursor, prefix: string, limit: number): Promise<EventPage> {
    const end = prefixEnd(prefix);
    const filter = end ? 'AND key >= $4 AND key < $5' : '';
    const params: unknown[] = [cursor.revision, cursor.seq, limit];
    if (end) params.push(keyBytes(prefix), end);
    // One statement, one snapshot: the events and the meta row agree.
    const rows = await this.query<
      EntryRow & {
        seq: string | null;
        type: 'put' | 'delete';
        value: string | null;
        store_revision: string;
        compacted: string;
      }
    >(
      `WITH page AS (
         SELECT revision, seq, type, key, value, create_revision, version FROM ${this.t.events}
         WHERE (revision, seq) > ($1::int8, $2::int8) ${filter} ORDER BY revision, seq LIMIT $3)
       SELECT m.revision AS store_revision, m.compacted, page.* FROM ${this.t.meta} m LEFT JOIN page ON true
       WHERE m.id = 1 ORDER BY page.revision, page.seq`,
      params,
    );
    const first = rows[0];
    const events: StoredEvent[] = rows
      .filter((row) => row.seq !== null)
      .map((row) => ({
        type: row.type,
        key: row.key.toString('utf8'),
        revision: Number(row.revision),
        seq: Number(row.seq),
        ...(row.value === null ? {} : { value: row.value }),
        createRevision: Number(row.create_revision),
        version: Number(row.version),
      }));
    return { events, revision: Number(first?.store_revision ?? 0), compacted: Number(first?.compacted ?? 0) };
  }

  async revision(): Promise<number> {
    const rows = await this.query<{ revision: string }>(`SELECT revision FROM ${this.t.meta} WHERE id = 1`);
    return Number(rows[0]?.revision ?? 0);
  }

  async compact(revision: number): Promise<void> {
    await this.schema();
    const client = await this.pool.connect().catch((cause: unknown) => {
      throw storeError(cause);
    });
    try {
      await client.query('BEGIN');
      await client.query(`SELECT 1 FROM ${this.t.meta} WHERE id = 1 FOR UPDATE`);
      await client.query(`DELETE FROM ${this.t.events} WHERE revision <= $1`, [revision]);
      await client.query(`UPDATE ${this.t.meta} SET compacted = GREATEST(compacted, $1) WHERE id = 1`, [
        revision,
      ]);
      await client.query('COMMIT');
    } catch (cause) {
      await client.query('ROLLBACK').catch(() => {});
      throw storeError(cause);
    } finally {
      client.release();
    }
  }

  subscribe(wake: () => void): () => void {
    this.listeners.add(wake);
    this.ensureListening();
    if (!this.poller) {
      this.poller = setInterval(() => {
        this.ensureListening();
        this.notify();
      }, this.options.pollIntervalMs);
      this.poller.unref();
    }
    return () => {
      this.listeners.delete(wake);
      if (this.listeners.size === 0) this.stopListening();
    };
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.stopListening();
    await this.pool.end();
  }

  private notify(): void {
    for (const listener of this.listeners) queueMicrotask(listener);
  }

  private ensureListening(): void {
    if (this.listenClient || this.listenConnecting || this.listeners.size === 0) return;
    this.listenConnecting = true;
    const client = new pg.Client({ connectionString: this.options.connectionString });
    const drop = () => {
      if (this.listenClient === client) this.listenClient = undefined;
      client.end().catch(() => {});
    };
    client.on('error', drop);
    client.on('end', drop);
    client.on('notification', () => this.notify());
    client
      .connect()
      .then(() => client.query(`LISTEN ${this.t.channel}`))
      .then(() => {
        this.listenConnecting = false;
        if (this.listeners.size === 0) return drop();
        this.listenClient = client;
        // Commits made while connecting raised no notification we heard; look once.
        this.notify();
      })
      .catch(() => {
        this.listenConnecting = false;
        drop();
      });
  }

  private stopListening(): void {
    if (this.poller) clearInterval(this.poller);
    this.poller = undefined;
    const client = this.listenClient;
    this.listenClient = undefined;
    client?.end().catch(() => {});
  }

  private async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    await this.schema();
    try {
      return (await this.pool.query<R>(sql, params)).rows;
    } catch (cause) {
      throw storeError(cause);
    }
  }

  private async rangeOn(
    db: pg.Pool | pg.PoolClient,
    prefix: string,
    startAfter: string | undefined,
    limit: number,
  ): Promise<StoredEntry[]> {
    const end = prefixEnd(prefix);
    const params: unknown[] = [startAfter === undefined ? Buffer.alloc(0) : keyBytes(startAfter), limit];
    if (end) params.push(keyBytes(prefix), end);
    try {
      const result = await db.query<EntryRow>(
        `SELECT key, value, revision, create_revision, version FROM ${this.t.kv}
         WHERE key > $1 ${end ? 'AND key >= $3 AND key < $4' : ''} ORDER BY key LIMIT $2`,
        params,
      );
      return result.rows.map(toEntry);
    } catch (cause) {
      throw storeError(cause);
    }
  }

  /** Creates the tables once per process; an advisory lock keeps concurrent first runs from racing. */
  private schema(): Promise<void> {
    this.ready ??= this.createSchema().catch((cause: unknown) => {
      this.ready = undefined;
      throw storeError(cause);
    });
    return this.ready;
  }

  private async createSchema(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [
        `nubes-schema:${this.options.table}`,
      ]);
      await client.query(`
        CREATE TABLE IF NOT EXISTS ${this.t.kv} (
          key bytea PRIMARY KEY, value text NOT NULL,
          revision int8 NOT NULL, create_revision int8 NOT NULL, version int8 NOT NULL);
        CREATE TABLE IF NOT EXISTS ${this.t.events} (
          revision int8 NOT NULL, seq int8 NOT NULL, type text NOT NULL, key bytea NOT NULL, value text,
          create_revision int8 NOT NULL, version int8 NOT NULL, PRIMARY KEY (revision, seq));
        CREATE TABLE IF NOT EXISTS ${this.t.meta} (
          id int PRIMARY KEY CHECK (id = 1), revision int8 NOT NULL, compacted int8 NOT NULL);
        INSERT INTO ${this.t.meta} (id, revision, compacted) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;`);
      await client.query('COMMIT');
    } catch (cause) {
      await client.query('ROLLBACK').catch(() => {});
      throw cause;
    } finally {
      client.release();
    }
  }
}

/**
 * A Store in PostgreSQL, for state shared by several processes or machines. The schema is created on
 * first use. Commits serialize on one row lock, so every process sees one ordered history; watches
 * are woken by LISTEN/NOTIFY.
 *
 * @example
 * ```ts
 * const store = new PostgresStore({ connectionString: process.env.DATABASE_URL! });
 * const rev = await store.put('hosts/h1', { vcpus: 64 });
 * ```
 */
export class PostgresStore extends EngineStore {
  constructor(options: PostgresStoreOptions | string) {
    const parsed = parseInput(
      optionsSchema,
      typeof options === 'string' ? { connectionString: options } : options,
      'options',
    );
    super(new PostgresEngine(parsed));
  }
}
