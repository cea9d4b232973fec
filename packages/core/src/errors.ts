/**
 * Every error a Nubes package throws on purpose is a {@link NubesError} with a stable
 * string `code` and the HTTP status that code maps to, so a service can turn any of them
 * into a response without a lookup table of its own.
 */

/** The HTTP status each stable error code maps to. */
export const ERROR_STATUS = {
  /** Input failed validation; `details.field` names the offending field. */
  InvalidInput: 400,
  /** Credentials are missing, wrong or expired. */
  Unauthorized: 401,
  /** The caller is known but not allowed to do this. */
  Forbidden: 403,
  /** A project's limit would be exceeded. */
  QuotaExceeded: 403,
  /** The thing asked for does not exist. */
  NotFound: 404,
  /** The current state does not allow this (a concurrent change, an illegal transition). */
  Conflict: 409,
  /** The request is valid but no host can take it. */
  NoValidHost: 409,
  /** What was asked for existed but has been removed for good (a compacted revision). */
  Gone: 410,
  /** A body or upload is larger than allowed. */
  PayloadTooLarge: 413,
  /** A format or feature this library refuses to handle (an encrypted image, say). */
  Unsupported: 415,
  /** A bug or an unexpected state inside Nubes. */
  Internal: 500,
  /** A host command exited with an error or could not be started. */
  CommandFailed: 500,
  /** Not implemented by this backend or build. */
  NotImplemented: 501,
  /** A dependency (a database, a daemon, a host tool) cannot be reached right now. */
  Unavailable: 503,
  /** An operation did not finish in the time it was given. */
  Timeout: 504,
} as const satisfies Record<string, number>;

/** A stable error code: the part of an error that callers may branch on. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** Options for constructing a {@link NubesError}. */
export interface NubesErrorOptions {
  /** The underlying error, if this one wraps another. */
  cause?: unknown;
  /** Structured, JSON-safe facts about the failure (the field, the limit, the command...). */
  details?: Record<string, unknown>;
}

/** The one error class of Nubes: a message for people, a `code` for programs. */
export class NubesError extends Error {
  /** Stable code; see {@link ERROR_STATUS}. */
  readonly code: ErrorCode;
  /** The HTTP status the code maps to. */
  readonly httpStatus: number;
  /** Structured facts about the failure. */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: NubesErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NubesError';
    this.code = code;
    this.httpStatus = ERROR_STATUS[code];
    this.details = options.details ?? {};
  }

  /** A JSON body for an HTTP response: `{ error: { code, message, details } }`. */
  toJSON(): {
    error: { code: ErrorCode; message: string; status: number; details: Record<string, unknown> };
  } {
    return {
      error: { code: this.code, message: this.message, status: this.httpStatus, details: this.details },
    };
  }
}

/**
 * True when `error` is a {@link NubesError}, and, when codes are given, when its code is one of them.
 *
 * @example
 * ```ts
 * try { await store.put('a', 1, { ifRevision: 0 }); }
 * catch (e) { if (isNubesError(e, 'Conflict')) console.log('someone was first'); else throw e; }
 * ```
 */
export function isNubesError<C extends ErrorCode>(
  error: unknown,
  ...codes: C[]
): error is NubesError & { readonly code: C } {
  return error instanceof NubesError && (codes.length === 0 || (codes as ErrorCode[]).includes(error.code));
}

/** The code of `error` if it is a {@link NubesError}, otherwise `undefined`. */
export function errorCode(error: unknown): ErrorCode | undefined {
  return error instanceof NubesError ? error.code : undefined;
}

/** An `InvalidInput` error naming the field that failed. */
export function invalidInput(
  field: string,
  message: string,
  details: Record<string, unknown> = {},
): NubesError {
  return new NubesError('InvalidInput', `${field}: ${message}`, { details: { field, ...details } });
}

/** A `NotFound` error naming what was looked for. */
export function notFound(kind: string, id: string): NubesError {
  return new NubesError('NotFound', `${kind} ${JSON.stringify(id)} not found`, { details: { kind, id } });
}
