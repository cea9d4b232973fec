import {
  addResources,
  NubesError,
  newId,
  notFound,
  parseInput,
  type Resources,
  type Store,
  subtractResources,
} from '@nubes/core';
import {
  changeUsage,
  listAll,
  type QuotaContext,
  readConfig,
  readProject,
  readReceipt,
  readTrackedParent,
  writeProject,
  writeReceipt,
} from './context.js';
import { idempotencyMismatch, quotaExceeded, reservationSettled } from './errors.js';
import { evaluate, type ResourceCheck } from './headroom.js';
import {
  addUsage,
  checkParentChange,
  constraintsFor,
  ownUsage,
  shift,
  subtractUsage,
  sumUsage,
  treeUsage,
  zeroUsage,
} from './hierarchy.js';
import { QuotaKeys } from './keys.js';
import { applyOverrides, assertRegistered, effectiveLimit } from './limits.js';
import {
  type EnforcementModel,
  emptyProject,
  fingerprint,
  type ProjectRecord,
  type ReservationRecord,
  toJson,
} from './records.js';
import { type RepairReport, type ResourceCounter, repairUsage } from './repair.js';
import { type ProjectUsage, projectReport, type TreeUsage, treeReport } from './reports.js';
import {
  defaultsSchema,
  deltasSchema,
  limitOverridesSchema,
  modelSchema,
  projectIdSchema,
  quotaOptionsSchema,
  releaseOptionsSchema,
  repairOptionsSchema,
  reservationIdSchema,
  reserveOptionsSchema,
  sweeperOptionsSchema,
} from './schemas.js';
import { type Settlement, type SettlementOutcome, settleInTx } from './settle.js';
import { type Sweeper, type SweepResult, startSweeper, sweep } from './sweeper.js';

/** Options for {@link Quota}. */
export interface QuotaOptions {
  /** Store keys of this quota domain start with this (default `quota/`); it must end with `/`. */
  keyPrefix?: string;
  /** The clock, in milliseconds since the epoch (default `Date.now`); tests pass a fake one. */
  now?: () => number;
  /** How long a reservation holds its amounts when `reserve` is given no `ttlMs` (default 10 minutes). */
  defaultTtlMs?: number;
  /** How long idempotency receipts are kept, so retries within it are recognised (default 24 hours). */
  receiptTtlMs?: number;
  /** Attempts of each Store transaction under contention before `Conflict` (default 200). */
  maxAttempts?: number;
}

/** Options for {@link Quota.reserve}. */
export interface ReserveOptions {
  /** Milliseconds until the reservation expires and the sweeper may reclaim it (default `defaultTtlMs`). */
  ttlMs?: number;
  /** A retried `reserve` with the same key and input returns the first call's reservation instead of a new one. */
  idempotencyKey?: string;
}

/** Options for {@link Quota.release}. */
export interface ReleaseOptions {
  /** A retried `release` with the same key and input is applied once. */
  idempotencyKey?: string;
}

/** The answer of {@link Quota.check}. */
export interface CheckResult {
  project: string;
  /** True when `reserve` with the same deltas would succeed now. */
  fits: boolean;
  /** Every requested resource against every limit that applies, with its headroom (`available`). */
  checks: ResourceCheck[];
  /** The checks that did not fit. */
  failures: ResourceCheck[];
}

/** The answer of {@link Quota.release}. */
export interface ReleaseResult {
  project: string;
  /** What was taken off the project's usage. */
  released: Resources;
  /**
   * What was asked to be released beyond the recorded usage (usage never goes below 0): a sign of drift that
   * {@link Quota.repair} fixes.
   */
  clamped: Resources;
  /** True when this was a retry of an already applied release with the same idempotency key. */
  replayed: boolean;
}

type Rejected = { ok: false; failures: ResourceCheck[] };

/**
 * Per-project limits and usage on a @nubes/core Store, with reservations that never over-commit: every
 * operation is one serializable Store transaction, so concurrent callers, in this process or in others sharing
 * the store, are serialized by the store and a limit can never be exceeded.
 *
 * @example
 * ```ts
 * const quota = new Quota(new SqliteStore({ path: 'state.db' }));
 * await quota.setLimits('p1', { vcpus: 8 });
 * const id = await quota.reserve('p1', { instances: 1, vcpus: 4 });
 * try { await createVm(); await quota.commit(id); } catch (e) { await quota.rollback(id); throw e; }
 * ```
 */
export class Quota {
  private readonly ctx: QuotaContext;
  private readonly defaultTtlMs: number;

  /** Opens a quota domain on `store`; several `Quota` objects (or processes) on one store share its state. */
  constructor(store: Store, options: QuotaOptions = {}) {
    const parsed = parseInput(quotaOptionsSchema, options, 'options');
    this.ctx = {
      store,
      keys: new QuotaKeys(parsed.keyPrefix),
      now: parsed.now ?? Date.now,
      tx: { maxAttempts: parsed.maxAttempts },
      receiptTtlMs: parsed.receiptTtlMs,
    };
    this.defaultTtlMs = parsed.defaultTtlMs;
  }

  /**
   * Registers resources, or changes their default limits (-1: unlimited). The standard resources
   * (`instances`, `vcpus`, `memoryMiB`, ... see `STANDARD_DEFAULTS`) are registered from the start.
   */
  async registerResources(defaults: Record<string, number>): Promise<void> {
    const parsed = parseInput(defaultsSchema, defaults, 'defaults');
    await this.ctx.store.transaction(async (tx) => {
      const config = await readConfig(tx, this.ctx);
      tx.put(this.ctx.keys.config(), toJson({ ...config, defaults: { ...config.defaults, ...parsed } }));
    }, this.ctx.tx);
  }

  /** The registered resources and their default limits. */
  async defaults(): Promise<Record<string, number>> {
    return { ...(await readConfig(this.ctx.store, this.ctx)).defaults };
  }

  /** The enforcement model in force (`flat` until set). */
  async enforcementModel(): Promise<EnforcementModel> {
    return (await readConfig(this.ctx.store, this.ctx)).model;
  }

  /**
   * Switches between `flat` (each project against its own limit) and `strict-two-level` (a parent's limit
   * covers its whole tree). The parents' children totals are rebuilt in the same transaction, so no
   * reservation ever sees them half-built. Existing usage is kept even where it now exceeds a tree limit;
   * new reservations there are refused until usage drops.
   */
  async setEnforcementModel(model: EnforcementModel): Promise<void> {
    const next = parseInput(modelSchema, model, 'model');
    await this.ctx.store.transaction(async (tx) => {
      const config = await readConfig(tx, this.ctx);
      if (config.model === next) return;
      const entries = await listAll<ProjectRecord>(tx, this.ctx.keys.projects());
      const records = new Map(entries.map((e) => [e.key.slice(this.ctx.keys.projects().length), e.value]));
      const children = new Map<string, ProjectRecord[]>();
      for (const record of records.values()) {
        if (record.parent !== null)
          children.set(record.parent, [...(children.get(record.parent) ?? []), record]);
      }
      // A parent with no limits or usage of its own has no record yet, so parents come from both maps.
      for (const id of new Set([...records.keys(), ...children.keys()])) {
        const { children: _, ...rest } = records.get(id) ?? emptyProject();
        const kids = children.get(id);
        writeProject(
          tx,
          this.ctx,
          id,
          next === 'strict-two-level' && kids ? { ...rest, children: sumUsage(kids) } : rest,
        );
      }
      tx.put(this.ctx.keys.config(), toJson({ ...config, model: next }));
    }, this.ctx.tx);
  }

  /**
   * Sets a project's own limits, overriding the registered defaults (-1: unlimited; `null`: back to the
   * default). A limit below current usage is accepted, as in Nova: nothing is taken away, new reservations
   * are refused until usage drops.
   */
  async setLimits(project: string, limits: Record<string, number | null>): Promise<void> {
    const id = parseInput(projectIdSchema, project, 'project');
    const overrides = parseInput(limitOverridesSchema, limits, 'limits');
    await this.ctx.store.transaction(async (tx) => {
      const [config, record] = await Promise.all([readConfig(tx, this.ctx), readProject(tx, this.ctx, id)]);
      assertRegistered(config, overrides, 'limits');
      writeProject(tx, this.ctx, id, { ...record, limits: applyOverrides(record.limits, overrides) });
    }, this.ctx.tx);
  }

  /** A project's effective limits: overrides, then registered defaults. */
  async limits(project: string): Promise<Record<string, number>> {
    const id = parseInput(projectIdSchema, project, 'project');
    const [config, record] = await Promise.all([
      readConfig(this.ctx.store, this.ctx),
      readProject(this.ctx.store, this.ctx, id),
    ]);
    return Object.fromEntries(
      Object.keys(config.defaults).map((name) => [name, effectiveLimit(config, record, name)]),
    );
  }

  /**
   * Makes `parent` the parent of `project` (`null`: no parent). Trees are two levels deep at most. In the strict
   * model the project's usage moves with it into the new parent's tree, which must have room for it
   * (`QuotaExceeded` otherwise).
   */
  async setParent(project: string, parent: string | null): Promise<void> {
    const id = parseInput(projectIdSchema, project, 'project');
    const next = parseInput(projectIdSchema.nullable(), parent, 'parent');
    const outcome = await this.ctx.store.transaction(async (tx): Promise<Rejected | { ok: true }> => {
      const [config, record, kids] = await Promise.all([
        readConfig(tx, this.ctx),
        readProject(tx, this.ctx, id),
        tx.list(this.ctx.keys.children(id), { limit: 1 }),
      ]);
      if (record.parent === next) return { ok: true };
      const [newParent, oldParent] = await Promise.all([
        next === null ? undefined : readProject(tx, this.ctx, next),
        record.parent === null ? undefined : readProject(tx, this.ctx, record.parent),
      ]);
      checkParentChange(id, next, kids.items.length > 0, newParent);
      const strict = config.model === 'strict-two-level';
      const own = ownUsage(record);
      if (strict && next !== null && newParent) {
        const moving = addResources(record.inUse, record.reserved);
        const verdict = evaluate(moving, [
          {
            project: next,
            scope: 'tree',
            limit: (r) => effectiveLimit(config, newParent, r),
            usage: treeUsage(newParent),
          },
        ]);
        if (!verdict.fits) return { ok: false, failures: verdict.failures };
        writeProject(tx, this.ctx, next, {
          ...newParent,
          children: addUsage(newParent.children ?? zeroUsage(), own),
        });
      }
      if (record.parent !== null && oldParent) {
        tx.delete(this.ctx.keys.child(record.parent, id));
        if (strict) {
          writeProject(tx, this.ctx, record.parent, {
            ...oldParent,
            children: subtractUsage(oldParent.children ?? zeroUsage(), own),
          });
        }
      }
      if (next !== null) tx.put(this.ctx.keys.child(next, id), true);
      writeProject(tx, this.ctx, id, { ...record, parent: next });
      return { ok: true };
    }, this.ctx.tx);
    if (!outcome.ok) throw quotaExceeded(id, outcome.failures);
  }

  /** Would `deltas` fit in `project` now? Every resource against every applicable limit, with its headroom. */
  async check(project: string, deltas: Resources): Promise<CheckResult> {
    const id = parseInput(projectIdSchema, project, 'project');
    const want = addResources({}, parseInput(deltasSchema, deltas, 'deltas'));
    // A transaction even though nothing is written: the store validates the reads, so the answer is one snapshot.
    const verdict = await this.ctx.store.transaction(async (tx) => {
      const [config, record] = await Promise.all([readConfig(tx, this.ctx), readProject(tx, this.ctx, id)]);
      assertRegistered(config, want, 'deltas');
      const parent = await readTrackedParent(tx, this.ctx, config, record);
      return evaluate(want, constraintsFor(config, id, record, parent));
    }, this.ctx.tx);
    return { project: id, ...verdict };
  }

  /**
   * Atomically checks `deltas` against the project's limits (and, in the strict model, its parent's tree
   * limit) and holds them. Returns the reservation id to `commit` or `rollback`; if neither comes within the
   * ttl, the sweeper releases it. Throws `QuotaExceeded` naming every resource that did not fit.
   */
  async reserve(project: string, deltas: Resources, options: ReserveOptions = {}): Promise<string> {
    const id = parseInput(projectIdSchema, project, 'project');
    const want = addResources({}, parseInput(deltasSchema, deltas, 'deltas'));
    const { ttlMs, idempotencyKey } = parseInput(reserveOptionsSchema, options, 'options');
    const ttl = ttlMs ?? this.defaultTtlMs;
    const reservationId = newId();
    const print = fingerprint(id, want);
    const outcome = await this.ctx.store.transaction(
      async (tx): Promise<Rejected | { ok: true; id: string }> => {
        const now = this.ctx.now();
        const [config, record, receipt] = await Promise.all([
          readConfig(tx, this.ctx),
          readProject(tx, this.ctx, id),
          idempotencyKey === undefined ? undefined : readReceipt(tx, this.ctx, 'reserve', idempotencyKey),
        ]);
        assertRegistered(config, want, 'deltas');
        if (receipt && idempotencyKey !== undefined) {
          if (receipt.fingerprint !== print)
            throw idempotencyMismatch('options.idempotencyKey', idempotencyKey);
          return { ok: true, id: (receipt.result as { reservation: string }).reservation };
        }
        const parent = await readTrackedParent(tx, this.ctx, config, record);
        const verdict = evaluate(want, constraintsFor(config, id, record, parent));
        // Returned, not thrown: the store then validates what was read, so a refusal is never based on a torn read.
        if (!verdict.fits) return { ok: false, failures: verdict.failures };
        changeUsage(tx, this.ctx, config, id, record, parent, (own) => shift(own, 'reserved', want, 1));
        const reservation: ReservationRecord = {
          id: reservationId,
          project: id,
          deltas: want,
          createdAt: now,
          expiresAt: now + ttl,
        };
        tx.put(this.ctx.keys.reservation(reservationId), toJson(reservation));
        tx.put(this.ctx.keys.expiry(reservation.expiresAt, reservationId), true);
        if (idempotencyKey !== undefined) {
          writeReceipt(tx, this.ctx, 'reserve', idempotencyKey, print, { reservation: reservationId }, now);
        }
        return { ok: true, id: reservationId };
      },
      this.ctx.tx,
    );
    if (!outcome.ok) throw quotaExceeded(id, outcome.failures);
    return outcome.id;
  }

  /**
   * Turns a reservation into usage. A retried commit of a committed reservation returns the first result
   * (`replayed: true`). A reservation past its ttl is released instead and `Conflict` is thrown: the caller
   * held it too long and its amounts may already have gone to someone else.
   */
  commit(reservation: string): Promise<Settlement> {
    return this.settle(reservation, 'committed');
  }

  /**
   * Releases a reservation's amounts. Rolling back one that the sweeper already expired succeeds (the
   * amounts are back either way); rolling back a committed one throws `Conflict`.
   */
  rollback(reservation: string): Promise<Settlement> {
    return this.settle(reservation, 'rolledBack');
  }

  /**
   * Gives back usage when resources are deleted. Usage never drops below 0: an excess is reported in
   * `clamped` rather than refused, because the resource is gone whatever the counter says.
   */
  async release(project: string, deltas: Resources, options: ReleaseOptions = {}): Promise<ReleaseResult> {
    const id = parseInput(projectIdSchema, project, 'project');
    const want = addResources({}, parseInput(deltasSchema, deltas, 'deltas'));
    const { idempotencyKey } = parseInput(releaseOptionsSchema, options, 'options');
    const print = fingerprint(id, want);
    return this.ctx.store.transaction(async (tx) => {
      const now = this.ctx.now();
      const [config, record, receipt] = await Promise.all([
        readConfig(tx, this.ctx),
        readProject(tx, this.ctx, id),
        idempotencyKey === undefined ? undefined : readReceipt(tx, this.ctx, 'release', idempotencyKey),
      ]);
      assertRegistered(config, want, 'deltas');
      if (receipt && idempotencyKey !== undefined) {
        if (receipt.fingerprint !== print)
          throw idempotencyMismatch('options.idempotencyKey', idempotencyKey);
        return { ...(receipt.result as unknown as ReleaseResult), replayed: true };
      }
      const released: Record<string, number> = {};
      for (const [name, amount] of Object.entries(want))
        released[name] = Math.min(amount, record.inUse[name] ?? 0);
      const result: ReleaseResult = {
        project: id,
        released: addResources({}, released),
        clamped: subtractResources(want, released),
        replayed: false,
      };
      const parent = await readTrackedParent(tx, this.ctx, config, record);
      changeUsage(tx, this.ctx, config, id, record, parent, (own) =>
        shift(own, 'inUse', result.released, -1),
      );
      if (idempotencyKey !== undefined)
        writeReceipt(tx, this.ctx, 'release', idempotencyKey, print, toJson(result), now);
      return result;
    }, this.ctx.tx);
  }

  /** A project's usage report: per resource its limit, in use, reserved and available. */
  async usage(project: string): Promise<ProjectUsage> {
    const id = parseInput(projectIdSchema, project, 'project');
    return this.ctx.store.transaction(async (tx) => {
      const [config, record] = await Promise.all([readConfig(tx, this.ctx), readProject(tx, this.ctx, id)]);
      const parent = await readTrackedParent(tx, this.ctx, config, record);
      return projectReport(config, id, record, parent);
    }, this.ctx.tx);
  }

  /** The usage report of `project` and its children, with the tree's totals (one consistent snapshot). */
  async treeUsage(project: string): Promise<TreeUsage> {
    const id = parseInput(projectIdSchema, project, 'project');
    return this.ctx.store.transaction(async (tx) => {
      const prefix = this.ctx.keys.children(id);
      const [config, record, index] = await Promise.all([
        readConfig(tx, this.ctx),
        readProject(tx, this.ctx, id),
        listAll<boolean>(tx, prefix),
      ]);
      const ids = index.map((e) => e.key.slice(prefix.length));
      const children = await Promise.all(
        ids.map(async (child) => ({ id: child, record: await readProject(tx, this.ctx, child) })),
      );
      return treeReport(config, id, record, children);
    }, this.ctx.tx);
  }

  /**
   * Drift repair: asks `count` for the real amounts of each project (as the caller's service knows them),
   * sets usage to them and reports every difference found and fixed. Only the resources `count` returns are
   * touched. Projects with pending reservations are skipped (a resource being created may already be counted
   * but not yet committed); so is a project whose usage changes while it is being counted, after retries.
   */
  async repair(count: ResourceCounter, options: { projects?: string[] } = {}): Promise<RepairReport> {
    if (typeof count !== 'function')
      throw new NubesError('InvalidInput', 'count: must be a function', { details: { field: 'count' } });
    const { projects } = parseInput(repairOptionsSchema, options, 'options');
    return repairUsage(this.ctx, count, projects);
  }

  /** Expires every reservation past its ttl and forgets old receipts, once. Safe to run from several processes. */
  sweep(): Promise<SweepResult> {
    return sweep(this.ctx);
  }

  /** Runs {@link sweep} every `intervalMs` (default 5 s) until `stop()`; errors go to `onError`. */
  startSweeper(options: { intervalMs?: number; onError?: (error: unknown) => void } = {}): Sweeper {
    const parsed = parseInput(sweeperOptionsSchema, options, 'options');
    return startSweeper(this.ctx, parsed.intervalMs, parsed.onError);
  }

  private async settle(
    reservation: string,
    target: Exclude<SettlementOutcome, 'expired'>,
  ): Promise<Settlement> {
    const rid = parseInput(reservationIdSchema, reservation, 'reservation');
    const result = await this.ctx.store.transaction(
      async (tx): Promise<{ settlement: Settlement } | { error: NubesError; settlement?: Settlement }> => {
        const now = this.ctx.now();
        const [entry, receipt] = await Promise.all([
          tx.get<ReservationRecord>(this.ctx.keys.reservation(rid)),
          readReceipt(tx, this.ctx, 'settle', rid),
        ]);
        if (!entry) {
          if (!receipt) return { error: notFound('reservation', rid) };
          const prior = receipt.result as unknown as Settlement;
          const same = prior.outcome === target || (target === 'rolledBack' && prior.outcome === 'expired');
          return same
            ? { settlement: { ...prior, replayed: true } }
            : { error: reservationSettled(rid, prior.outcome, target) };
        }
        if (target === 'committed' && entry.value.expiresAt <= now) {
          // Settled here rather than left to the sweeper, so the caller's error and the released quota agree.
          const settlement = await settleInTx(tx, this.ctx, entry.value, 'expired', now);
          return { settlement, error: reservationSettled(rid, 'expired', target) };
        }
        return { settlement: await settleInTx(tx, this.ctx, entry.value, target, now) };
      },
      this.ctx.tx,
    );
    if ('error' in result) throw result.error;
    return result.settlement;
  }
}
