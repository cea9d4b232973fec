import type { Socket } from 'node:net';
import { QmpConnectionError } from '../errors.js';
import { LineSplitter } from './transport.js';

/** One JSON object received from the peer. */
export type JsonObject = Record<string, unknown>;

/**
 * A generic message channel over a stream socket: JSON objects one per line in both directions, and a
 * single well-defined end. It knows nothing of QMP; the client layers greeting, ids and events on it.
 * The first failure (EOF, socket error, a line that is not a JSON object, EOF in the middle of a line)
 * closes the socket and settles {@link MessageChannel.closed}, so callers wait on one thing only.
 */
export class MessageChannel {
  /** Settles once, with the error that ended the channel. */
  readonly closed: Promise<QmpConnectionError>;
  private closeError: QmpConnectionError | undefined;
  private resolveClosed!: (error: QmpConnectionError) => void;
  private readonly splitter = new LineSplitter();

  constructor(
    private readonly socket: Socket,
    private readonly onMessage: (message: JsonObject) => void,
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.receive(chunk));
    socket.on('end', () => {
      const torn = this.splitter.remainder;
      if (torn)
        this.end(
          new QmpConnectionError('truncated', `connection closed in the middle of a message: ${clip(torn)}`),
        );
      else this.end(new QmpConnectionError('eof', 'connection closed by the peer'));
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // A peer that dies with data unread resets the connection: for the caller that is just EOF.
      const reset = error.code === 'ECONNRESET' || error.code === 'EPIPE';
      this.end(new QmpConnectionError(reset ? 'eof' : 'socket', `connection lost: ${error.message}`, error));
    });
    socket.on('close', () => this.end(new QmpConnectionError('eof', 'connection closed')));
  }

  /** The error the channel ended with, or `undefined` while it is open. */
  get error(): QmpConnectionError | undefined {
    return this.closeError;
  }

  /** Sends one message; throws the closing error when the channel has ended. */
  send(message: JsonObject): void {
    if (this.closeError) throw this.closeError;
    this.socket.write(`${JSON.stringify(message)}\n`);
  }

  /** Ends the channel from this side. */
  close(reason = 'closed', message = 'connection closed by the client'): void {
    this.end(new QmpConnectionError(reason, message));
  }

  private receive(chunk: string): void {
    for (const line of this.splitter.push(chunk)) {
      if (this.closeError) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch (cause) {
        this.end(new QmpConnectionError('garbage', `not a JSON message: ${clip(line)}`, cause));
        return;
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        this.end(new QmpConnectionError('garbage', `not a JSON object: ${clip(line)}`));
        return;
      }
      this.onMessage(parsed as JsonObject);
    }
  }

  private end(error: QmpConnectionError): void {
    if (this.closeError) return;
    this.closeError = error;
    this.socket.destroy();
    this.resolveClosed(error);
  }
}

function clip(text: string): string {
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}
