/**
 * The API process's HTTP server: one node:http server in front of the cloud's services, each under its own
 * path prefix, with the token check, the catalog and error shaping done once for all of them.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type AuthService, extractToken, type TokenContext } from '@nubes/auth';
import { NubesError } from '@nubes/core';
import { type ApiContext, type CatalogEntry, type ServiceApi, sendJson, statusOf } from './http.js';
import { IdentityApi, keystoneError } from './identity.js';

/** Options of {@link CloudServer}. */
export interface CloudServerOptions {
  auth: AuthService;
  services: ServiceApi[];
  /** The region named in the catalog (default `RegionOne`, as devstack names it). */
  region?: string;
  /** Called with every error answered with a 5xx, for logs. */
  onServerError?: (error: unknown, request: IncomingMessage) => void;
}

/** The cloud's API server. Routes by the longest matching service prefix; `GET /` is Keystone's version list. */
export class CloudServer {
  private server: Server | undefined;
  private readonly services: ServiceApi[];
  private readonly region: string;

  constructor(private readonly options: CloudServerOptions) {
    // Longest prefix first, so `/compute` never shadows a longer one.
    this.services = [...options.services].sort((a, b) => b.prefix.length - a.prefix.length);
    this.region = options.region ?? 'RegionOne';
  }

  /** Starts serving on `host:port` (port 0: any free one) and resolves with the port. */
  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    const server = createServer((request, response) => {
      void this.handle(request, response);
    });
    // keystoneauth keeps connections alive; a short timeout lets close() finish promptly.
    server.keepAliveTimeout = 1000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return (server.address() as AddressInfo).port;
  }

  /** Stops accepting requests and drops open connections. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The catalog for clients that reach the cloud at `base`. */
  catalog(base: string): CatalogEntry[] {
    return this.options.services.map((s) => ({
      id: s.type,
      type: s.type,
      name: s.name,
      endpoints: ['public', 'internal', 'admin'].map((iface) => ({
        id: `${s.type}-${iface}`,
        interface: iface,
        region: this.region,
        region_id: this.region,
        url: s.endpoint(base),
      })),
    }));
  }

  /** Answers one request; usable as a node:http request listener. Never throws. */
  async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(request.url ?? '/', 'http://localhost');
    } catch {
      url = new URL('http://localhost/');
    }
    const method = request.method ?? 'GET';
    const pathname = url.pathname.replace(/\/+$/, '') || '/';
    // The catalog and links name the address the client used, so the cloud needs no configured public URL.
    const base = `http://${request.headers.host ?? '127.0.0.1'}`;
    const service = this.services.find((s) => pathname === s.prefix || pathname.startsWith(`${s.prefix}/`));
    let verified: TokenContext | undefined;
    const auth = this.options.auth;
    const ctx: ApiContext = {
      request,
      response,
      url,
      method,
      path: service ? pathname.slice(service.prefix.length) : pathname,
      base,
      params: {},
      auth,
      token: () => {
        verified ??= auth.verify(extractToken(request.headers) ?? '');
        return verified;
      },
      catalog: () => this.catalog(base),
    };
    try {
      if (!service) {
        if (pathname === '/' && (method === 'GET' || method === 'HEAD'))
          return sendJson(ctx, 300, IdentityApi.versions(base));
        throw new NubesError('NotFound', `the resource could not be found: ${method} ${url.pathname}`);
      }
      await service.handle(ctx);
    } catch (error) {
      const { status, message } = statusOf(error);
      if (status >= 500 && status !== 501) this.options.onServerError?.(error, request);
      if (response.headersSent) {
        response.destroy();
        return;
      }
      // Every service challenges a client without a valid token, which is how keystoneauth knows to log in.
      const headers: Record<string, string> =
        status === 401 ? { 'www-authenticate': 'Keystone uri="/v3"' } : {};
      const body =
        status === 401
          ? keystoneError(401, message)
          : (service?.errorBody(status, message, error) ?? keystoneError(status, message));
      sendJson(ctx, status, body, headers);
      // A body the handler did not read would otherwise keep the connection waiting.
      if (!request.complete) request.resume();
    }
  }

  /** Closes every service's background work. */
  async closeServices(): Promise<void> {
    for (const s of this.options.services) await s.close?.();
  }
}
