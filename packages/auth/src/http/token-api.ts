import type { IncomingMessage, ServerResponse } from 'node:http';
import { invalidInput, NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { unauthorized } from '../internal/errors.js';
import type { AuthService, IssuedToken, ScopeRequest } from '../service/auth-service.js';
import type { TokenContext } from '../tokens/claims.js';
import { sendError } from './authenticate.js';

const MAX_BODY = 64 * 1024;

const ref = z.union([
  z.object({ id: z.string() }).passthrough(),
  z.object({ name: z.string() }).passthrough(),
]);
const keystoneAuthSchema = z.object({
  auth: z.object({
    identity: z.object({
      methods: z.array(z.enum(['password', 'token', 'application_credential'])).length(1),
      password: z
        .object({
          user: z.object({
            id: z.string().optional(),
            name: z.string().optional(),
            domain: ref.optional(),
            password: z.string(),
          }),
        })
        .optional(),
      token: z.object({ id: z.string() }).optional(),
      application_credential: z
        .object({
          id: z.string().optional(),
          name: z.string().optional(),
          secret: z.string(),
          user: z
            .object({ id: z.string().optional(), name: z.string().optional(), domain: ref.optional() })
            .optional(),
        })
        .optional(),
    }),
    scope: z
      .union([
        z.object({
          project: z.object({
            id: z.string().optional(),
            name: z.string().optional(),
            domain: ref.optional(),
          }),
        }),
        z.object({ domain: ref }),
        z.object({ system: z.object({ all: z.literal(true) }) }),
        z.literal('unscoped'),
      ])
      .optional(),
  }),
});

type KeystoneScope = z.output<typeof keystoneAuthSchema>['auth']['scope'];

function domainRef(d: { id?: unknown; name?: unknown } | undefined): { id: string } | { name: string } {
  if (d && typeof d.id === 'string') return { id: d.id };
  if (d && typeof d.name === 'string') return { name: d.name };
  throw invalidInput('auth.domain', 'a domain id or name is required with a name');
}

function toScope(scope: KeystoneScope): ScopeRequest | undefined {
  if (!scope || scope === 'unscoped') return undefined;
  if ('system' in scope) return { system: 'all' };
  if ('domain' in scope) return { domain: domainRef(scope.domain) };
  const p = scope.project;
  return p.id ? { project: { id: p.id } } : { project: { name: p.name ?? '', domain: domainRef(p.domain) } };
}

function userRef(u: {
  id?: string | undefined;
  name?: string | undefined;
  domain?: unknown;
}): { id: string } | { name: string; domain: { id: string } | { name: string } } {
  if (u.id) return { id: u.id };
  return { name: u.name ?? '', domain: domainRef(u.domain as { id?: unknown; name?: unknown }) };
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new NubesError('PayloadTooLarge', 'the request body is too large');
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw invalidInput('body', 'is not JSON');
  }
}

/** The Keystone v3 body of a token: `{ token: { methods, user, project|domain|system, roles, ... } }`. */
export async function keystoneTokenBody(
  service: AuthService,
  context: TokenContext,
): Promise<Record<string, unknown>> {
  const ids = new Map((await service.identity.listRoles()).map((r) => [r.name, r.id]));
  return {
    token: {
      methods: context.methods,
      user: {
        id: context.userId,
        name: context.userName,
        domain: context.userDomain,
        password_expires_at: null,
      },
      audit_ids: context.claims.audit_ids,
      issued_at: new Date(context.issuedAt).toISOString(),
      expires_at: new Date(context.expiresAt).toISOString(),
      ...(context.project ? { project: context.project, is_domain: false } : {}),
      ...(context.domain ? { domain: context.domain } : {}),
      ...(context.scopeType === 'system' ? { system: { all: true } } : {}),
      ...(context.scopeType !== 'unscoped'
        ? { roles: context.roles.map((name) => ({ id: ids.get(name) ?? name, name })) }
        : {}),
      ...(context.applicationCredentialId
        ? { application_credential: { id: context.applicationCredentialId } }
        : {}),
      catalog: [],
    },
  };
}

async function login(service: AuthService, body: unknown): Promise<IssuedToken> {
  const { auth } = parseInput(keystoneAuthSchema, body, 'body');
  const method = auth.identity.methods[0];
  const scope = toScope(auth.scope);
  if (method === 'password') {
    const u = auth.identity.password?.user;
    if (!u) throw invalidInput('body.auth.identity.password', 'is required for the password method');
    return service.loginWithPassword({ user: userRef(u), password: u.password, ...(scope ? { scope } : {}) });
  }
  if (method === 'token') {
    const t = auth.identity.token;
    if (!t) throw invalidInput('body.auth.identity.token', 'is required for the token method');
    if (!scope) throw invalidInput('body.auth.scope', 'is required to rescope a token');
    return service.loginWithToken({ token: t.id, scope });
  }
  const a = auth.identity.application_credential;
  if (!a) throw invalidInput('body.auth.identity.application_credential', 'is required for this method');
  return service.loginWithApplicationCredential({
    secret: a.secret,
    ...(a.id ? { id: a.id } : {}),
    ...(a.name ? { name: a.name } : {}),
    ...(a.user ? { user: userRef(a.user) } : {}),
  });
}

function header(request: IncomingMessage, name: string): string | undefined {
  const v = request.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function sendJson(
  response: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
  head = false,
): void {
  const text = JSON.stringify(body);
  response
    .writeHead(status, {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(text)),
      ...headers,
    })
    .end(head ? undefined : text);
}

/**
 * Handlers for a Keystone v3 token API subset, for node:http: `POST /v3/auth/tokens` (password, token and
 * application_credential methods; the token comes back in `X-Subject-Token`), `GET`/`HEAD /v3/auth/tokens`
 * to validate the `X-Subject-Token`, `DELETE /v3/auth/tokens` to revoke it, plus `GET /v3/auth/jwks` and
 * `GET /v3/OS-REVOKE/events` for remote verifiers. The returned function resolves `false` for other paths
 * so it can sit in front of a service's own routes.
 */
export function tokenApiHandler(
  service: AuthService,
): (request: IncomingMessage, response: ServerResponse) => Promise<boolean> {
  return async (request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    const method = request.method ?? 'GET';
    try {
      if (path === '/v3/auth/jwks' && method === 'GET') {
        sendJson(response, 200, service.jwks(), { 'cache-control': 'max-age=60' });
        return true;
      }
      if (path === '/v3/OS-REVOKE/events' && method === 'GET') {
        sendJson(response, 200, { events: service.revocations.list() });
        return true;
      }
      if (path !== '/v3/auth/tokens') return false;
      if (method === 'POST') {
        const issued = await login(service, await readJson(request));
        sendJson(response, 201, await keystoneTokenBody(service, issued.context), {
          'x-subject-token': issued.token,
        });
        return true;
      }
      if (method === 'GET' || method === 'HEAD' || method === 'DELETE') {
        const callerToken = header(request, 'x-auth-token');
        const subjectToken = header(request, 'x-subject-token');
        if (!callerToken) throw unauthorized('missing_token', 'X-Auth-Token is required');
        if (!subjectToken) throw new NubesError('NotFound', 'X-Subject-Token is required');
        const caller = service.verify(callerToken);
        let subject: TokenContext;
        try {
          subject = service.verify(subjectToken);
        } catch (error) {
          // Keystone answers 404 for a subject token that does not validate.
          if (error instanceof NubesError && error.code === 'Unauthorized')
            throw new NubesError('NotFound', 'the subject token is not valid', {
              details: { reason: error.details.reason },
            });
          throw error;
        }
        const action = method === 'DELETE' ? 'identity:tokens:revoke' : 'identity:tokens:validate';
        service.policy.enforce(caller, action, { user_id: subject.userId });
        if (method === 'DELETE') {
          await service.revokeToken(subjectToken);
          response.writeHead(204).end();
          return true;
        }
        sendJson(
          response,
          200,
          await keystoneTokenBody(service, subject),
          { 'x-subject-token': subjectToken },
          method === 'HEAD',
        );
        return true;
      }
      throw new NubesError('NotFound', `no route for ${method} ${path}`);
    } catch (error) {
      sendError(response, error);
      return true;
    }
  };
}
