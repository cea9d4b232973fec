/**
 * The reference cloud's identity service: Keystone v3 as python-openstackclient 6.0 uses it, built only from
 * `@nubes/auth`'s public API over a `@nubes/core` Store.
 */
import type { ServerResponse } from 'node:http';
import {
  AuthService,
  DEFAULT_DOMAIN_ID,
  DEFAULT_POLICY_RULES,
  type Domain,
  Policy,
  type Project,
  type RoleAssignment,
  tokenApiHandler,
  type User,
} from '@nubes/auth';
import { NubesError, notFound, type Store } from '@nubes/core';
import {
  type ApiContext,
  member,
  optionalBoolean,
  optionalString,
  Router,
  readJson,
  requiredString,
  type ServiceApi,
  sendEmpty,
  sendJson,
} from './http.js';

/** The cloud's administrator, bootstrapped on every start. */
export interface AdminAccount {
  user: string;
  password: string;
  project: string;
}

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
export function keystoneError(status: number, message: string): Record<string, unknown> {
  return { error: { code: status, title: TITLES[status] ?? 'Error', message } };
}

/**
 * Opens the cloud's {@link AuthService} on `store`, bootstrapping the admin user and project with the `admin`
 * role (Keystone's `keystone-manage bootstrap`). Returns the service and the admin project's id.
 *
 * The default Nubes policy keeps the cloud admin system-scoped, but openstackclient logs in with
 * OS_PROJECT_NAME, so (as Keystone's `admin_project_name` setting does) admins of the admin project are cloud
 * admins here. The policy needs that project's id, and an AuthService's policy is fixed when it opens: open once
 * to bootstrap, then again with the policy.
 */
export async function openAuth(
  store: Store,
  admin: AdminAccount,
  options: { issuer?: string; rules?: Record<string, string> } = {},
): Promise<{ auth: AuthService; adminProjectId: string }> {
  const issuer = options.issuer ?? 'nubes-reference-cloud';
  const bootstrap = await AuthService.open(store, { issuer });
  let adminProjectId: string;
  try {
    adminProjectId = await bootstrapAdmin(bootstrap, admin);
  } finally {
    bootstrap.close();
  }
  const policy = Policy.load({ ...DEFAULT_POLICY_RULES }).extend({
    cloud_admin: `role:admin and (system_scope:all or project_id:${adminProjectId})`,
    cloud_reader: `role:reader and (system_scope:all or project_id:${adminProjectId})`,
    ...options.rules,
  });
  const auth = await AuthService.open(store, { issuer, policy });
  return { auth, adminProjectId };
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
 * Keystone v3 over an {@link AuthService}: `/`, `/v3` (version documents), `/v3/auth/tokens` (issue with a
 * catalog, validate, revoke), `/v3/auth/catalog`, `/v3/domains`, `/v3/projects`, `/v3/users`, `/v3/roles`,
 * `/v3/projects/{id}/users/{id}/roles/{id}` and `/v3/role_assignments`.
 */
export class IdentityApi implements ServiceApi {
  readonly type = 'identity';
  readonly name = 'keystone';
  readonly prefix = '/v3';
  private readonly tokens: ReturnType<typeof tokenApiHandler>;
  private readonly router = new Router();

  constructor(private readonly auth: AuthService) {
    this.tokens = tokenApiHandler(auth);
    const r = this.router;
    r.on('GET', '/', (ctx) => sendJson(ctx, 200, { version: versionDoc(ctx.base) }));
    for (const method of ['GET', 'POST', 'DELETE'])
      r.on(method, '/auth/tokens', (ctx) => this.tokenRoute(ctx));
    r.on('GET', '/auth/catalog', (ctx) => {
      ctx.token();
      sendJson(ctx, 200, { catalog: ctx.catalog(), links: { self: `${ctx.base}/v3/auth/catalog` } });
    });
    r.on('GET', '/domains', (ctx) => this.listDomains(ctx));
    r.on('GET', '/domains/:id', (ctx) => this.getDomain(ctx));
    r.on('GET', '/projects', (ctx) => this.listProjects(ctx));
    r.on('POST', '/projects', (ctx) => this.createProject(ctx));
    r.on('GET', '/projects/:id', (ctx) => this.getProject(ctx));
    r.on('GET', '/users', (ctx) => this.listUsers(ctx));
    r.on('POST', '/users', (ctx) => this.createUser(ctx));
    r.on('GET', '/users/:id', (ctx) => this.getUser(ctx));
    r.on('GET', '/roles', (ctx) => this.listRoles(ctx));
    r.on('GET', '/roles/:id', (ctx) => this.getRole(ctx));
    for (const method of ['GET', 'PUT', 'DELETE'])
      r.on(method, '/projects/:project/users/:user/roles/:role', (ctx) => this.projectUserRole(ctx));
    r.on('GET', '/role_assignments', (ctx) => this.roleAssignments(ctx));
  }

  endpoint(base: string): string {
    return `${base}/v3`;
  }

  handle(ctx: ApiContext): Promise<void> {
    return this.router.dispatch(ctx);
  }

  errorBody(status: number, message: string): unknown {
    return keystoneError(status, message);
  }

  /** The root version document (`GET /`, HTTP 300), which lists only identity v3. */
  static versions(base: string): unknown {
    return { versions: { values: [versionDoc(base)] } };
  }

  // ---------------------------------------------------------------- tokens

  private async tokenRoute(ctx: ApiContext): Promise<void> {
    const captured = new CapturedResponse();
    await this.tokens(ctx.request, captured as unknown as ServerResponse);
    if (captured.status >= 400) {
      const body = JSON.parse(captured.body || '{}') as { error?: { message?: string } };
      const headers: Record<string, string> = {};
      if (captured.headers['www-authenticate'])
        headers['www-authenticate'] = captured.headers['www-authenticate'];
      return sendJson(
        ctx,
        captured.status,
        keystoneError(captured.status, body.error?.message ?? ''),
        headers,
      );
    }
    const headers: Record<string, string> = {};
    if (captured.headers['x-subject-token']) headers['x-subject-token'] = captured.headers['x-subject-token'];
    if (!captured.body) return sendEmpty(ctx, captured.status, headers);
    const body = JSON.parse(captured.body) as { token?: Record<string, unknown> };
    // Keystone puts the catalog in the body of a scoped token (an unscoped one reaches no service), unless the
    // caller asked for `?nocatalog`.
    const token = body.token;
    if (token?.roles && !ctx.url.searchParams.has('nocatalog')) token.catalog = ctx.catalog();
    sendJson(ctx, captured.status, body, headers);
  }

  // ---------------------------------------------------------------- domains

  private async listDomains(ctx: ApiContext): Promise<void> {
    this.auth.policy.enforce(ctx.token(), 'identity:domains:list');
    const domains = await this.auth.identity.listDomains();
    sendJson(ctx, 200, {
      domains: domains.map((d) => domainJson(d, ctx.base)),
      links: listLinks(ctx.base, 'domains'),
    });
  }

  private async getDomain(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const domain = await this.auth.identity.getDomain(ctx.params.id as string);
    this.auth.policy.enforce(context, 'identity:domains:get', { domain_id: domain.id });
    sendJson(ctx, 200, { domain: domainJson(domain, ctx.base) });
  }

  // ---------------------------------------------------------------- projects and users

  private async listProjects(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const domainId = ctx.url.searchParams.get('domain_id') ?? undefined;
    this.auth.policy.enforce(context, 'identity:projects:list', domainId ? { domain_id: domainId } : {});
    const name = ctx.url.searchParams.get('name');
    const projects = (await this.auth.identity.listProjects(domainId ? { domainId } : {})).filter(
      (p) => name === null || p.name === name,
    );
    sendJson(ctx, 200, {
      projects: projects.map((p) => projectJson(p, ctx.base)),
      links: listLinks(ctx.base, 'projects'),
    });
  }

  private async createProject(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const p = member(await readJson(ctx.request), 'project');
    const domainId = optionalString(p.domain_id, 'project.domain_id') ?? DEFAULT_DOMAIN_ID;
    this.auth.policy.enforce(context, 'identity:projects:create', { domain_id: domainId });
    // Keystone sends the domain as parent_id of a top-level project; only a real project is a parent here.
    const parentId = optionalString(p.parent_id, 'project.parent_id');
    const description = optionalString(p.description, 'project.description', 65_535);
    const enabled = optionalBoolean(p.enabled, 'project.enabled');
    const project = await this.auth.identity.createProject({
      name: requiredString(p.name, 'project.name', 64),
      domainId,
      ...(parentId && parentId !== domainId ? { parentId } : {}),
      ...(description ? { description } : {}),
      ...(enabled !== undefined ? { enabled } : {}),
    });
    sendJson(ctx, 201, { project: projectJson(project, ctx.base) });
  }

  private async getProject(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    // openstackclient looks a name up by GETting it in the id slot first: a 404 here sends it to `?name=`.
    const project = await this.auth.identity.getProject(ctx.params.id as string);
    this.auth.policy.enforce(context, 'identity:projects:get', {
      project_id: project.id,
      domain_id: project.domainId,
    });
    sendJson(ctx, 200, { project: projectJson(project, ctx.base) });
  }

  private async listUsers(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const domainId = ctx.url.searchParams.get('domain_id') ?? undefined;
    this.auth.policy.enforce(context, 'identity:users:list', domainId ? { domain_id: domainId } : {});
    const name = ctx.url.searchParams.get('name');
    const users = (await this.auth.identity.listUsers(domainId ? { domainId } : {})).filter(
      (u) => name === null || u.name === name,
    );
    sendJson(ctx, 200, {
      users: users.map((u) => userJson(u, ctx.base)),
      links: listLinks(ctx.base, 'users'),
    });
  }

  private async createUser(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const u = member(await readJson(ctx.request), 'user');
    const domainId = optionalString(u.domain_id, 'user.domain_id') ?? DEFAULT_DOMAIN_ID;
    this.auth.policy.enforce(context, 'identity:users:create', { domain_id: domainId });
    const password = optionalString(u.password, 'user.password');
    const defaultProjectId = optionalString(u.default_project_id, 'user.default_project_id');
    const email = optionalString(u.email, 'user.email');
    const enabled = optionalBoolean(u.enabled, 'user.enabled');
    const user = await this.auth.identity.createUser({
      name: requiredString(u.name, 'user.name'),
      domainId,
      ...(password !== undefined ? { password } : {}),
      ...(defaultProjectId ? { defaultProjectId } : {}),
      ...(email ? { email } : {}),
      ...(enabled !== undefined ? { enabled } : {}),
    });
    sendJson(ctx, 201, { user: userJson(user, ctx.base) });
  }

  private async getUser(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const user = await this.auth.identity.getUser(ctx.params.id as string);
    this.auth.policy.enforce(context, 'identity:users:get', { user_id: user.id, domain_id: user.domainId });
    sendJson(ctx, 200, { user: userJson(user, ctx.base) });
  }

  // ---------------------------------------------------------------- roles and assignments

  private async visibleRoles(ctx: ApiContext): Promise<{ id: string; name: string; description?: string }[]> {
    const context = ctx.token();
    // Roles are global: a reader of the project its token is for may see their names.
    const target = context.project ? { project_id: context.project.id } : {};
    this.auth.policy.enforce(context, 'identity:roles:list', target);
    return this.auth.identity.listRoles();
  }

  private async listRoles(ctx: ApiContext): Promise<void> {
    const name = ctx.url.searchParams.get('name');
    const roles = (await this.visibleRoles(ctx)).filter((r) => name === null || r.name === name);
    sendJson(ctx, 200, {
      roles: roles.map((r) => roleJson(r, ctx.base)),
      links: listLinks(ctx.base, 'roles'),
    });
  }

  private async getRole(ctx: ApiContext): Promise<void> {
    const id = ctx.params.id as string;
    const role = (await this.visibleRoles(ctx)).find((r) => r.id === id);
    if (!role) throw notFound('role', id);
    sendJson(ctx, 200, { role: roleJson(role, ctx.base) });
  }

  private async projectUserRole(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const identity = this.auth.identity;
    const ids = ctx.params as { project: string; user: string; role: string };
    const project = await identity.getProject(ids.project);
    await identity.getUser(ids.user);
    const role = (await identity.listRoles()).find((r) => r.id === ids.role);
    if (!role) throw notFound('role', ids.role);
    const assignment: RoleAssignment = {
      role: role.name,
      actor: { user: ids.user },
      scope: { project: project.id },
    };
    if (ctx.method === 'PUT') {
      // assignRoleAs checks the policy and refuses escalation (a role the caller's token does not carry).
      await this.auth.assignRoleAs(context, assignment);
      return sendEmpty(ctx, 204);
    }
    const target = { project_id: project.id, domain_id: project.domainId };
    if (ctx.method === 'DELETE') {
      this.auth.policy.enforce(context, 'identity:role_assignments:delete', target);
      await identity.unassignRole(assignment);
      return sendEmpty(ctx, 204);
    }
    this.auth.policy.enforce(context, 'identity:role_assignments:list', target);
    const held = await identity.assignedRoles(ids.user, { project: project.id });
    if (!held.includes(role.name)) throw notFound('role assignment', role.name);
    sendEmpty(ctx, 204);
  }

  private async roleAssignments(ctx: ApiContext): Promise<void> {
    const context = ctx.token();
    const q = ctx.url.searchParams;
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
    for (const a of selected) out.push(await this.assignmentJson(a, ctx.base, names));
    sendJson(ctx, 200, { role_assignments: out, links: listLinks(ctx.base, 'role_assignments') });
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
}

/** Creates the admin project and user with the `admin` role on it unless they exist; returns the project id. */
async function bootstrapAdmin(auth: AuthService, admin: AdminAccount): Promise<string> {
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

function versionDoc(base: string): Record<string, unknown> {
  return {
    id: KEYSTONE_VERSION,
    status: 'stable',
    updated: '2020-04-07T00:00:00Z',
    links: [{ rel: 'self', href: `${base}/v3/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
  };
}
