import { NubesError } from '../errors.js';
import type { Engine, LogCursor, StoredEvent } from './engine.js';
import type { JsonValue, Watch, WatchEvent } from './types.js';

const BATCH = 512;
const END_OF_REVISION = Number.MAX_SAFE_INTEGER;

function decodeEvent<T>(event: StoredEvent): WatchEvent<T> {
  const out: WatchEvent<T> = {
    type: event.type,
    key: event.key,
    revision: event.revision,
    createRevision: event.createRevision,
    version: event.version,
  };
  if (event.value !== undefined) out.value = JSON.parse(event.value) as T;
  return out;
}

/**
 * A watch that tails the engine's change log: woken by the engine, it reads every event after
 * its cursor, so nothing is skipped or reordered however wake-ups are batched or lost.
 */
export class LogWatch<T = JsonValue> implements Watch<T> {
  private cursor: LogCursor;
  private readonly queue: WatchEvent<T>[] = [];
  private waiter:
    | { resolve: (r: IteratorResult<WatchEvent<T>>) => void; reject: (e: unknown) => void }
    | undefined;
  private failure: unknown;
  private closed = false;
  private pumping = false;
  private again = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly engine: Engine,
    private readonly prefix: string,
    fromRevision: number,
  ) {
    this.cursor = { revision: fromRevision - 1, seq: END_OF_REVISION };
    this.unsubscribe = engine.subscribe(() => this.pump());
    this.pump();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.waiter?.resolve({ done: true, value: undefined });
    this.waiter = undefined;
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent<T>> {
    return {
      next: () => this.next(),
      return: async () => {
        this.close();
        return { done: true, value: undefined };
      },
    };
  }

  private next(): Promise<IteratorResult<WatchEvent<T>>> {
    const event = this.queue.shift();
    if (event) return Promise.resolve({ done: false, value: event });
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  private deliver(event: WatchEvent<T>): void {
    if (this.waiter) {
      const { resolve } = this.waiter;
      this.waiter = undefined;
      resolve({ done: false, value: event });
    } else {
      this.queue.push(event);
    }
  }

  private fail(error: unknown): void {
    this.failure = error;
    this.closed = true;
    this.unsubscribe();
    if (this.waiter && this.queue.length === 0) {
      const { reject } = this.waiter;
      this.waiter = undefined;
      reject(error);
    }
  }

  private pump(): void {
    if (this.closed) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    void this.drain()
      .catch((error: unknown) => this.fail(error))
      .finally(() => {
        this.pumping = false;
        if (this.again && !this.closed) {
          this.again = false;
          this.pump();
        }
      });
  }

  private async drain(): Promise<void> {
    for (;;) {
      this.again = false;
      const page = await this.engine.events(this.cursor, this.prefix, BATCH);
      if (this.closed) return;
      const needed = this.cursor.seq === END_OF_REVISION ? this.cursor.revision + 1 : this.cursor.revision;
      if (page.compacted >= needed) {
        throw new NubesError(
          'Gone',
          `watch on ${JSON.stringify(this.prefix)} needs revision ${needed}, compacted up to ${page.compacted}`,
          { details: { prefix: this.prefix, compactedRevision: page.compacted, neededRevision: needed } },
        );
      }
      for (const event of page.events) {
        this.cursor = { revision: event.revision, seq: event.seq };
        this.deliver(decodeEvent<T>(event));
      }
      if (page.events.length < BATCH) {
        // Everything up to the snapshot's revision has been seen, so later compaction up to it is harmless.
        if (page.revision > this.cursor.revision || this.cursor.seq !== END_OF_REVISION) {
          this.cursor = { revision: Math.max(page.revision, this.cursor.revision), seq: END_OF_REVISION };
        }
        return;
      }
    }
  }
}
