import { NubesError } from '@nubes/core';
import { Agent, type Dispatcher, interceptors, request } from 'undici';

/** Settings of one web-download. */
export interface WebDownloadOptions {
  /** Everything (connect, headers, body) must finish within this many milliseconds. */
  timeoutMs: number;
  /** Refuse a body larger than this (early, from Content-Length, and again while streaming). */
  maxBytes: number;
  /** Redirects followed before giving up. */
  maxRedirections: number;
  /** An undici dispatcher (a proxy agent, a mock); a fresh Agent when absent. */
  dispatcher?: Dispatcher;
}

/** An opened download: iterate `body`, then call `close`. */
export interface OpenedDownload {
  body: AsyncIterable<Uint8Array>;
  /** Content-Length, when the server sent one. */
  contentLength: number | undefined;
  /** Aborts the transfer when the deadline passes; `stage` checks it between chunks. */
  signal: AbortSignal;
  /** Releases the connection and the timer. */
  close(): Promise<void>;
}

/**
 * Opens an HTTP(S) GET for a web-download import. Transport failures are `Unavailable` (retryable),
 * the deadline is `Timeout`, and a declared length over the cap is `PayloadTooLarge` before any byte
 * is read.
 */
export async function openWebDownload(url: URL, options: WebDownloadOptions): Promise<OpenedDownload> {
  const own = options.dispatcher ? undefined : new Agent();
  const dispatcher = (options.dispatcher ?? (own as Agent)).compose(
    interceptors.redirect({ maxRedirections: options.maxRedirections }),
  );
  const controller = new AbortController();
  const timer = setTimeout(
    () =>
      controller.abort(
        new NubesError('Timeout', `web-download of ${url.href} took longer than ${options.timeoutMs} ms`, {
          details: { url: url.href, timeoutMs: options.timeoutMs },
        }),
      ),
    options.timeoutMs,
  );
  const close = async () => {
    clearTimeout(timer);
    await own?.close().catch(() => {});
  };
  try {
    const response = await request(url, { method: 'GET', dispatcher, signal: controller.signal }).catch(
      (cause: unknown) => {
        throw transportError(url, cause, controller.signal);
      },
    );
    if (response.statusCode < 200 || response.statusCode > 299) {
      await response.body.dump().catch(() => {});
      throw new NubesError('Unavailable', `web-download of ${url.href}: HTTP ${response.statusCode}`, {
        details: { url: url.href, status: response.statusCode },
      });
    }
    const header = response.headers['content-length'];
    const contentLength = typeof header === 'string' && /^\d+$/.test(header) ? Number(header) : undefined;
    if (contentLength !== undefined && contentLength > options.maxBytes) {
      response.body.destroy();
      throw new NubesError(
        'PayloadTooLarge',
        `web-download of ${url.href}: ${contentLength} bytes is over the cap of ${options.maxBytes}`,
        { details: { url: url.href, limit: options.maxBytes, contentLength } },
      );
    }
    const body = (async function* () {
      try {
        for await (const chunk of response.body) yield chunk as Uint8Array;
      } catch (cause) {
        throw transportError(url, cause, controller.signal);
      }
    })();
    return { body, contentLength, signal: controller.signal, close };
  } catch (error) {
    await close();
    throw error;
  }
}

function transportError(url: URL, cause: unknown, signal: AbortSignal): NubesError {
  if (signal.aborted && signal.reason instanceof NubesError) return signal.reason;
  if (cause instanceof NubesError) return cause;
  const message = cause instanceof Error ? cause.message : String(cause);
  return new NubesError('Unavailable', `web-download of ${url.href} failed: ${message}`, {
    cause,
    details: { url: url.href },
  });
}
