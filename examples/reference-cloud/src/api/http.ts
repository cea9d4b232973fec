/**
 * What every service of the reference cloud's API shares: the request context, a small router, JSON
 * bodies in and out, and field checks that throw `InvalidInput` naming the field.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthService, TokenContext } from '@nubes/auth';
import { invalidInput, NubesError } from '@nubes/core';

/** The default cap on a JSON request body (Keystone's and Nova's default is 112 KiB; 64 KiB is plenty here). */
export const MAX_JSON_BODY = 64 * 1024;

/** One request as a service sees it. */
export interface ApiContext {
  readonly request: IncomingMessage;
  readonly response: ServerResponse;
  readonly url: URL;
  readonly method: string;
  /** The path below the service's prefix, without a trailing slash (`''` for the service root). */
  readonly path: string;
  /** `http://host:port` as the client addressed it: links and the catalog name it. */
  readonly base: string;
  /** Parameters captured by the route pattern (`:id`). */
  params: Record<string, string>;
  /** The caller's verified token; throws `Unauthorized` (401) when there is none or it is not valid. */
  token(): TokenContext;
  /** The service catalog for this request's `base`. */
  catalog(): CatalogEntry[];
  /** The auth service (identity, policy). */
  readonly auth: AuthService;
}

/** One service of the catalog. */
export interface CatalogEntry {
  id: string;
  type: string;
  name: string;
  endpoints: { id: string; interface: string; region: string; region_id: string; url: string }[];
}

/** A route handler. */
export type Handler = (ctx: ApiContext) => Promise<void> | void;

/**
 * One OpenStack service of the API process: where it lives under the server, its catalog entry, how its
 * requests are answered and what its error bodies look like (each OpenStack service has its own shape).
 */
export interface ServiceApi {
  /** Catalog type (`identity`, `image`, `network`, `compute`). */
  readonly type: string;
  /** Catalog name (`keystone`, `glance`, `neutron`, `nova`). */
  readonly name: string;
  /** Path prefix under the server (`/v3`, `/image`, `/network`, `/compute`). */
  readonly prefix: string;
  /** The endpoint URL put in the catalog, from the request's base. */
  endpoint(base: string): string;
  /** Answers a request whose path starts with {@link prefix}. Throwing is fine: {@link errorBody} shapes it. */
  handle(ctx: ApiContext): Promise<void>;
  /** The error body this service's clients expect. */
  errorBody(status: number, message: string, error: unknown): unknown;
  /** Stops whatever the service runs in the background. */
  close?(): Promise<void> | void;
}

/** A route table matched on method and `/`-separated segments; `:name` captures a segment. */
export class Router {
  private readonly routes: { method: string; segments: string[]; handler: Handler }[] = [];

  /** Adds a route; `pattern` is relative to the service prefix, e.g. `/v2/images/:id/file`. */
  on(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method, segments: split(pattern), handler });
    return this;
  }

  /**
   * Runs the handler for the context's method and path. A path with no route is `NotFound`; a known path
   * with another method is `MethodNotAllowed` (405).
   */
  async dispatch(ctx: ApiContext): Promise<void> {
    const segments = split(ctx.path);
    let pathMatched = false;
    for (const route of this.routes) {
      const params = match(route.segments, segments);
      if (!params) continue;
      pathMatched = true;
      if (route.method !== ctx.method && !(route.method === 'GET' && ctx.method === 'HEAD')) continue;
      ctx.params = params;
      await route.handler(ctx);
      return;
    }
    if (pathMatched) throw new MethodNotAllowed(ctx.method, ctx.path);
    throw new NubesError('NotFound', `the resource could not be found: ${ctx.method} ${ctx.url.pathname}`);
  }
}

/** A known path asked with a method it does not take: HTTP 405, as the OpenStack services answer it. */
export class MethodNotAllowed extends Error {
  /** HTTP status. */
  readonly httpStatus = 405;
  constructor(method: string, path: string) {
    super(`the method ${method} is not allowed for ${path || '/'}`);
    this.name = 'MethodNotAllowed';
  }
}

function split(path: string): string[] {
  return path.split('/').filter((s) => s.length > 0);
}

function match(pattern: string[], segments: string[]): Record<string, string> | undefined {
  if (pattern.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i] as string;
    const s = segments[i] as string;
    if (p.startsWith(':')) {
      try {
        params[p.slice(1)] = decodeURIComponent(s);
      } catch {
        return undefined;
      }
    } else if (p !== s) return undefined;
  }
  return params;
}

/** A fresh `x-openstack-request-id`. */
export function requestId(): string {
  return `req-${randomUUID()}`;
}

/** Sends a JSON body (or only its headers for HEAD). */
export function sendJson(
  ctx: Pick<ApiContext, 'response' | 'method'>,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  ctx.response
    .writeHead(status, {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(text)),
      'x-openstack-request-id': requestId(),
      ...headers,
    })
    .end(ctx.method === 'HEAD' ? undefined : text);
}

/** Sends a status with no body (204, 202 without content). */
export function sendEmpty(
  ctx: Pick<ApiContext, 'response'>,
  status: number,
  headers: Record<string, string> = {},
): void {
  ctx.response.writeHead(status, { 'x-openstack-request-id': requestId(), ...headers }).end();
}

/** HTTP status and message of anything a handler threw. Unknown errors are a 500 that reveals nothing. */
export function statusOf(error: unknown): { status: number; message: string } {
  if (error instanceof NubesError) return { status: error.httpStatus, message: error.message };
  if (error instanceof MethodNotAllowed) return { status: 405, message: error.message };
  return { status: 500, message: 'An unexpected error prevented the server from fulfilling your request.' };
}

/** Reads the whole body up to `maxBytes` (`PayloadTooLarge` past it, without reading the rest). */
export async function readBody(request: IncomingMessage, maxBytes = MAX_JSON_BODY): Promise<Buffer> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new NubesError('PayloadTooLarge', `the request body is larger than ${maxBytes} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > maxBytes)
      throw new NubesError('PayloadTooLarge', `the request body is larger than ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Reads and parses a JSON object body; `InvalidInput` (field `body`) when it is not one. */
export async function readJson(
  request: IncomingMessage,
  maxBytes = MAX_JSON_BODY,
): Promise<Record<string, unknown>> {
  const raw = await readBody(request, maxBytes);
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw invalidInput('body', 'is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw invalidInput('body', 'must be a JSON object');
  return value as Record<string, unknown>;
}

/** The object under `key` of a body (`{"server": {...}}`), or `InvalidInput` naming `key`. */
export function member(body: Record<string, unknown>, key: string): Record<string, unknown> {
  const value = body[key];
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw invalidInput(key, 'is required and must be an object');
  return value as Record<string, unknown>;
}

/** A string field that may be absent (`undefined` or `null`). */
export function optionalString(value: unknown, field: string, maxLength = 255): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalidInput(field, 'must be a string');
  if (value.length > maxLength) throw invalidInput(field, `must be at most ${maxLength} characters`);
  return value;
}

/** A string field that must be present. */
export function requiredString(value: unknown, field: string, maxLength = 255): string {
  const s = optionalString(value, field, maxLength);
  if (s === undefined) throw invalidInput(field, 'is required');
  return s;
}

/** A boolean field that may be absent. */
export function optionalBoolean(value: unknown, field: string): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw invalidInput(field, 'must be a boolean');
  return value;
}

/** An integer field in `[min, max]` that may be absent; numeric strings are accepted, as OpenStack does. */
export function optionalInt(value: unknown, field: string, min: number, max: number): number | undefined {
  if (value === undefined || value === null) return undefined;
  const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max)
    throw invalidInput(field, `must be an integer from ${min} to ${max}`);
  return n;
}

/** ISO 8601 time without milliseconds, as the OpenStack APIs print it (`2026-11-24T02:40:00Z`). */
export function isoTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}
