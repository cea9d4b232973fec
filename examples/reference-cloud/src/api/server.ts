/**
 * The reference cloud's API process, identity part: Keystone v3 as python-openstackclient 6.0 uses it, built
 * only from `@nubes/auth`'s public API over a `@nubes/core` Store.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AuthService,
  DEFAULT_DOMAIN_ID,
  DEFAULT_POLICY_RULES,
  type Domain,
  extractToken,
  Policy,
  type Project,
  type RoleAssignment,
  type TokenContext,
  tokenApiHandler,
  type User,
} from '@nubes/auth';
import { invalidInput, NubesError, notFound, type Store } from '@nubes/core';

/** Options of {@link IdentityApi.open}. */
export interface IdentityApiOptions {
  /** Where all state lives (a SqliteStore for the one-process cloud). */
  store: Store;
  /** The cloud's administrator, created on first start (and its password reset to this one on every start). */
  admin: { user: string; password: string; project: string };
  /** The region named in the service catalog (default `RegionOne`, as devstack names it). */
  region?: string;
  /** `iss` of the tokens (default `nubes-reference-cloud`). */
  issuer?: string;
}

const MAX_BODY = 64 * 1024;

// Keystone 3.14 is the API version of the Keystone releases python-openstackclient 6.0 ships alongside.
const KEYSTONE_VERSION = 'v3.14';

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Request Entity Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
};

/** Keystone's error body, `{ error: { code, title, message } }`: keystoneauth prints `message` to the user. */
function keystoneError(status: number, message: string): Record<string, unknown> {
  return { error: { code: status, title: TITLES[status] ?? 'Error', message } };
}

function statusOf(error: unknown): { status: number; message: string } {
  if (error instanceof NubesError) return { status: error.httpStatus, message: error.message };
  return { status: 500, message: 'An unexpected error prevented the server from fulfilling your request.' };
}

/**
 * Catches what a node:http handler writes instead of sending it, so the example can complete
 * `tokenApiHandler`'s answers (it always sends an empty catalog) without re-implementing Keystone's auth body.
 */
class CapturedResponse {
  status = 200;
  headers: Record<string, string> = {};
  body = '';
  writeHead(status: number, headers?: Record<string, string>): this {
    this.status = status;
    if (headers) for (const [k, v] of Object.entries(headers)) this.headers[k.toLowerCase()] = String(v);
    return this;
  }
  end(chunk?: string | Buffer): this {
    if (chunk !== undefined) this.body += chunk.toString();
    return this;
  }
}

/**
 * The identity API of the reference cloud: a request handler and a node:http server around an
 * {@link AuthService}. Routes: `/`, `/v3` (version documents), `/v3/auth/tokens` (issue with a catalog,
 * validate, revoke), `/v3/auth/catalog`, `/v3/domains`, `/v3/projects`, `/v3/users`, `/v3/roles`,
 * `/v3/projects/{id}/users/{id}/roles/{id}` and `/v3/role_assignments`. Anything else is a Keystone 404.
 */
export class IdentityApi {
  private server: Server | undefined;
  private readonly tokens: ReturnType<typeof tokenApiHandler>;

  private constructor(
    /** The auth service, with the cloud's policy. */
    readonly auth: AuthService,
    /** The id of the admin project, whose admins are cloud admins. */
    readonly adminProjectId: string,
    private readonly region: string,
  ) {
    this.tokens = tokenApiHandler(auth);
  }

  /**
   * Opens the identity state in `options.store`, bootstrapping the admin user and project with the `admin`
   * role on first use (Keystone's `keystone-manage bootstrap`).
   */
  static async open(options: IdentityApiOptions): Promise<IdentityApi> {
    const issuer = options.issuer ?? 'nubes-reference-cloud';
    // The default policy's cloud admin is system-scoped, but openstackclient logs in with OS_PROJECT_NAME, so
    // (as Keystone's `admin_project_name` setting does) admins of the admin project are cloud admins here.
    // The policy needs that project's id, and an AuthService's policy is fixed when it opens: open once to
    // bootstrap, then again with the policy.
    const bootstrap = await AuthService.open(options.store, { issuer });
    let adminProjectId: string;
    try {
      adminProjectId = await bootstrapAdmin(bootstrap, options.admin);
    } finally {
      bootstrap.close();
    }
    const policy = Policy.load({ ...DEFAULT_POLICY_RULES }).extend({
      cloud_admin: `role:admin and (system_scope:all or project_id:${adminProjectId})`,
      cloud_reader: `role:reader and (system_scope:all or project_id:${adminProjectId})`,
    });
    const auth = await AuthService.open(options.store, { issuer, policy });
    return new IdentityApi(auth, adminProjectId, options.region ?? 'RegionOne');
  }

  /** Starts serving on `host:port` (port 0: any free one) and resolves with the port. */
  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    const server = createServer((request, response) => {
      this.handle(request, response).catch((error: unknown) => this.sendError(response, error));
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

  /** Stops the server (if started) and the auth service's watches. The Store stays open: the caller owns it. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    this.auth.close();
  }

  /** Answers one request; usable as a node:http request listener. */
  async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = request.method ?? 'GET';
    // The catalog and links name the address the client used, so the cloud needs no configured public URL.
    const base = `http://${request.headers.host ?? '127.0.0.1'}`;
    try {
      if (path === '/' && method === 'GET') {
        return this.send(response, 300, { versions: { values: [this.versionDoc(base)] } });
      }
      if (path === '/v3' && method === 'GET')
        return this.send(response, 200, { version: this.versionDoc(base) });
      if (path === '/v3/auth/tokens' || path === '/v3/auth/jwks' || path === '/v3/OS-REVOKE/events') {
        return await this.tokenRoute(request, response, base, url);
      }
      const context = this.auth.verify(extractToken(request.headers) ?? '');
      if (path === '/v3/auth/catalog' && method === 'GET') {
        return this.send(response, 200, { catalog: this.catalog(base), links: { self: `${base}${path}` } });
      }
      const parts = path.split('/').slice(2).map(decodeURIComponent);
      const [collection, id, sub1, sub2, sub3, sub4] = parts;
      if (collection === 'domains') return await this.domains(request, response, context, base, id);
      if (collection === 'projects' && sub1 === 'users' && sub3 === 'roles' && id && sub2 && sub4) {
        return await this.projectUserRole(request, response, context, {
          project: id,
          user: sub2,
          role: sub4,
        });
      }
      if (collection === 'projects' && sub1 === undefined) {
        return await this.projects(request, response, context, base, url, id);
      }
      if (collection === 'users' && sub1 === undefined) {
        return await this.users(request, response, context, base, url, id);
      }
      if (collection === 'roles' && sub1 === undefined)
        return await this.roles(request, response, context, base, url, id);
      if (collection === 'role_assignments' && id === undefined && method === 'GET') {
        return await this.roleAssignments(response, context, base, url);
      }
      throw new NubesError('NotFound', `could not find ${method} ${path}`);
    } catch (error) {
      this.sendError(response, error);
    }
  }

  // ---------------------------------------------------------------- tokens and catalog

  private async tokenRoute(
    request: IncomingMessage,
    response: ServerResponse,
    base: string,
    url: URL,
  ): Promise<void> {
    const captured = new CapturedResponse();
    await this.tokens(request, captured as unknown as ServerResponse);
    if (captured.status >= 400) {
      const body = JSON.parse(captured.body || '{}') as { error?: { message?: string } };
      const headers: Record<string, string> = {};
      if (captured.headers['www-authenticate'])
        headers['www-authenticate'] = captured.headers['www-authenticate'];
      return this.send(
        response,
        captured.status,
        keystoneError(captured.status, body.error?.message ?? ''),
        headers,
      );
    }
    const headers: Record<string, string> = {};
    if (captured.headers['x-subject-token']) headers['x-subject-token'] = captured.headers['x-subject-token'];
    if (!captured.body) {
      response.writeHead(captured.status, { ...headers, 'x-openstack-request-id': requestId() }).end();
      return;
    }
    const body = JSON.parse(captured.body) as { token?: Record<string, unknown> };
    // Keystone puts the catalog in the body of a scoped token (an unscoped one reaches no service), unless the
    // caller asked for `?nocatalog`.
    const token = body.token;
    if (token?.roles && !url.searchParams.has('nocatalog')) token.catalog = this.catalog(base);
    this.send(response, captured.status, body, headers, request.method === 'HEAD');
  }

  private catalog(base: string): unknown[] {
    const url = `${base}/v3`;
    return [
      {
        id: 'identity',
        type: 'identity',
        name: 'keystone',
        endpoints: ['public', 'internal', 'admin'].map((iface) => ({
          id: `identity-${iface}`,
          interface: iface,
          region: this.region,
          region_id: this.region,
          url,
        })),
      },
    ];
  }

  private versionDoc(base: string): Record<string, unknown> {
    return {
      id: KEYSTONE_VERSION,
      status: 'stable',
      updated: '2020-04-07T00:00:00Z',
      links: [{ rel: 'self', href: `${base}/v3/` }],
      'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
    };
  }

  // ---------------------------------------------------------------- resources

  private async domains(
    request: IncomingMessage,
    response: ServerResponse,
    context: TokenContext,
    base: string,
    id: string | undefined,
  ): Promise<void> {
    if (request.method !== 'GET') throw methodNotAllowed(request);
    if (id === undefined) {
      this.auth.policy.enforce(context, 'identity:domains:list');
      const domains = await this.auth.identity.listDomains();
      return this.send(response, 200, {
        domains: domains.map((d) => domainJson(d, base)),
        links: listLinks(base, 'domains'),
      });
    }
    const domain = await this.auth.identity.getDomain(id);
    this.auth.policy.enforce(context, 'identity:domains:get', { domain_id: domain.id });
    this.send(response, 200, { domain: domainJson(domain, base) });
  }

  private async projects(
    request: IncomingMessage,
    response: ServerResponse,
    context: TokenContext,
    base: string,
    url: URL,
    id: string | undefined,
  ): Promise<void> {
    const identity = this.auth.identity;
    if (id === undefined && request.method === 'GET') {
      const domainId = url.searchParams.get('domain_id') ?? undefined;
      this.auth.policy.enforce(context, 'identity:projects:list', domainId ? { domain_id: domainId } : {});
      const name = url.searchParams.get('name');
      const projects = (await identity.listProjects(domainId ? { domainId } : {})).filter(
        (p) => name === null || p.name === name,
      );
      return this.send(response, 200, {
        projects: projects.map((p) => projectJson(p, base)),
        links: listLinks(base, 'projects'),
      });
    }
    if (id === undefined && request.method === 'POST') {
      const body = (await readJson(request)) as { project?: Record<string, unknown> };
      const p = body.project;
      if (!p || typeof p !== 'object') throw invalidInput('project', 'is required');
      const domainId = optionalString(p.domain_id, 'project.domain_id') ?? DEFAULT_DOMAIN_ID;
      this.auth.policy.enforce(context, 'identity:projects:create', { domain_id: domainId });
      // Keystone sends the domain as parent_id of a top-level project; only a real project is a parent here.
      const parentId = optionalString(p.parent_id, 'project.parent_id');
      const description = optionalString(p.description, 'project.description');
      const project = await identity.createProject({
        name: requiredString(p.name, 'project.name'),
        domainId,
        ...(parentId && parentId !== domainId ? { parentId } : {}),
        ...(description ? { description } : {}),
        ...(typeof p.enabled === 'boolean' ? { enabled: p.enabled } : {}),
      });
      return this.send(response, 201, { project: projectJson(project, base) });
    }
    if (id !== undefined && request.method === 'GET') {
      // openstackclient looks a name up by GETting it in the id slot first: a 404 here sends it to `?name=`.
      const project = await identity.getProject(id);
      this.auth.policy.enforce(context, 'identity:projects:get', {
        project_id: project.id,
        domain_id: project.domainId,
      });
      return this.send(response, 200, { project: projectJson(project, base) });
    }
    throw methodNotAllowed(request);
  }

  private async users(
    request: IncomingMessage,
    response: ServerResponse,
    context: TokenContext,
    base: string,
    url: URL,
    id: string | undefined,
  ): Promise<void> {
    const identity = this.auth.identity;
    if (id === undefined && request.method === 'GET') {
      const domainId = url.searchParams.get('domain_id') ?? undefined;
      this.auth.policy.enforce(context, 'identity:users:list', domainId ? { domain_id: domainId } : {});
      const name = url.searchParams.get('name');
      const users = (await identity.listUsers(domainId ? { domainId } : {})).filter(
        (u) => name === null || u.name === name,
      );
      return this.send(response, 200, {
        users: users.map((u) => userJson(u, base)),
        links: listLinks(base, 'users'),
      });
    }
    if (id === undefined && request.method === 'POST') {
      const body = (await readJson(request)) as { user?: Record<string, unknown> };
      const u = body.user;
      if (!u || typeof u !== 'object') throw invalidInput('user', 'is required');
      const domainId = optionalString(u.domain_id, 'user.domain_id') ?? DEFAULT_DOMAIN_ID;
      this.auth.policy.enforce(context, 'identity:users:create', { domain_id: domainId });
      const password = optionalString(u.password, 'user.password');
      const defaultProjectId = optionalString(u.default_project_id, 'user.default_project_id');
      const email = optionalString(u.email, 'user.email');
      const user = await identity.createUser({
        name: requiredString(u.name, 'user.name'),
        domainId,
        ...(password !== undefined ? { password } : {}),
        ...(defaultProjectId ? { defaultProjectId } : {}),
        ...(email ? { email } : {}),
        ...(typeof u.enabled === 'boolean' ? { enabled: u.enabled } : {}),
      });
      return this.send(response, 201, { user: userJson(user, base) });
    }
    if (id !== undefined && request.method === 'GET') {
      const user = await identity.getUser(id);
      this.auth.policy.enforce(context, 'identity:users:get', { user_id: user.id, domain_id: user.domainId });
      return this.send(response, 200, { user: userJson(user, base) });
    }
    throw methodNotAllowed(request);
  }

  private async roles(
    request: IncomingMessage,
    response: ServerResponse,
    context: TokenContext,
    base: string,
    url: URL,
    id: string | undefined,
  ): Promise<void> {
    if (request.method !== 'GET') throw methodNotAllowed(request);
    // Roles are global: a reader of the project its token is for may see their names.
    const target = context.project ? { project_id: context.project.id } : {};
    this.auth.policy.enforce(context, 'identity:roles:list', target);
    const roles = await this.auth.identity.listRoles();
    if (id === undefined) {
      const name = url.searchParams.get('name');
      const selected = roles.filter((r) => name === null || r.name === name);
      return this.send(response, 200, {
        roles: selected.map((r) => roleJson(r, base)),
        links: listLinks(base, 'roles'),
      });
    }
    const role = roles.find((r) => r.id === id);
    if (!role) throw notFound('role', id);
    this.send(response, 200, { role: roleJson(role, base) });
  }

  private async projectUserRole(
    request: IncomingMessage,
    response: ServerResponse,
    context: TokenContext,
    ids: { project: string; user: string; role: string },
  ): Promise<void> {
    const identity = this.auth.identity;
    const project = await identity.getProject(ids.project);
    await identity.getUser(ids.user);
    const role = (await identity.listRoles()).find((r) => r.id === ids.role);
    if (!role) throw notFound('role', ids.role);
    const assignment: RoleAssignment = {
      role: role.name,
      actor: { user: ids.user },
      scope: { project: project.id },
    };
    if (request.method === 'PUT') {
      // assignRoleAs checks the policy and refuses escalation (a role the caller's token does not carry).
      await this.auth.assignRoleAs(context, assignment);
      response.writeHead(204, { 'x-openstack-request-id': requestId() }).end();
      return;
    }
    const target = { project_id: project.id, domain_id: project.domainId };
    if (request.method === 'DELETE') {
      this.auth.policy.enforce(context, 'identity:role_assignments:delete', target);
      await identity.unassignRole(assignment);
      response.writeHead(204, { 'x-openstack-request-id': requestId() }).end();
      return;
    }
    if (request.method === 'HEAD' || request.method === 'GET') {
      this.auth.policy.enforce(context, 'identity:role_assignments:list', target);
      const held = await identity.assignedRoles(ids.user, { project: project.id });
      if (!held.includes(role.name)) throw notFound('role assignment', role.name);
      response.writeHead(204, { 'x-openstack-request-id': requestId() }).end();
      return;
    }
    throw methodNotAllowed(request);
  }

  private async roleAssignments(
    response: ServerResponse,
    context: TokenContext,
    base: string,
    url: URL,
  ): Promise<void> {
    const q = url.searchParams;
    const projectId = q.get('scope.project.id');
    this.auth.policy.enforce(
      context,
      'identity:role_assignments:list',
      projectId ? { project_id: projectId } : {},
    );
    const userId = q.get('user.id');
    const groupId = q.get('group.id');
    const roleId = q.get('role.id');
    const domainId = q.get('scope.domain.id');
    const names = q.has('include_names') && q.get('include_names') !== 'false';
    const actor = userId ? { user: userId } : groupId ? { group: groupId } : undefined;
    const all = await this.auth.identity.listAssignments(actor ? { actor } : {});
    const selected = all.filter(
      (a) =>
        (!roleId || a.roleId === roleId) &&
        (!projectId || ('project' in a.scope && a.scope.project === projectId)) &&
        (!domainId || ('domain' in a.scope && a.scope.domain === domainId)) &&
        (!q.has('scope.system') || 'system' in a.scope),
    );
    const out = [];
    for (const a of selected) out.push(await this.assignmentJson(a, base, names));
    this.send(response, 200, { role_assignments: out, links: listLinks(base, 'role_assignments') });
  }

  private async assignmentJson(
    a: RoleAssignment & { roleId: string },
    base: string,
    names: boolean,
  ): Promise<Record<string, unknown>> {
    const identity = this.auth.identity;
    const domainOf = async (id: string) => {
      const d = await identity.getDomain(id);
      return { id: d.id, name: d.name };
    };
    const role: Record<string, unknown> = { id: a.roleId, ...(names ? { name: a.role } : {}) };
    let actor: Record<string, unknown>;
    if ('user' in a.actor) {
      const u = names ? await identity.getUser(a.actor.user) : undefined;
      actor = {
        user: { id: a.actor.user, ...(u ? { name: u.name, domain: await domainOf(u.domainId) } : {}) },
      };
    } else {
      actor = { group: { id: a.actor.group } };
    }
    let scope: Record<string, unknown>;
    let scopePath: string;
    if ('project' in a.scope) {
      const p = names ? await identity.getProject(a.scope.project) : undefined;
      scope = {
        project: { id: a.scope.project, ...(p ? { name: p.name, domain: await domainOf(p.domainId) } : {}) },
      };
      scopePath = `projects/${a.scope.project}`;
    } else if ('domain' in a.scope) {
      const d = names ? await domainOf(a.scope.domain) : { id: a.scope.domain };
      scope = { domain: d };
      scopePath = `domains/${a.scope.domain}`;
    } else {
      scope = { system: { all: true } };
      scopePath = 'system';
    }
    const actorPath = 'user' in a.actor ? `users/${a.actor.user}` : `groups/${a.actor.group}`;
    return {
      role,
      ...actor,
      scope,
      links: { assignment: `${base}/v3/${scopePath}/${actorPath}/roles/${a.roleId}` },
    };
  }

  // ---------------------------------------------------------------- responses

  private send(
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
        'x-openstack-request-id': requestId(),
        ...headers,
      })
      .end(head ? undefined : text);
  }

  private sendError(response: ServerResponse, error: unknown): void {
    if (response.headersSent) {
      response.destroy();
      return;
    }
    const { status, message } = statusOf(error);
    // Keystone challenges a client without a valid token, which is how keystoneauth knows to log in again.
    const headers: Record<string, string> =
      status === 401 ? { 'www-authenticate': 'Keystone uri="/v3"' } : {};
    this.send(response, status, keystoneError(status, message), headers);
  }
}

/** Creates the admin project and user with the `admin` role on it unless they exist; returns the project id. */
async function bootstrapAdmin(auth: AuthService, admin: IdentityApiOptions['admin']): Promise<string> {
  const identity = auth.identity;
  const domain = { id: DEFAULT_DOMAIN_ID };
  const project = await identity
    .findProject({ name: admin.project, domain })
    .catch(async (error: unknown) => {
      if (error instanceof NubesError && error.code === 'NotFound')
        return identity.createProject({ name: admin.project });
      throw error;
    });
  let user: User;
  try {
    user = await identity.findUser({ name: admin.user, domain });
    // As `keystone-manage bootstrap`: the configured password is the admin's password after every start.
    await identity.setPassword(user.id, admin.password);
  } catch (error) {
    if (!(error instanceof NubesError && error.code === 'NotFound')) throw error;
    user = await identity.createUser({
      name: admin.user,
      password: admin.password,
      defaultProjectId: project.id,
    });
  }
  await identity.assignRole({ role: 'admin', actor: { user: user.id }, scope: { project: project.id } });
  return project.id;
}

function requestId(): string {
  return `req-${randomUUID()}`;
}

function methodNotAllowed(request: IncomingMessage): NubesError {
  return new NubesError('NotFound', `${request.method} is not supported on ${request.url ?? '/'}`);
}

function listLinks(base: string, collection: string): Record<string, unknown> {
  return { self: `${base}/v3/${collection}`, previous: null, next: null };
}

function domainJson(d: Domain, base: string): Record<string, unknown> {
  return {
    id: d.id,
    name: d.name,
    description: d.description ?? '',
    enabled: d.enabled,
    tags: [],
    options: {},
    links: { self: `${base}/v3/domains/${d.id}` },
  };
}

function projectJson(p: Project, base: string): Record<string, unknown> {
  return {
    id: p.id,
    name: p.name,
    domain_id: p.domainId,
    description: p.description ?? '',
    enabled: p.enabled,
    // Keystone names the domain as the parent of a top-level project.
    parent_id: p.parentId ?? p.domainId,
    is_domain: false,
    tags: [],
    options: {},
    links: { self: `${base}/v3/projects/${p.id}` },
  };
}

function userJson(u: User, base: string): Record<string, unknown> {
  return {
    id: u.id,
    name: u.name,
    domain_id: u.domainId,
    enabled: u.enabled,
    ...(u.defaultProjectId ? { default_project_id: u.defaultProjectId } : {}),
    ...(u.email ? { email: u.email } : {}),
    password_expires_at: null,
    options: {},
    links: { self: `${base}/v3/users/${u.id}` },
  };
}

function roleJson(
  r: { id: string; name: string; description?: string },
  base: string,
): Record<string, unknown> {
  return {
    id: r.id,
    name: r.name,
    domain_id: null,
    description: r.description ?? null,
    options: {},
    links: { self: `${base}/v3/roles/${r.id}` },
  };
}

function optionalString(value: unknown, field: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalidInput(field, 'must be a string');
  return value;
}

function requiredString(value: unknown, field: string): string {
  const s = optionalString(value, field);
  if (s === undefined) throw invalidInput(field, 'is required');
  return s;
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
