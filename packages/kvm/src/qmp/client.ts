import { EventEmitter } from 'node:events';
import { parseInput } from '@nubes/core';
import { z } from 'zod';
import { QmpCommandError, type QmpConnectionError, QmpNegotiationError, timeoutError } from '../errors.js';
import { type QmpEvent, QmpEvents } from './events.js';
import { type JsonObject, MessageChannel } from './protocol.js';
import { describeAddress, openSocket, type QmpAddress } from './transport.js';

/** The greeting QEMU sends on connect. */
export interface QmpGreeting {
  /** QEMU's version. */
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  /** Capabilities the server offers (`oob`). */
  capabilities: string[];
}

/** Options for {@link QmpClient.connect}. */
export interface QmpConnectOptions {
  /** Give up on connecting, greeting and negotiating after this long. Default 10 000 ms. */
  timeoutMs?: number;
  /** Default per-command timeout. Default 30 000 ms; 0 waits forever. */
  commandTimeoutMs?: number;
  /** Ask for out-of-band execution when the server offers it. Default true. */
  oob?: boolean;
}

/** Options for one command. */
export interface ExecuteOptions {
  /** Reject with `Timeout` after this long (overrides the client's default; 0 waits forever). */
  timeoutMs?: number;
  /** Cancel waiting for the reply: the call rejects with `Timeout` (`details.aborted`). */
  signal?: AbortSignal;
  /** Send as `exec-oob` (the command must allow it and the client must have negotiated `oob`). */
  oob?: boolean;
}

/** Events a {@link QmpClient} emits. */
export interface QmpClientEvents {
  /** The connection ended (EOF, crash, garbage, or {@link QmpClient.close}); carries the reason. */
  disconnect: [error: QmpConnectionError];
  /** Every asynchronous QMP event, also available through {@link QmpClient.events}. */
  event: [event: QmpEvent];
}

const addressSchema = z.union([
  z.object({ path: z.string().min(1).max(107, 'unix socket paths are limited to 107 bytes') }).strict(),
  z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict(),
]);
const connectOptionsSchema = z
  .object({
    timeoutMs: z.number().int().positive().optional(),
    commandTimeoutMs: z.number().int().min(0).optional(),
    oob: z.boolean().optional(),
  })
  .strict();
const commandSchema = z.string().regex(/^[a-z][a-z0-9_-]*$/i, 'must be a QMP command name');

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/**
 * A QMP client over a unix or TCP socket. `connect` reads the greeting and negotiates capabilities
 * (out-of-band when offered); `execute` sends a command with an id and resolves with its `return`;
 * events arrive on {@link QmpClient.events}. When the connection ends for any reason every pending
 * command rejects with the same {@link QmpConnectionError} and `disconnect` is emitted once.
 *
 * @example
 * ```ts
 * const qmp = await QmpClient.connect({ path: '/run/vm1/qmp.sock' });
 * console.log(await qmp.execute('query-status'));
 * await qmp.close();
 * ```
 */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  /** The server's greeting. */
  readonly greeting: QmpGreeting;
  /** Capabilities enabled by negotiation. */
  readonly capabilities: readonly string[];
  /** Asynchronous events: listen, iterate, wait for a match. */
  readonly events = new QmpEvents();
  /** Settles when the connection ends, with the reason. */
  readonly closed: Promise<QmpConnectionError>;

  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private readonly channel: MessageChannel;
  private readonly commandTimeoutMs: number;

  private constructor(
    channel: MessageChannel,
    greeting: QmpGreeting,
    capabilities: string[],
    commandTimeoutMs: number,
    private readonly queue: JsonObject[],
    setSink: (sink: (message: JsonObject) => void) => void,
  ) {
    super();
    this.channel = channel;
    this.greeting = greeting;
    this.capabilities = capabilities;
    this.commandTimeoutMs = commandTimeoutMs;
    setSink((message) => this.receive(message));
    this.closed = channel.closed;
    channel.closed.then((error) => {
      for (const [id, pending] of this.pending) {
        this.pending.delete(id);
        pending.reject(error);
      }
      this.events.end(error);
      this.emit('disconnect', error);
    });
    for (const message of this.queue.splice(0)) this.receive(message);
  }

  /** Connects, reads the greeting and negotiates. Rejects with `Unavailable` or `Timeout`. */
  static async connect(address: QmpAddress, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const where = parseInput(addressSchema, address, 'address') as QmpAddress;
    const opts = parseInput(connectOptionsSchema, options, 'options');
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const socket = await openSocket(where);
    // Until the client object exists, messages go to a queue; negotiation reads them from there.
    const queue: JsonObject[] = [];
    let sink: ((message: JsonObject) => void) | undefined;
    let wake: (() => void) | undefined;
    const channel = new MessageChannel(socket, (message) => {
      if (sink) sink(message);
      else {
        queue.push(message);
        wake?.();
      }
    });
    const deadline = Date.now() + timeoutMs;
    const next = async (what: string): Promise<JsonObject> => {
      while (queue.length === 0) {
        const left = deadline - Date.now();
        let timer: NodeJS.Timeout | undefined;
        const outcome = await Promise.race([
          new Promise<'message'>((resolve) => {
            wake = () => resolve('message');
          }),
          channel.closed,
          new Promise<'timeout'>((resolve) => {
            timer = setTimeout(() => resolve('timeout'), Math.max(0, left));
          }),
        ]);
        clearTimeout(timer);
        wake = undefined;
        if (outcome === 'timeout') {
          channel.close('timeout', `no ${what} within ${timeoutMs} ms`);
          throw timeoutError(`QMP ${what} from ${describeAddress(where)}`, timeoutMs);
        }
        if (outcome !== 'message') throw new QmpNegotiationError(`QMP ${what}: ${outcome.message}`, outcome);
      }
      return queue.shift() as JsonObject;
    };
    const hello = await next('greeting');
    const qmp = hello.QMP as Partial<QmpGreeting> | undefined;
    if (!qmp || typeof qmp !== 'object' || !Array.isArray(qmp.capabilities)) {
      channel.close('negotiation', 'not a QMP greeting');
      throw new QmpNegotiationError(`expected a QMP greeting, got ${JSON.stringify(hello).slice(0, 120)}`);
    }
    const offered = qmp.capabilities;
    const enable = (opts.oob ?? true) && offered.includes('oob') ? ['oob'] : [];
    channel.send({ execute: 'qmp_capabilities', arguments: { enable }, id: 'negotiate' });
    // Events cannot arrive before negotiation; anything else here is a reply to qmp_capabilities.
    const reply = await next('capabilities negotiation');
    if (!('return' in reply)) {
      channel.close('negotiation', 'negotiation refused');
      const error = reply.error as { desc?: string } | undefined;
      throw new QmpNegotiationError(`qmp_capabilities refused: ${error?.desc ?? JSON.stringify(reply)}`);
    }
    return new QmpClient(
      channel,
      { version: qmp.version as QmpGreeting['version'], capabilities: offered },
      enable,
      opts.commandTimeoutMs ?? 30_000,
      queue,
      (s) => {
        sink = s;
      },
    );
  }

  /** True until the connection ends. */
  get connected(): boolean {
    return this.channel.error === undefined;
  }

  /**
   * Runs one command and resolves with its `return` value. Rejects with {@link QmpCommandError} when
   * QEMU answers with an error, `Timeout` on timeout or cancellation, and {@link QmpConnectionError}
   * when the connection ends first. A reply that comes after a timeout is dropped.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: ExecuteOptions = {},
  ): Promise<T> {
    let name: string;
    try {
      name = parseInput(commandSchema, command, 'command');
    } catch (error) {
      return Promise.reject(error);
    }
    if (options.oob && !this.capabilities.includes('oob'))
      return Promise.reject(
        new QmpNegotiationError('exec-oob needs the oob capability, which was not negotiated'),
      );
    const closeError = this.channel.error;
    if (closeError) return Promise.reject(closeError);
    const id = `nubes-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
      let timer: NodeJS.Timeout | undefined;
      const cleanup = () => {
        this.pending.delete(id);
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        cleanup();
        reject(timeoutError(`QMP ${name}`, timeoutMs, true));
      };
      if (options.signal?.aborted) {
        reject(timeoutError(`QMP ${name}`, timeoutMs, true));
        return;
      }
      this.pending.set(id, {
        command: name,
        resolve: (value) => {
          cleanup();
          resolve(value as T);
        },
        reject: (error) => {
          cleanup();
          reject(error);
        },
      });
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs > 0)
        timer = setTimeout(() => {
          cleanup();
          reject(timeoutError(`QMP ${name}`, timeoutMs));
        }, timeoutMs);
      const message: JsonObject = { [options.oob ? 'exec-oob' : 'execute']: name, id };
      if (args !== undefined) message.arguments = args;
      this.channel.send(message);
    });
  }

  /** Runs `command` out of band (`exec-oob`), ahead of queued in-band commands. */
  executeOob<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: Omit<ExecuteOptions, 'oob'> = {},
  ): Promise<T> {
    return this.execute<T>(command, args, { ...options, oob: true });
  }

  /** Closes the connection; pending commands reject with `reason: 'closed'`. */
  async close(): Promise<void> {
    this.channel.close();
    await this.channel.closed;
  }

  private receive(message: JsonObject): void {
    if (typeof message.event === 'string') {
      const event: QmpEvent = {
        event: message.event,
        data: (message.data as Record<string, unknown> | undefined) ?? {},
        timestamp: (message.timestamp as QmpEvent['timestamp']) ?? { seconds: 0, microseconds: 0 },
      };
      this.events.dispatch(event);
      this.emit('event', event);
      return;
    }
    const id = typeof message.id === 'string' ? message.id : undefined;
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (!pending) return; // a reply to a command that timed out or was cancelled
    if ('return' in message) pending.resolve(message.return);
    else {
      const error = (message.error ?? {}) as { class?: string; desc?: string };
      pending.reject(
        new QmpCommandError(pending.command, error.class ?? 'GenericError', error.desc ?? 'unknown error'),
      );
    }
  }
}
