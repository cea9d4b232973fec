import pg from 'pg';
import { z } from 'zod';
import { NubesError } from '../errors.js';
import { parseInput } from '../validation.js';
import { EngineStore } from './base-store.js';
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

/** UTF-8 never contains 0xFF, so this sorts after every key: the upper bound of the empty prefix. */
const BEYOND_EVERY_KEY = Buffer.from([0xff]);

interface CommitRow {
  o_ok: boolean;
  o_rev: string;
  o_removed: string;
  o_key: Buffer | null;
  o_range: number | null;
  o_expected: string | null;
  o_actual: string | null;
}

/**
 * The whole commit as one server-side function, so a commit is one round trip and the meta-row lock that
 * serializes commits is held for microseconds rather than for several network round trips. It checks the
 * read keys (`ck`/`cr`) and re-runs each listed range (`rlo`..`rhi` after `rafter`, `rlimit` rows) against
 * the `rcount` expected (key, revision) pairs in `ekeys`/`erevs`, then applies the writes (`wv` NULL deletes)
 * at one new revision, logs them and notifies watchers.
 */
function commitFunction(t: { kv: string; events: string; meta: string; commit: string }): string {
  return `
CREATE OR REPLACE FUNCTION ${t.commit}(
  ck bytea[], cr int8[], wk bytea[], wv text[], rlo bytea[], rhi bytea[], rafter bytea[],
  rlimit int8[], rcount int8[], ekeys bytea[], erevs int8[], channel text)
RETURNS TABLE (o_ok boolean, o_rev int8, o_removed int8, o_key bytea, o_range int, o_expected int8, o_actual int8)
LANGUAGE plpgsql AS $fn$
DECLARE
  cur int8; r int8; off int8 := 0; seq int8 := 0; gone int8 := 0; c_rev int8; ver int8;
  got_keys bytea[]; got_revs int8[];
BEGIN
  IF cardinality(wk) > 0 THEN
    SELECT m.revision INTO cur FROM ${t.meta} m WHERE m.id = 1 FOR UPDATE;
  ELSE
    SELECT m.revision INTO cur FROM ${t.meta} m WHERE m.id = 1 FOR SHARE;
  END IF;
  FOR i IN 1..cardinality(ck) LOOP
    r := NULL;
    SELECT k.revision INTO r FROM ${t.kv} k WHERE k.key = ck[i];
    IF coalesce(r, 0) <> cr[i] THEN
      RETURN QUERY SELECT false, cur, 0::int8, ck[i], NULL::int, cr[i], coalesce(r, 0);
      RETURN;
    END IF;
  END LOOP;
  FOR i IN 1..cardinality(rlo) LOOP
    SELECT coalesce(array_agg(s.key ORDER BY s.key), '{}'), coalesce(array_agg(s.revision ORDER BY s.key), '{}')
      INTO got_keys, got_revs
      FROM (SELECT k.key, k.revision FROM ${t.kv} k
            WHERE k.key >= rlo[i] AND k.key < rhi[i] AND k.key > rafter[i] ORDER BY k.key LIMIT rlimit[i]) s;
    IF got_keys <> coalesce(ekeys[off + 1 : off + rcount[i]], '{}')
       OR got_revs <> coalesce(erevs[off + 1 : off + rcount[i]], '{}') THEN
      RETURN QUERY SELECT false, cur, 0::int8, NULL::bytea, i, NULL::int8, NULL::int8;
      RETURN;
    END IF;
    off := off + rcount[i];
  END LOOP;
  FOR i IN 1..cardinality(wk) LOOP
    IF wv[i] IS NULL THEN
      DELETE FROM ${t.kv} k WHERE k.key = wk[i];
      IF FOUND THEN
        INSERT INTO ${t.events} (revision, seq, type, key, value, create_revision, version)
          VALUES (cur + 1, seq, 'delete', wk[i], NULL, 0, 0);
        seq := seq + 1;
        gone := gone + 1;
      END IF;
    ELSE
      INSERT INTO ${t.kv} AS k (key, value, revision, create_revision, version)
        VALUES (wk[i], wv[i], cur + 1, cur + 1, 1)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision, version = k.version + 1
        RETURNING k.create_revision, k.version INTO c_rev, ver;
      INSERT INTO ${t.events} (revision, seq, type, key, value, create_revision, version)
        VALUES (cur + 1, seq, 'put', wk[i], wv[i], c_rev, ver);
      seq := seq + 1;
    END IF;
  END LOOP;
  IF seq = 0 THEN
    RETURN QUERY SELECT true, cur, 0::int8, NULL::bytea, NULL::int, NULL::int8, NULL::int8;
    RETURN;
  END IF;
  UPDATE ${t.meta} SET revision = cur + 1 WHERE id = 1;
  PERFORM pg_notify(channel, (cur + 1)::text);
  RETURN QUERY SELECT true, cur + 1, gone, NULL::bytea, NULL::int, NULL::int8, NULL::int8;
END
$fn$;`;
}

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
  private readonly t: { kv: string; events: string; meta: string; channel: string; commit: string };
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
    this.t = {
      kv: `${p}_kv`,
      events: `${p}_events`,
      meta: `${p}_meta`,
      channel: `${p}_changes`,
      commit: `${p}_commit`,
    };
  }

  async read(key: string): Promise<StoredEntry | undefined> {
    const rows = await this.query<EntryRow>(
      {
        name: `${this.t.kv}_read`,
        text: `SELECT key, value, revision, create_revision, version FROM ${this.t.kv} WHERE key = $1`,
      },
      [keyBytes(key)],
    );
    return rows[0] ? toEntry(rows[0]) : undefined;
  }

  async range(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredEntry[]> {
    return this.rangeOn(prefix, startAfter, limit);
  }

  async commit(request: CommitRequest): Promise<CommitOutcome> {
    const expected = request.ranges.flatMap((r) => r.seen);
    const rows = await this.query<CommitRow>(
      {
        name: `${this.t.commit}_call`,
        text: `SELECT * FROM ${this.t.commit}($1::bytea[], $2::int8[], $3::bytea[], $4::text[], $5::bytea[], $6::bytea[],
                 $7::bytea[], $8::int8[], $9::int8[], $10::bytea[], $11::int8[], $12::text)`,
      },
      [
        request.checks.map((c) => keyBytes(c.key)),
        request.checks.map((c) => c.revision),
        request.writes.map((w) => keyBytes(w.key)),
        request.writes.map((w) => w.value ?? null),
        request.ranges.map((r) => keyBytes(r.prefix)),
        request.ranges.map((r) => prefixEnd(r.prefix) ?? BEYOND_EVERY_KEY),
        request.ranges.map((r) => (r.startAfter === undefined ? Buffer.alloc(0) : keyBytes(r.startAfter))),
        request.ranges.map((r) => r.limit),
        request.ranges.map((r) => r.seen.length),
        expected.map((e) => keyBytes(e.key)),
        expected.map((e) => e.revision),
        this.t.channel,
      ],
    );
    const row = rows[0];
    if (!row) throw new NubesError('Internal', 'PostgreSQL store: commit returned no row');
    if (row.o_ok) {
      if (request.writes.length > 0) this.notify();
      return { ok: true, revision: Number(row.o_rev), removed: Number(row.o_removed) };
    }
    if (row.o_range !== null)
      return { ok: false, conflict: { prefix: request.ranges[row.o_range - 1]?.prefix ?? '' } };
    return {
      ok: false,
      conflict: {
        key: (row.o_key as Buffer).toString('utf8'),
        expected: Number(row.o_expected),
        actual: Number(row.o_actual),
      },
    };
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

  private async query<R extends pg.QueryResultRow>(
    sql: string | { name: string; text: string },
    params: unknown[] = [],
  ): Promise<R[]> {
    await this.schema();
    try {
      const config = typeof sql === 'string' ? { text: sql, values: params } : { ...sql, values: params };
      return (await this.pool.query<R>(config)).rows;
    } catch (cause) {
      throw storeError(cause);
    }
  }

  private async rangeOn(
    prefix: string,
    startAfter: string | undefined,
    limit: number,
  ): Promise<StoredEntry[]> {
    const rows = await this.query<EntryRow>(
      {
        name: `${this.t.kv}_range`,
        text: `SELECT key, value, revision, create_revision, version FROM ${this.t.kv}
               WHERE key >= $1 AND key < $2 AND key > $3 ORDER BY key LIMIT $4`,
      },
      [
        keyBytes(prefix),
        prefixEnd(prefix) ?? BEYOND_EVERY_KEY,
        startAfter === undefined ? Buffer.alloc(0) : keyBytes(startAfter),
        limit,
      ],
    );
    return rows.map(toEntry);
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
      await client.query(commitFunction(this.t));
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
