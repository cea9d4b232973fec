import { NubesError } from '@nubes/core';

/**
 * The QMP connection is gone or unusable: EOF, a QEMU crash, a half-written message or bytes that are
 * not JSON. Every command still pending when it happens rejects with one of these (`code: 'Unavailable'`).
 */
export class QmpConnectionError extends NubesError {
  /** Why the connection ended, in a word: `eof`, `garbage`, `truncated`, `socket`, `closed`, `connect`. */
  readonly reason: string;

  constructor(reason: string, message: string, cause?: unknown) {
    super('Unavailable', message, { cause, details: { reason } });
    this.name = 'QmpConnectionError';
    this.reason = reason;
  }
}

/** The peer did not greet or negotiate like a QMP server (`code: 'Unavailable'`). */
export class QmpNegotiationError extends NubesError {
  constructor(message: string, cause?: unknown) {
    super('Unavailable', message, { cause, details: { reason: 'negotiation' } });
    this.name = 'QmpNegotiationError';
  }
}

/**
 * QEMU answered a command with an error object. `errorClass` is QMP's `class` (`GenericError`,
 * `CommandNotFound`, `DeviceNotFound`, ...) and `desc` its human text (`code: 'CommandFailed'`).
 */
export class QmpCommandError extends NubesError {
  /** QMP's error class. */
  readonly errorClass: string;
  /** QMP's error description. */
  readonly desc: string;
  /** The command that failed. */
  readonly command: string;

  constructor(command: string, errorClass: string, desc: string) {
    super('CommandFailed', `QMP ${command}: ${desc}`, { details: { command, class: errorClass, desc } });
    this.name = 'QmpCommandError';
    this.errorClass = errorClass;
    this.desc = desc;
    this.command = command;
  }
}

/** A `Timeout` error for an operation that ran out of time or was cancelled through its signal. */
export function timeoutError(what: string, timeoutMs: number | undefined, aborted = false): NubesError {
  return new NubesError(
    'Timeout',
    aborted ? `${what} was cancelled` : `${what} timed out after ${timeoutMs} ms`,
    {
      details: { operation: what, timeoutMs, aborted },
    },
  );
}
