import { connect, type Socket } from 'node:net';
import { QmpConnectionError } from '../errors.js';

/** Where a QMP server listens: a unix socket path, or a TCP host and port. */
export type QmpAddress = { path: string } | { host: string; port: number };

/** Renders an address for messages. */
export function describeAddress(address: QmpAddress): string {
  return 'path' in address ? address.path : `${address.host}:${address.port}`;
}

/** Opens a stream socket to `address`; rejects with {@link QmpConnectionError} (`reason: 'connect'`). */
export function openSocket(address: QmpAddress): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = 'path' in address ? connect(address.path) : connect(address.port, address.host);
    const onError = (error: Error) => {
      socket.destroy();
      reject(
        new QmpConnectionError(
          'connect',
          `cannot connect to ${describeAddress(address)}: ${(error as NodeJS.ErrnoException).code ?? error.message}`,
          error,
        ),
      );
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      socket.setNoDelay?.(true);
      resolve(socket);
    });
  });
}

/**
 * Splits a byte stream into newline-terminated lines. QMP frames every message as one JSON text
 * followed by CRLF, so a line is a message; what is left in the buffer at EOF is a torn message.
 */
export class LineSplitter {
  private pending = '';

  /** Feeds a chunk and returns the complete lines it finished. */
  push(chunk: string): string[] {
    this.pending += chunk;
    const parts = this.pending.split('\n');
    this.pending = parts.pop() ?? '';
    return parts.map((line) => line.trim()).filter((line) => line !== '');
  }

  /** Bytes of an unfinished line, if any (whitespace does not count). */
  get remainder(): string {
    return this.pending.trim();
  }
}
