import type { Store, Watch } from '@nubes/core';
import { parseInput } from '@nubes/core';
import { z } from 'zod';
import type { ReconcileResult } from './agent.js';

/** Options of {@link VpcAgent.watch}. */
export interface AgentLoopOptions {
  /** Quiet time after a change before reconciling, in ms (default 200): a burst of changes costs one run. */
  debounceMs?: number;
  /** Wait before retrying a failed reconcile or reopening a failed watch, in ms (default 2000). */
  retryMs?: number;
  /**
   * Also reconcile this often with no change seen, in ms (default: never). A level-triggered safety net, as
   * Kubernetes controllers resync: whatever a missed event or an outside hand changed on the host is put
   * back within one period.
   */
  resyncMs?: number;
  /** Called after every successful reconcile. */
  onReconcile?: (result: ReconcileResult) => void;
  /** Called with every failed reconcile (retried after `retryMs`) and watch failure (reopened). */
  onError?: (error: unknown) => void;
}

/** A running agent loop, from {@link VpcAgent.watch}. */
export interface AgentLoop {
  /** Successful reconciles so far. */
  readonly reconciles: number;
  /** Resolves once no reconcile is running or scheduled (a failed one stays scheduled until it succeeds). */
  idle(): Promise<void>;
  /** Stops watching and waits for a running reconcile to finish. */
  close(): Promise<void>;
}

const optionsSchema = z.object({
  debounceMs: z.number().int().min(0).max(600_000).default(200),
  retryMs: z.number().int().min(1).max(600_000).default(2000),
  resyncMs: z.number().int().min(10).max(86_400_000).optional(),
});

/** Reconciles now, then after every change under `prefix` (debounced), one run at a time. */
export class ReconcileLoop implements AgentLoop {
  reconciles = 0;
  private readonly debounceMs: number;
  private readonly retryMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private dirty = false;
  private closed = false;
  private watch: Watch | undefined;
  private waiters: (() => void)[] = [];
  private resync: NodeJS.Timeout | undefined;
  private readonly resyncMs: number | undefined;

  private constructor(
    private readonly store: Store,
    private readonly prefix: string,
    private readonly reconcile: () => Promise<ReconcileResult>,
    private readonly options: AgentLoopOptions,
  ) {
    const o = parseInput(
      optionsSchema,
      { debounceMs: options.debounceMs, retryMs: options.retryMs, resyncMs: options.resyncMs },
      'options',
    );
    this.debounceMs = o.debounceMs;
    this.retryMs = o.retryMs;
    this.resyncMs = o.resyncMs;
  }

  /** Opens the watch first, so no change made after this resolves can be missed, then reconciles. */
  static async start(
    store: Store,
    prefix: string,
    reconcile: () => Promise<ReconcileResult>,
    options: AgentLoopOptions = {},
  ): Promise<ReconcileLoop> {
    const loop = new ReconcileLoop(store, prefix, reconcile, options);
    await loop.open();
    if (loop.resyncMs !== undefined) {
      loop.resync = setInterval(() => loop.schedule(0), loop.resyncMs);
      loop.resync.unref();
    }
    return loop;
  }

  private async open(): Promise<void> {
    this.watch = await this.store.watch(this.prefix);
    this.schedule(0);
    void this.consume(this.watch);
  }

  private async consume(watch: Watch): Promise<void> {
    try {
      for await (const _event of watch) this.schedule(this.debounceMs);
    } catch (error) {
      if (this.closed) return;
      // `Gone` after a compaction, a lost connection...: reopen, and reconcile in case something was missed.
      this.options.onError?.(error);
      setTimeout(() => {
        if (!this.closed) this.open().catch((e) => this.consume(failing(e)));
      }, this.retryMs).unref();
    }
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.running) {
      this.dirty = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fire(), ms);
  }

  private fire(): void {
    this.timer = undefined;
    let failed = false;
    this.running = this.reconcile()
      .then(
        (result) => {
          this.reconciles++;
          this.options.onReconcile?.(result);
        },
        (error: unknown) => {
          failed = true;
          this.options.onError?.(error);
        },
      )
      .finally(() => {
        this.running = undefined;
        if (failed) this.schedule(this.retryMs);
        else if (this.dirty) this.schedule(0);
        this.dirty = false;
        this.settle();
      });
  }

  private settle(): void {
    if (this.timer || this.running) return;
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  idle(): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.settle();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.resync);
    clearTimeout(this.timer);
    this.timer = undefined;
    this.watch?.close();
    await this.running;
    this.settle();
  }
}

/** A watch whose iteration fails at once, so a failed reopen goes through the same retry path. */
function failing(error: unknown): Watch {
  return {
    close() {},
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(error) }),
  };
}
