import { timeoutError } from '../errors.js';

/** One asynchronous QMP event, as QEMU sends it. */
export interface QmpEvent<D extends Record<string, unknown> = Record<string, unknown>> {
  /** The event name, e.g. `STOP`, `DEVICE_DELETED`, `JOB_STATUS_CHANGE`. */
  event: string;
  /** The event's data (an empty object when QEMU sends none). */
  data: D;
  /** When QEMU emitted it. */
  timestamp: { seconds: number; microseconds: number };
}

/** Which events a listener or waiter wants: a name, several names, or a predicate. */
export type QmpEventFilter = string | readonly string[] | ((event: QmpEvent) => boolean);

/** Options for {@link QmpEvents.waitFor}. */
export interface WaitForEventOptions {
  /** Reject with `Timeout` after this many milliseconds. Default: wait until the connection ends. */
  timeoutMs?: number;
  /** Reject with `Timeout` (`details.aborted`) when aborted. */
  signal?: AbortSignal;
  /** With a name filter, an extra test on the event (e.g. `data.device === 'disk1'`). */
  match?: (event: QmpEvent) => boolean;
}

function compile(filter: QmpEventFilter | undefined, match?: (event: QmpEvent) => boolean) {
  let base: (event: QmpEvent) => boolean;
  if (filter === undefined) base = () => true;
  else if (typeof filter === 'string') base = (e) => e.event === filter;
  else if (typeof filter === 'function') base = filter;
  else {
    const names = new Set(filter);
    base = (e) => names.has(e.event);
  }
  return match ? (e: QmpEvent) => base(e) && match(e) : base;
}

interface Subscriber {
  accepts: (event: QmpEvent) => boolean;
  deliver: (event: QmpEvent) => void;
  end: (error: Error) => void;
}

/**
 * The event side of a QMP connection: listeners, async iteration and waiting for a match. A waiter or
 * iterator sees only events that arrive after it was created, so create it before sending the command
 * that causes the event (`const gone = events.waitFor(...); await qmp.deviceDel(id); await gone`).
 */
export class QmpEvents implements AsyncIterable<QmpEvent> {
  private readonly subscribers = new Set<Subscriber>();
  private endError: Error | undefined;

  /** Calls `listener` for every matching event until the returned function is called. */
  on(filter: QmpEventFilter, listener: (event: QmpEvent) => void): () => void {
    const subscriber: Subscriber = { accepts: compile(filter), deliver: listener, end: () => {} };
    this.subscribers.add(subscriber);
    return () => this.subscribers.delete(subscriber);
  }

  /**
   * Resolves with the first matching event. Rejects with `Timeout` on `timeoutMs` or `signal`, and with
   * the connection's error when it ends first.
   */
  waitFor<D extends Record<string, unknown> = Record<string, unknown>>(
    filter: QmpEventFilter,
    options: WaitForEventOptions = {},
  ): Promise<QmpEvent<D>> {
    if (this.endError) return Promise.reject(this.endError);
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        this.subscribers.delete(subscriber);
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const subscriber: Subscriber = {
        accepts: compile(filter, options.match),
        deliver: (event) => {
          finish();
          resolve(event as QmpEvent<D>);
        },
        end: (error) => {
          finish();
          reject(error);
        },
      };
      const what = `waiting for QMP event ${typeof filter === 'function' ? '(predicate)' : String(filter)}`;
      const onAbort = () => subscriber.end(timeoutError(what, options.timeoutMs, true));
      if (options.signal?.aborted) {
        reject(timeoutError(what, options.timeoutMs, true));
        return;
      }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.timeoutMs !== undefined)
        timer = setTimeout(() => subscriber.end(timeoutError(what, options.timeoutMs)), options.timeoutMs);
      this.subscribers.add(subscriber);
    });
  }

  /**
   * An async iterator over matching events; it ends (without throwing) when the connection ends, and
   * unsubscribes when the loop breaks.
   */
  listen(filter?: QmpEventFilter): AsyncIterableIterator<QmpEvent> {
    const queue: QmpEvent[] = [];
    const waiting: ((result: IteratorResult<QmpEvent>) => void)[] = [];
    let done = Boolean(this.endError);
    const subscriber: Subscriber = {
      accepts: compile(filter),
      deliver: (event) => {
        const next = waiting.shift();
        if (next) next({ value: event, done: false });
        else queue.push(event);
      },
      end: () => {
        done = true;
        for (const next of waiting.splice(0)) next({ value: undefined, done: true });
      },
    };
    if (!done) this.subscribers.add(subscriber);
    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: () => {
        const event = queue.shift();
        if (event) return Promise.resolve({ value: event, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => waiting.push(resolve));
      },
      return: () => {
        this.subscribers.delete(subscriber);
        subscriber.end(new Error('iterator closed'));
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** Iterates over every event (see {@link QmpEvents.listen}). */
  [Symbol.asyncIterator](): AsyncIterator<QmpEvent> {
    return this.listen();
  }

  /** @internal Delivers one event to every matching subscriber. */
  dispatch(event: QmpEvent): void {
    for (const subscriber of [...this.subscribers]) {
      try {
        if (subscriber.accepts(event)) subscriber.deliver(event);
      } catch {
        // A throwing listener must not starve the others or tear down the connection.
      }
    }
  }

  /** @internal Ends every waiter with `error` and every iterator normally. */
  end(error: Error): void {
    if (this.endError) return;
    this.endError = error;
    for (const subscriber of [...this.subscribers]) subscriber.end(error);
    this.subscribers.clear();
  }
}
