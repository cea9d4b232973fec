import type { IncomingMessage, ServerResponse } from 'node:http';
import { NubesError } from '@nubes/core';
import { unauthorized } from '../internal/errors.js';
import type { TokenContext } from '../tokens/claims.js';

/** Anything that verifies a token: a {@link TokenVerifier}, an AuthService, or a remote verifier. */
export interface TokenVerifierLike {
  verify(token: string): TokenContext | Promise<TokenContext>;
}

/** Headers as node:http or fetch give them. */
export type RequestHeaders = Record<string, string | string[] | undefined> | Headers;

function header(headers: RequestHeaders, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const value = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The token of a request: `X-Auth-Token` (Keystone) or `Authorization: Bearer`. */
export function extractToken(headers: RequestHeaders): string | undefined {
  const direct = header(headers, 'x-auth-token');
  if (direct) return direct.trim();
  const auth = header(headers, 'authorization');
  const m = auth ? /^Bearer\s+(\S+)\s*$/i.exec(auth) : null;
  return m?.[1];
}

/** Framework-agnostic: verifies the request's token and returns its context, or throws `Unauthorized`. */
export async function authenticate(
  headers: RequestHeaders,
  verifier: TokenVerifierLike,
): Promise<TokenContext> {
  const token = extractToken(headers);
  if (!token) throw unauthorized('missing_token', 'the request carries no token');
  return verifier.verify(token);
}

const contexts = new WeakMap<IncomingMessage, TokenContext>();

/** The context the middleware attached to a request, if it authenticated. */
export function authContextOf(request: IncomingMessage): TokenContext | undefined {
  return contexts.get(request);
}

/** Writes a NubesError (or a 500 for anything else) as a JSON response, never leaking the cause. */
export function sendError(response: ServerResponse, error: unknown): void {
  const e = error instanceof NubesError ? error : new NubesError('Internal', 'internal error');
  const body = JSON.stringify(e.toJSON());
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
  };
  if (e.code === 'Unauthorized') headers['www-authenticate'] = 'Keystone uri="/v3"';
  response.writeHead(e.httpStatus, headers).end(body);
}

/**
 * Middleware for node:http (connect/express style): authenticates the request, keeps the context for
 * {@link authContextOf} and calls `next()`, or answers 401 with the reason.
 */
export function authMiddleware(
  verifier: TokenVerifierLike,
): (request: IncomingMessage, response: ServerResponse, next: (error?: unknown) => void) => void {
  return (request, response, next) => {
    authenticate(request.headers, verifier).then(
      (context) => {
        contexts.set(request, context);
        next();
      },
      (error) => sendError(response, error),
    );
  };
}
