import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { parseInput } from '@nubes/core';
import { z } from 'zod';
import { QmpConnectionError, timeoutError } from '../errors.js';
import { openSocket } from '../qmp/transport.js';

/** Options for {@link SerialConsole.connect}. */
export interface SerialConsoleOptions {
  /** Most characters of recent output kept in memory. Default 256 KiB. */
  bufferSize?: number;
  /** Output written before this connection (e.g. the tail of the console log on re-attach). */
  history?: string;
}

/** Options for {@link SerialConsole.waitFor}. */
export interface ConsoleWaitOptions {
  /** Reject with `Timeout` after this long. Default 60 000 ms. */
  timeoutMs?: number;
  /** Reject with `Timeout` (`details.aborted`) when aborted. */
  signal?: AbortSignal;
  /**
   * Where to start looking, as a {@link SerialConsole.position}: `0` searches everything still in the
   * buffer (the default), `console.position` only what arrives from now on.
   */
  from?: number;
}

/** Options for {@link SerialConsole.attach}. */
export interface ConsoleAttachOptions {
  /** Keystrokes for the guest. Default `process.stdin` (put in raw mode while attached when it is a TTY). */
  input?: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  /** Where guest output goes. Default `process.stdout`. */
  output?: NodeJS.WritableStream;
  /** The byte that detaches, as `virsh console` does. Default `0x1d` (Ctrl-]). */
  detachKey?: number;
  /** Write what is in the buffer first, so the user sees the current screen. Default false. */
  replay?: boolean;
}

/** Events of a {@link SerialConsole}. */
export interface SerialConsoleEvents {
  /** Output from the guest. */
  data: [text: string];
  /** The console connection ended (the VM exited, or {@link SerialConsole.close}). */
  close: [];
}

const waitOptionsSchema = z
  .object({
    timeoutMs: z.number().int().positive().optional(),
    signal: z.instanceof(AbortSignal).optional(),
    from: z.number().int().min(0).optional(),
  })
  .strict();

/**
 * A guest serial console behind QEMU's unix socket chardev: a ring buffer of recent output, waiting
 * for a pattern, writing input, and an interactive attach for a person at a terminal. QEMU accepts
 * one client per console socket, so this object owns the connection and multiplexes attachments.
 */
export class SerialConsole extends EventEmitter<SerialConsoleEvents> {
  private buffer: string;
  private base: number;
  private ended = false;
  private readonly bufferSize: number;

  private constructor(
    private readonly socket: Socket,
    options: SerialConsoleOptions,
  ) {
    super();
    this.bufferSize = options.bufferSize ?? 256 * 1024;
    const history = options.history ?? '';
    this.buffer = history.slice(-this.bufferSize);
    this.base = history.length - this.buffer.length;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.append(text));
    socket.on('error', () => {
      // 'close' follows; the console simply ends.
    });
    socket.on('close', () => {
      this.ended = true;
      this.emit('close');
    });
  }

  /** Connects to a console socket. Rejects with `Unavailable` when nothing listens there. */
  static async connect(path: string, options: SerialConsoleOptions = {}): Promise<SerialConsole> {
    const socket = await openSocket({ path });
    return new SerialConsole(socket, options);
  }

  /** Recent output (at most `bufferSize` characters). */
  get output(): string {
    return this.buffer;
  }

  /** Characters received since the console was created: a cursor for {@link ConsoleWaitOptions.from}. */
  get position(): number {
    return this.base + this.buffer.length;
  }

  /** True once the connection has ended. */
  get closed(): boolean {
    return this.ended;
  }

  /** Sends text or bytes to the guest. */
  write(data: string | Uint8Array): void {
    if (this.ended) throw new QmpConnectionError('closed', 'the console is closed');
    this.socket.write(data);
  }

  /**
   * Resolves with the first match of `pattern` in the output at or after `options.from`. A match that is
   * already in the buffer resolves at once.
   */
  waitFor(pattern: RegExp, options: ConsoleWaitOptions = {}): Promise<RegExpExecArray> {
    const opts = parseInput(waitOptionsSchema, options, 'options');
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const search = (): RegExpExecArray | null => {
      const start = Math.max(0, (opts.from ?? 0) - this.base);
      // A fresh non-global copy: lastIndex state of the caller's regex must not leak in.
      return new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(this.buffer.slice(start));
    };
    const found = search();
    if (found) return Promise.resolve(found);
    const what = `waiting for ${pattern} on the console`;
    if (this.ended) return Promise.reject(new QmpConnectionError('eof', `the console closed while ${what}`));
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        this.off('data', onData);
        this.off('close', onClose);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const onData = () => {
        const match = search();
        if (!match) return;
        finish();
        resolve(match);
      };
      const onClose = () => {
        finish();
        reject(new QmpConnectionError('eof', `the console closed while ${what}`));
      };
      const onAbort = () => {
        finish();
        reject(timeoutError(what, timeoutMs, true));
      };
      const timer = setTimeout(() => {
        finish();
        reject(timeoutError(what, timeoutMs));
      }, timeoutMs);
      this.on('data', onData);
      this.on('close', onClose);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Connects a terminal to the console the way `virsh console` does: keystrokes go to the guest, output
   * to the terminal, and the detach key (Ctrl-] by default) ends the session. A TTY input is put in raw
   * mode while attached so the guest sees every key. Resolves with why the session ended.
   */
  attach(options: ConsoleAttachOptions = {}): Promise<'detached' | 'closed'> {
    const input = options.input ?? process.stdin;
    const output = options.output ?? process.stdout;
    const detachKey = options.detachKey ?? 0x1d;
    if (options.replay) output.write(this.buffer);
    const raw = input.isTTY && typeof input.setRawMode === 'function';
    if (raw) input.setRawMode?.(true);
    return new Promise((resolve) => {
      const onOutput = (text: string) => output.write(text);
      const onInput = (chunk: Buffer | string) => {
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        const at = bytes.indexOf(detachKey);
        if (at >= 0) {
          if (at > 0 && !this.ended) this.socket.write(bytes.subarray(0, at));
          finish('detached');
          return;
        }
        if (!this.ended) this.socket.write(bytes);
      };
      const onClose = () => finish('closed');
      const finish = (why: 'detached' | 'closed') => {
        this.off('data', onOutput);
        this.off('close', onClose);
        input.off('data', onInput);
        if (raw) input.setRawMode?.(false);
        input.pause();
        resolve(why);
      };
      if (this.ended) {
        finish('closed');
        return;
      }
      this.on('data', onOutput);
      this.on('close', onClose);
      input.on('data', onInput);
      input.resume();
    });
  }

  /** Closes the connection (the guest keeps running; QEMU keeps logging the console to its file). */
  close(): void {
    this.socket.destroy();
  }

  private append(text: string): void {
    this.buffer += text;
    if (this.buffer.length > this.bufferSize) {
      const drop = this.buffer.length - this.bufferSize;
      this.buffer = this.buffer.slice(drop);
      this.base += drop;
    }
    this.emit('data', text);
  }
}
