/**
 * The reference cloud's compute service: Nova's v2.1 API (microversions 2.1 to 2.73) as python-openstackclient
 * 6.0 drives it through novaclient and openstacksdk, built from `@nubes/scheduler` (placement),
 * `@nubes/quota`, `@nubes/images` and `@nubes/netns` over the shared Store. The servers it creates are run by
 * the compute agents (see `src/compute/model.ts`); the pieces live in `src/compute/`.
 */
import { randomBytes } from 'node:crypto';
import type { AuthService, TokenContext } from '@nubes/auth';
import { invalidInput, isNubesError, NubesError, type Store } from '@nubes/core';
import type { ImageStore } from '@nubes/images';
import type { Vpc } from '@nubes/netns';
import type { Quota } from '@nubes/quota';
import type { Inventory, StoredHost } from '@nubes/scheduler';
import { notServed, novaError, novaNotFound } from '../compute/errors.js';
import { Flavors, flavorJson, parseFlavorCreate } from '../compute/flavors.js';
import {
  availabilityZonesJson,
  findHypervisor,
  hypervisorId,
  hypervisorJson,
  zoneOf,
} from '../compute/hypervisors.js';
import {
  type Microversion,
  negotiate,
  versionEntry,
  versionHeaders,
  versionsDocument,
} from '../compute/microversion.js';
import { type ServerRecord, serverKey } from '../compute/model.js';
import {
  checkNotBelowUsage,
  limitsJson,
  parseQuotaSetUpdate,
  quotaDefaultsJson,
  quotaSetJson,
  registerComputeResources,
} from '../compute/quota-sets.js';
import { updateRecord } from '../compute/records.js';
import { parseServerGroupCreate, ServerGroups, serverGroupJson } from '../compute/server-groups.js';
import { actionOf, parseServerCreate } from '../compute/server-input.js';
import {
  addressesOf,
  type ServerViewContext,
  serverJson,
  serverSummaryJson,
} from '../compute/server-view.js';
import { type Caller, type ServerFilters, Servers } from '../compute/servers.js';
import {
  type ApiContext,
  isoTime,
  member,
  optionalInt,
  Router,
  readJson,
  type ServiceApi,
  sendEmpty,
  sendJson,
} from './http.js';

/** Options of {@link ComputeApi}: identity and policy, and the cloud's shared parts. */
export interface ComputeApiOptions {
  auth: AuthService;
  /** The admin project: its admins are cloud admins (see `openAuth`). */
  adminProjectId: string;
  store: Store;
  images: ImageStore;
  vpc: Vpc;
  quota: Quota;
  inventory: Inventory;
  /**
   * The data directory the agents write console logs under (`<dataDir>/instances/<id>/console.log`). Without
   * it `os-getConsoleOutput` answers 501.
   */
  dataDir?: string;
}

/** Server actions Nova has that this cloud does not serve: answered 501, not "no such action". */
const UNSERVED_ACTIONS = new Set([
  'resize',
  'confirmResize',
  'revertResize',
  'rebuild',
  'createImage',
  'createBackup',
  'pause',
  'unpause',
  'suspend',
  'resume',
  'lock',
  'unlock',
  'shelve',
  'unshelve',
  'shelveOffload',
  'rescue',
  'unrescue',
  'migrate',
  'evacuate',
  'forceDelete',
  'restore',
  'addSecurityGroup',
  'removeSecurityGroup',
  'addFixedIp',
  'removeFixedIp',
  'addFloatingIp',
  'removeFloatingIp',
  'changePassword',
  'injectNetworkInfo',
  'resetNetwork',
  'os-resetState',
  'trigger_crash_dump',
  'os-getVNCConsole',
  'os-getSPICEConsole',
  'os-getSerialConsole',
  'os-getRDPConsole',
]);

/** Query booleans as Nova reads them (`all_tenants`, `with_servers`): empty means true. */
function queryBool(value: string | null, field: string): boolean {
  if (value === null) return false;
  const v = value.toLowerCase();
  if (['', 'true', '1', 'yes', 'on', 't', 'y'].includes(v)) return true;
  if (['false', '0', 'no', 'off', 'f', 'n'].includes(v)) return false;
  throw invalidInput(field, `must be a boolean, not ${value}`);
}

/** `limit` and `marker` paging over items with ids, as Nova pages. */
function page<T>(items: T[], q: URLSearchParams, idOf: (t: T) => string): T[] {
  const limit = optionalInt(q.get('limit') ?? undefined, 'limit', 0, 100_000);
  const marker = q.get('marker');
  let start = 0;
  if (marker !== null) {
    const at = items.findIndex((i) => idOf(i) === marker);
    if (at < 0) throw invalidInput('marker', `marker [${marker}] not found`);
    start = at + 1;
  }
  return items.slice(start, limit === undefined ? undefined : start + limit);
}

/** nova: the compute API over the cloud's parts. */
export class ComputeApi implements ServiceApi {
  readonly type = 'compute';
  readonly name = 'nova';
  readonly prefix = '/compute';
  private readonly router = new Router();
  private readonly versions = new WeakMap<ApiContext, Microversion>();
  private readonly flavors: Flavors;
  private readonly groups: ServerGroups;
  private readonly servers: Servers;
  private ready: Promise<void> | undefined;

  constructor(private readonly options: ComputeApiOptions) {
    this.flavors = new Flavors(options.store);
    this.groups = new ServerGroups(options.store);
    this.servers = new Servers(options, this.flavors, this.groups);
    const r = this.router;
    const v = '/v2.1';
    // Flavors.
    r.on('GET', `${v}/flavors`, (ctx) => this.listFlavors(ctx, false));
    r.on('GET', `${v}/flavors/detail`, (ctx) => this.listFlavors(ctx, true));
    r.on('POST', `${v}/flavors`, (ctx) => this.createFlavor(ctx));
    r.on('GET', `${v}/flavors/:id`, (ctx) => this.showFlavor(ctx));
    r.on('DELETE', `${v}/flavors/:id`, (ctx) => this.deleteFlavor(ctx));
    r.on('GET', `${v}/flavors/:id/os-extra_specs`, (ctx) => this.extraSpecs(ctx));
    r.on('GET', `${v}/flavors/:id/os-extra_specs/:key`, (ctx) => this.extraSpec(ctx));
    r.on('GET', `${v}/flavors/:id/os-flavor-access`, (ctx) => this.flavorAccess(ctx));
    for (const m of ['POST', 'PUT', 'DELETE'])
      r.on(m, `${v}/flavors/:id/os-extra_specs`, () => {
        throw notServed('Setting flavor extra specs');
      });
    for (const m of ['PUT', 'DELETE'])
      r.on(m, `${v}/flavors/:id/os-extra_specs/:key`, () => {
        throw notServed('Setting flavor extra specs');
      });
    r.on('POST', `${v}/flavors/:id/action`, () => {
      throw notServed('Flavor access management');
    });
    r.on('PUT', `${v}/flavors/:id`, () => {
      throw notServed('Updating a flavor');
    });
    // Servers.
    r.on('GET', `${v}/servers`, (ctx) => this.listServers(ctx, false));
    r.on('GET', `${v}/servers/detail`, (ctx) => this.listServers(ctx, true));
    r.on('POST', `${v}/servers`, (ctx) => this.createServer(ctx));
    r.on('GET', `${v}/servers/:id`, (ctx) => this.showServer(ctx));
    r.on('PUT', `${v}/servers/:id`, (ctx) => this.updateServer(ctx));
    r.on('DELETE', `${v}/servers/:id`, (ctx) => this.deleteServer(ctx));
    r.on('POST', `${v}/servers/:id/action`, (ctx) => this.serverAction(ctx));
    r.on('GET', `${v}/servers/:id/ips`, (ctx) => this.serverIps(ctx));
    r.on('GET', `${v}/servers/:id/metadata`, (ctx) => this.serverMetadata(ctx));
    r.on('POST', `${v}/servers/:id/metadata`, (ctx) => this.setServerMetadata(ctx, false));
    r.on('PUT', `${v}/servers/:id/metadata`, (ctx) => this.setServerMetadata(ctx, true));
    r.on('DELETE', `${v}/servers/:id/metadata/:key`, (ctx) => this.deleteServerMetadata(ctx));
    for (const sub of ['os-interface', 'os-volume_attachments', 'os-instance-actions', 'migrations', 'tags'])
      for (const m of ['GET', 'POST'])
        r.on(m, `${v}/servers/:id/${sub}`, () => {
          throw notServed(`/servers/{id}/${sub}`);
        });
    // Server groups.
    r.on('GET', `${v}/os-server-groups`, (ctx) => this.listServerGroups(ctx));
    r.on('POST', `${v}/os-server-groups`, (ctx) => this.createServerGroup(ctx));
    r.on('GET', `${v}/os-server-groups/:id`, (ctx) => this.showServerGroup(ctx));
    r.on('DELETE', `${v}/os-server-groups/:id`, (ctx) => this.deleteServerGroup(ctx));
    // Hypervisors, zones, services.
    r.on('GET', `${v}/os-hypervisors`, (ctx) => this.listHypervisors(ctx, false));
    r.on('GET', `${v}/os-hypervisors/detail`, (ctx) => this.listHypervisors(ctx, true));
    r.on('GET', `${v}/os-hypervisors/statistics`, (ctx) => this.hypervisorStatistics(ctx));
    r.on('GET', `${v}/os-hypervisors/:id`, (ctx) => this.showHypervisor(ctx));
    r.on('GET', `${v}/os-hypervisors/:pattern/search`, (ctx) => this.searchHypervisors(ctx, false));
    r.on('GET', `${v}/os-hypervisors/:pattern/servers`, (ctx) => this.searchHypervisors(ctx, true));
    r.on('GET', `${v}/os-hypervisors/:id/uptime`, () => {
      throw notServed('Hypervisor uptime');
    });
    r.on('GET', `${v}/os-availability-zone`, (ctx) => this.availabilityZones(ctx, false));
    r.on('GET', `${v}/os-availability-zone/detail`, (ctx) => this.availabilityZones(ctx, true));
    r.on('GET', `${v}/os-services`, (ctx) => this.listServices(ctx));
    // Quotas and limits.
    r.on('GET', `${v}/os-quota-sets/:project`, (ctx) => this.showQuota(ctx, 'plain'));
    r.on('GET', `${v}/os-quota-sets/:project/detail`, (ctx) => this.showQuota(ctx, 'detail'));
    r.on('GET', `${v}/os-quota-sets/:project/defaults`, (ctx) => this.showQuota(ctx, 'defaults'));
    r.on('PUT', `${v}/os-quota-sets/:project`, (ctx) => this.updateQuota(ctx));
    r.on('DELETE', `${v}/os-quota-sets/:project`, (ctx) => this.revertQuota(ctx));
    r.on('GET', `${v}/limits`, (ctx) => this.limits(ctx));
    // What novaclient probes for, and Nova APIs this cloud leaves out.
    r.on('GET', `${v}/extensions`, (ctx) => sendJson(ctx, 200, { extensions: [] }));
    // `hypervisor show` lists aggregates to name a host's; this cloud has none.
    r.on('GET', `${v}/os-aggregates`, (ctx) => {
      this.policy.enforce(ctx.token(), 'compute:hosts:list');
      sendJson(ctx, 200, { aggregates: [] });
    });
    r.on('POST', `${v}/os-aggregates`, () => {
      throw notServed('/os-aggregates');
    });
    for (const path of [
      'os-keypairs',
      'os-simple-tenant-usage',
      'os-migrations',
      'os-instance_usage_audit_log',
    ])
      for (const m of ['GET', 'POST'])
        r.on(m, `${v}/${path}`, () => {
          throw notServed(`/${path}`);
        });
  }

  endpoint(base: string): string {
    return `${base}/compute/v2.1`;
  }

  async handle(ctx: ApiContext): Promise<void> {
    // The version documents are public, as Nova's are: clients read them before they authenticate.
    if (ctx.path === '' && (ctx.method === 'GET' || ctx.method === 'HEAD'))
      return sendJson(ctx, 200, versionsDocument(ctx.base));
    if (ctx.path === '/v2.1' && (ctx.method === 'GET' || ctx.method === 'HEAD'))
      return sendJson(ctx, 200, { version: versionEntry(ctx.base) });
    const negotiated = negotiate(ctx.request.headers);
    if (!negotiated.ok) {
      if (!ctx.request.complete) ctx.request.resume();
      return sendJson(ctx, 406, novaError(406, negotiated.message), {
        vary: 'OpenStack-API-Version, X-OpenStack-Nova-API-Version',
      });
    }
    // Set before anything can throw, so error answers carry the version too (writeHead merges them).
    for (const [k, value] of Object.entries(versionHeaders(negotiated.version)))
      ctx.response.setHeader(k, value);
    this.versions.set(ctx, negotiated.version);
    ctx.token();
    await this.init();
    await this.router.dispatch(ctx);
  }

  errorBody(status: number, message: string): unknown {
    return novaError(status, message);
  }

  /** Seeds the flavors and registers the compute quota resources once per process (again after a failure). */
  private init(): Promise<void> {
    this.ready ??= (async () => {
      await this.flavors.seed();
      await registerComputeResources(this.options.quota);
    })().catch((error: unknown) => {
      this.ready = undefined;
      throw error;
    });
    return this.ready;
  }

  // ---------------------------------------------------------------- helpers

  private version(ctx: ApiContext): Microversion {
    const v = this.versions.get(ctx);
    if (!v) throw new NubesError('Internal', 'request without a negotiated microversion');
    return v;
  }

  private get policy(): AuthService['policy'] {
    return this.options.auth.policy;
  }

  private allowed(token: TokenContext, action: string, projectId?: string): boolean {
    return this.policy.authorize(token, action, projectId ? { project_id: projectId } : {}).allowed;
  }

  /** Cloud admins: they see every project and the host attributes (Nova's admin-only extensions). */
  private isAdmin(token: TokenContext): boolean {
    return this.allowed(token, 'compute:servers:list_all_projects');
  }

  private caller(ctx: ApiContext): Caller & { token: TokenContext } {
    const token = ctx.token();
    if (!token.project) throw new NubesError('Forbidden', 'The compute API needs a project-scoped token.');
    return { token, userId: token.userId, projectId: token.project.id, admin: this.isAdmin(token) };
  }

  /** A server the caller may see: another project's is "not found", never "forbidden", so ids do not leak. */
  private async visibleServer(ctx: ApiContext, token: TokenContext): Promise<ServerRecord> {
    const id = ctx.params.id as string;
    const r = await this.servers.get(id);
    if (!this.allowed(token, 'compute:servers:get', r.projectId)) throw novaNotFound('Instance', id);
    return r;
  }

  private async viewContext(ctx: ApiContext, token: TokenContext): Promise<ServerViewContext> {
    const version = this.version(ctx);
    const admin = this.isAdmin(token);
    const network = await this.servers.networkSnapshot();
    const hosts = admin ? await this.options.inventory.listHosts() : [];
    const groups = version.atLeast('2.71') ? await this.groups.list() : [];
    return {
      base: ctx.base,
      version,
      admin,
      network,
      hostName: (id) => hosts.find((h) => h.host.id === id)?.host.name ?? id,
      groupsOf: (id) => groups.filter((g) => g.members.includes(id)).map((g) => g.id),
    };
  }

  // ---------------------------------------------------------------- flavors

  private async listFlavors(ctx: ApiContext, detail: boolean): Promise<void> {
    const token = ctx.token();
    this.policy.enforce(token, 'compute:flavors:list');
    const q = ctx.url.searchParams;
    // Only admins choose: others always see the public flavors (no flavor access lists here).
    const isPublic = this.isAdmin(token) ? (q.get('is_public') ?? 'true').toLowerCase() : 'true';
    const minRam = optionalInt(q.get('minRam') ?? undefined, 'minRam', 0, 2 ** 31 - 1) ?? 0;
    const minDisk = optionalInt(q.get('minDisk') ?? undefined, 'minDisk', 0, 2 ** 31 - 1) ?? 0;
    const all = (await this.flavors.list()).filter(
      (f) =>
        (isPublic === 'none' || f.isPublic === queryBool(isPublic, 'is_public')) &&
        f.ramMiB >= minRam &&
        f.diskGiB >= minDisk,
    );
    const version = this.version(ctx);
    sendJson(ctx, 200, {
      flavors: page(all, q, (f) => f.id).map((f) => flavorJson(f, ctx.base, version, detail)),
    });
  }

  private async showFlavor(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:flavors:get');
    const flavor = await this.flavors.get(ctx.params.id as string);
    sendJson(ctx, 200, { flavor: flavorJson(flavor, ctx.base, this.version(ctx), true) });
  }

  private async createFlavor(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:flavors:create');
    const version = this.version(ctx);
    const input = parseFlavorCreate(member(await readJson(ctx.request), 'flavor'), version);
    const flavor = await this.flavors.create(input);
    sendJson(ctx, 200, { flavor: flavorJson(flavor, ctx.base, version, true) });
  }

  private async deleteFlavor(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:flavors:delete');
    await this.flavors.delete(ctx.params.id as string);
    sendEmpty(ctx, 202);
  }

  private async extraSpecs(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:flavors:get');
    await this.flavors.get(ctx.params.id as string);
    sendJson(ctx, 200, { extra_specs: {} });
  }

  private async extraSpec(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:flavors:get');
    const id = ctx.params.id as string;
    await this.flavors.get(id);
    throw new NubesError('NotFound', `Flavor ${id} has no extra specs with key ${ctx.params.key}.`);
  }

  private async flavorAccess(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:flavors:get');
    const flavor = await this.flavors.get(ctx.params.id as string);
    if (flavor.isPublic) throw new NubesError('NotFound', 'Access list not available for public flavors.');
    sendJson(ctx, 200, { flavor_access: [] });
  }

  // ---------------------------------------------------------------- servers

  private async listServers(ctx: ApiContext, detail: boolean): Promise<void> {
    const { token, projectId, admin } = this.caller(ctx);
    const q = ctx.url.searchParams;
    const allProjects = queryBool(q.get('all_tenants'), 'all_tenants');
    if (allProjects) this.policy.enforce(token, 'compute:servers:list_all_projects');
    else this.policy.enforce(token, 'compute:servers:list', { project_id: projectId });
    const project = q.get('project_id') ?? q.get('tenant_id');
    const filters: ServerFilters = {};
    // Another project's id only means something to an admin listing across projects, as in Nova.
    if (!allProjects) filters.projectId = projectId;
    else if (project) filters.projectId = project;
    const pick = (k: string) => q.get(k) ?? undefined;
    const name = pick('name');
    const status = pick('status');
    const flavor = pick('flavor');
    const image = pick('image');
    const zone = pick('availability_zone');
    const ip = pick('ip');
    if (name !== undefined) filters.name = name;
    if (status !== undefined) filters.status = status;
    if (flavor !== undefined) filters.flavor = flavor;
    if (image !== undefined) filters.image = image;
    if (zone !== undefined) filters.availabilityZone = zone;
    if (ip !== undefined) filters.ip = ip;
    // `host` is an admin-only filter; Nova drops it silently for others.
    const host = pick('host');
    if (host !== undefined && admin) filters.host = host;
    const records = page(await this.servers.list(filters), q, (r) => r.id);
    if (!detail) return sendJson(ctx, 200, { servers: records.map((r) => serverSummaryJson(r, ctx.base)) });
    const view = await this.viewContext(ctx, token);
    sendJson(ctx, 200, { servers: records.map((r) => serverJson(r, view)) });
  }

  private async showServer(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    sendJson(ctx, 200, { server: serverJson(r, await this.viewContext(ctx, token)) });
  }

  private async createServer(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    this.policy.enforce(caller.token, 'compute:servers:create', { project_id: caller.projectId });
    const req = parseServerCreate(await readJson(ctx.request), this.version(ctx));
    const [first] = await this.servers.create(caller, req);
    if (!first) throw new NubesError('Internal', 'no server was created');
    const view = await this.viewContext(ctx, caller.token);
    const json = serverJson(first, view);
    sendJson(
      ctx,
      202,
      {
        server: {
          id: first.id,
          links: json.links,
          'OS-DCF:diskConfig': 'MANUAL',
          security_groups:
            json.security_groups ??
            (req.securityGroups.length
              ? req.securityGroups.map((name) => ({ name }))
              : [{ name: 'default' }]),
          // Nova returns a generated password once; this cloud injects none, but clients expect the field.
          adminPass: randomBytes(9).toString('base64url'),
        },
      },
      { location: `${ctx.base}/compute/v2.1/servers/${first.id}` },
    );
  }

  private async updateServer(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    this.policy.enforce(token, 'compute:servers:update', { project_id: r.projectId });
    const s = member(await readJson(ctx.request), 'server');
    for (const k of Object.keys(s))
      if (!['name', 'accessIPv4', 'accessIPv6', 'OS-DCF:diskConfig', 'description'].includes(k))
        throw invalidInput(`server.${k}`, 'is not allowed');
    const name = s.name;
    if (name !== undefined && (typeof name !== 'string' || name.trim() === '' || name.length > 255))
      throw invalidInput('server.name', 'must be 1-255 characters');
    const updated = await this.updateServerRecord(r.id, (cur) =>
      typeof name === 'string' ? { ...cur, name } : cur,
    );
    sendJson(ctx, 200, { server: serverJson(updated, await this.viewContext(ctx, token)) });
  }

  private updateServerRecord(id: string, change: (r: ServerRecord) => ServerRecord): Promise<ServerRecord> {
    return updateRecord<ServerRecord>(
      this.options.store,
      serverKey(id),
      () => novaNotFound('Instance', id),
      (r) => ({
        ...change(r),
        updated: isoTime(Date.now()),
      }),
    );
  }

  private async deleteServer(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    this.policy.enforce(token, 'compute:servers:delete', { project_id: r.projectId });
    await this.servers.delete(r.id);
    sendEmpty(ctx, 204);
  }

  private async serverIps(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    sendJson(ctx, 200, { addresses: addressesOf(r, await this.servers.networkSnapshot()) });
  }

  private async serverMetadata(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    sendJson(ctx, 200, { metadata: r.metadata });
  }

  private async setServerMetadata(ctx: ApiContext, replace: boolean): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    this.policy.enforce(token, 'compute:servers:update', { project_id: r.projectId });
    const body = member(await readJson(ctx.request), 'metadata');
    const metadata: Record<string, string> = {};
    for (const [k, value] of Object.entries(body)) {
      if (k.length < 1 || k.length > 255)
        throw invalidInput(`metadata.${k}`, 'keys must be 1-255 characters');
      if (typeof value !== 'string' || value.length > 255)
        throw invalidInput(`metadata.${k}`, 'must be a string of at most 255 characters');
      metadata[k] = value;
    }
    const limit = (await this.options.quota.limits(r.projectId)).metadataItems ?? -1;
    const updated = await this.updateServerRecord(r.id, (cur) => {
      const next = replace ? metadata : { ...cur.metadata, ...metadata };
      if (limit >= 0 && Object.keys(next).length > limit)
        throw new NubesError('QuotaExceeded', `Maximum number of metadata items exceeds ${limit}`);
      return { ...cur, metadata: next };
    });
    sendJson(ctx, 200, { metadata: updated.metadata });
  }

  private async deleteServerMetadata(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    this.policy.enforce(token, 'compute:servers:update', { project_id: r.projectId });
    const key = ctx.params.key as string;
    if (!(key in r.metadata)) throw new NubesError('NotFound', `Metadata item was not found: ${key}`);
    await this.updateServerRecord(r.id, (cur) => {
      const { [key]: _gone, ...rest } = cur.metadata;
      return { ...cur, metadata: rest };
    });
    sendEmpty(ctx, 204);
  }

  private async serverAction(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const r = await this.visibleServer(ctx, token);
    const { name, args } = actionOf(await readJson(ctx.request));
    const target = { project_id: r.projectId };
    switch (name) {
      case 'os-start':
        this.policy.enforce(token, 'compute:servers:start', target);
        await this.servers.start(r.id);
        return sendEmpty(ctx, 202);
      case 'os-stop':
        this.policy.enforce(token, 'compute:servers:stop', target);
        await this.servers.stop(r.id);
        return sendEmpty(ctx, 202);
      case 'reboot': {
        // The default policy has no reboot rule; rebooting changes the server, as `update` does.
        this.policy.enforce(token, 'compute:servers:update', target);
        const type = typeof args.type === 'string' ? args.type.toUpperCase() : undefined;
        if (type !== 'SOFT' && type !== 'HARD') throw invalidInput('reboot.type', 'must be SOFT or HARD');
        await this.servers.reboot(r.id, type);
        return sendEmpty(ctx, 202);
      }
      case 'os-getConsoleOutput': {
        this.policy.enforce(token, 'compute:servers:get', target);
        const raw = args.length;
        // novaclient sends -1 or a string number; null means the whole log.
        const length =
          raw === null || raw === undefined
            ? undefined
            : optionalInt(raw, 'os-getConsoleOutput.length', -1, 2 ** 31 - 1);
        return sendJson(ctx, 200, { output: await this.servers.consoleOutput(r.id, length) });
      }
      case 'os-migrateLive': {
        this.policy.enforce(token, 'compute:servers:live_migrate', target);
        const host = args.host;
        if (host !== undefined && host !== null && typeof host !== 'string')
          throw invalidInput('os-migrateLive.host', 'must be a host name or null');
        const block = args.block_migration;
        if (block !== undefined && typeof block !== 'boolean' && block !== 'auto')
          throw invalidInput('os-migrateLive.block_migration', 'must be true, false or "auto"');
        await this.servers.liveMigrate(r.id, typeof host === 'string' && host !== '' ? host : undefined);
        return sendEmpty(ctx, 202);
      }
      default:
        if (UNSERVED_ACTIONS.has(name)) throw Servers.notServedAction(name);
        throw invalidInput('body', `There is no such action: ${name}`);
    }
  }

  // ---------------------------------------------------------------- server groups

  private async listServerGroups(ctx: ApiContext): Promise<void> {
    const { token, projectId } = this.caller(ctx);
    const q = ctx.url.searchParams;
    const all = queryBool(q.get('all_projects'), 'all_projects') && this.isAdmin(token);
    this.policy.enforce(token, 'compute:servers:list', { project_id: projectId });
    const groups = (await this.groups.list())
      .filter((g) => all || g.projectId === projectId)
      .sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
    const offset = optionalInt(q.get('offset') ?? undefined, 'offset', 0, 2 ** 31 - 1) ?? 0;
    const limit = optionalInt(q.get('limit') ?? undefined, 'limit', 0, 2 ** 31 - 1);
    const version = this.version(ctx);
    sendJson(ctx, 200, {
      server_groups: groups
        .slice(offset, limit === undefined ? undefined : offset + limit)
        .map((g) => serverGroupJson(g, version)),
    });
  }

  private async createServerGroup(ctx: ApiContext): Promise<void> {
    const { token, projectId, userId } = this.caller(ctx);
    this.policy.enforce(token, 'compute:servers:create', { project_id: projectId });
    const version = this.version(ctx);
    const input = parseServerGroupCreate(member(await readJson(ctx.request), 'server_group'), version);
    const quota = this.options.quota;
    let reservation: string;
    try {
      reservation = await quota.reserve(projectId, { serverGroups: 1 });
    } catch (error) {
      if (isNubesError(error, 'QuotaExceeded'))
        throw new NubesError('QuotaExceeded', 'Quota exceeded, too many server groups.', {
          details: error.details,
        });
      throw error;
    }
    try {
      const group = await this.groups.create(input, projectId, userId);
      await quota.commit(reservation);
      sendJson(ctx, 200, { server_group: serverGroupJson(group, version) });
    } catch (error) {
      await quota.rollback(reservation).catch(() => {});
      throw error;
    }
  }

  private async visibleGroup(ctx: ApiContext, token: TokenContext) {
    const id = ctx.params.id as string;
    const group = await this.groups.get(id);
    if (!this.allowed(token, 'compute:servers:get', group.projectId)) throw novaNotFound('Server group', id);
    return group;
  }

  private async showServerGroup(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const group = await this.visibleGroup(ctx, token);
    sendJson(ctx, 200, { server_group: serverGroupJson(group, this.version(ctx)) });
  }

  private async deleteServerGroup(ctx: ApiContext): Promise<void> {
    const { token } = this.caller(ctx);
    const group = await this.visibleGroup(ctx, token);
    this.policy.enforce(token, 'compute:servers:delete', { project_id: group.projectId });
    await this.groups.delete(group.id);
    await this.options.quota.release(
      group.projectId,
      { serverGroups: 1 },
      { idempotencyKey: `server-group-delete-${group.id}` },
    );
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- hypervisors, zones, services

  private async hostIps(): Promise<Map<string, string>> {
    const vpcHosts = (await this.options.vpc.snapshot()).hosts;
    return new Map(vpcHosts.map((h) => [h.name, h.underlayIp]));
  }

  private async serversByHost(): Promise<Map<string, { uuid: string; name: string }[]>> {
    const out = new Map<string, { uuid: string; name: string }[]>();
    for (const r of await this.servers.list({}))
      if (r.host)
        out.set(r.host, [...(out.get(r.host) ?? []), { uuid: r.id, name: `instance-${r.id.slice(0, 8)}` }]);
    return out;
  }

  private async listHypervisors(ctx: ApiContext, detail: boolean): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:hosts:list');
    const version = this.version(ctx);
    const q = ctx.url.searchParams;
    let hosts = await this.options.inventory.listHosts();
    const pattern = version.atLeast('2.53') ? q.get('hypervisor_hostname_pattern') : null;
    if (pattern !== null) hosts = hosts.filter((h) => h.host.name.includes(pattern));
    const withServers = version.atLeast('2.53') && queryBool(q.get('with_servers'), 'with_servers');
    const ips = detail ? await this.hostIps() : new Map<string, string>();
    const servers = withServers
      ? await this.serversByHost()
      : new Map<string, { uuid: string; name: string }[]>();
    const sorted = hosts.sort((a, b) => a.host.name.localeCompare(b.host.name));
    const listed = version.atLeast('2.33')
      ? page(sorted, q, (h) => String(hypervisorId(h.host.id, version)))
      : sorted;
    sendJson(ctx, 200, {
      hypervisors: listed.map((h) => this.hypervisor(h, version, detail, ips, servers)),
    });
  }

  private hypervisor(
    h: StoredHost,
    version: Microversion,
    detail: boolean,
    ips: Map<string, string>,
    servers: Map<string, { uuid: string; name: string }[]>,
  ): Record<string, unknown> {
    const ip = ips.get(h.host.name);
    const list = servers.get(h.host.id);
    return hypervisorJson(h, version, {
      detail,
      ...(ip ? { hostIp: ip } : {}),
      ...(list ? { servers: list } : {}),
    });
  }

  private async showHypervisor(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:hosts:get');
    const version = this.version(ctx);
    const id = ctx.params.id as string;
    const host = findHypervisor(await this.options.inventory.listHosts(), id);
    if (!host) throw new NubesError('NotFound', `Hypervisor with ID ${id} could not be found.`);
    const withServers =
      version.atLeast('2.53') && queryBool(ctx.url.searchParams.get('with_servers'), 'with_servers');
    const servers = withServers
      ? await this.serversByHost()
      : new Map<string, { uuid: string; name: string }[]>();
    sendJson(ctx, 200, { hypervisor: this.hypervisor(host, version, true, await this.hostIps(), servers) });
  }

  private async searchHypervisors(ctx: ApiContext, withServers: boolean): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:hosts:list');
    const version = this.version(ctx);
    // 2.53 replaced these with query parameters on the list, as in Nova.
    if (version.atLeast('2.53')) throw new NubesError('NotFound', 'The resource could not be found.');
    const pattern = ctx.params.pattern as string;
    const hosts = (await this.options.inventory.listHosts()).filter((h) => h.host.name.includes(pattern));
    if (!hosts.length)
      throw new NubesError('NotFound', `No hypervisor matching '${pattern}' could be found.`);
    const servers = withServers
      ? await this.serversByHost()
      : new Map<string, { uuid: string; name: string }[]>();
    sendJson(ctx, 200, {
      hypervisors: hosts.map((h) => this.hypervisor(h, version, false, new Map(), servers)),
    });
  }

  private async hypervisorStatistics(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:hosts:list');
    const version = this.version(ctx);
    const ips = await this.hostIps();
    const sum: Record<string, number> = {};
    const hosts = await this.options.inventory.listHosts();
    for (const h of hosts) {
      const j = hypervisorJson(h, version, {
        detail: true,
        ...(ips.get(h.host.name) ? { hostIp: ips.get(h.host.name) as string } : {}),
      });
      for (const k of [
        'vcpus',
        'vcpus_used',
        'memory_mb',
        'memory_mb_used',
        'free_ram_mb',
        'local_gb',
        'local_gb_used',
        'free_disk_gb',
        'disk_available_least',
        'running_vms',
        'current_workload',
      ])
        sum[k] = (sum[k] ?? 0) + (j[k] as number);
    }
    sendJson(ctx, 200, { hypervisor_statistics: { count: hosts.length, ...sum } });
  }

  private async availabilityZones(ctx: ApiContext, detail: boolean): Promise<void> {
    const token = ctx.token();
    if (detail) this.policy.enforce(token, 'compute:hosts:list');
    const hosts = await this.options.inventory.listHosts();
    sendJson(ctx, 200, availabilityZonesJson(hosts, detail, isoTime(Date.now())));
  }

  private async listServices(ctx: ApiContext): Promise<void> {
    this.policy.enforce(ctx.token(), 'compute:hosts:list');
    const version = this.version(ctx);
    const hosts = (await this.options.inventory.listHosts()).sort((a, b) =>
      a.host.name.localeCompare(b.host.name),
    );
    const now = isoTime(Date.now());
    sendJson(ctx, 200, {
      services: hosts.map((h) => ({
        id: hypervisorId(h.host.id, version),
        binary: 'nova-compute',
        host: h.host.name,
        zone: zoneOf(h.host),
        status: h.host.state === 'disabled' ? 'disabled' : 'enabled',
        state: h.host.state === 'down' ? 'down' : 'up',
        updated_at: now,
        disabled_reason: null,
        ...(version.atLeast('2.11') ? { forced_down: false } : {}),
      })),
    });
  }

  // ---------------------------------------------------------------- quotas and limits

  private async showQuota(ctx: ApiContext, kind: 'plain' | 'detail' | 'defaults'): Promise<void> {
    const token = ctx.token();
    const project = ctx.params.project as string;
    // Nova answers for any project id without checking it exists; so does this.
    this.policy.enforce(token, kind === 'detail' ? 'quota:usage:get' : 'quota:limits:get', {
      project_id: project,
    });
    const version = this.version(ctx);
    const quota = this.options.quota;
    if (kind === 'defaults')
      return sendJson(ctx, 200, { quota_set: quotaDefaultsJson(project, await quota.defaults(), version) });
    const usage = await quota.usage(project);
    sendJson(ctx, 200, { quota_set: quotaSetJson(usage, version, { detail: kind === 'detail' }) });
  }

  private async updateQuota(ctx: ApiContext): Promise<void> {
    const token = ctx.token();
    const project = ctx.params.project as string;
    this.policy.enforce(token, 'quota:limits:set', { project_id: project });
    const version = this.version(ctx);
    const update = parseQuotaSetUpdate(member(await readJson(ctx.request), 'quota_set'), version);
    const quota = this.options.quota;
    checkNotBelowUsage(update, await quota.usage(project));
    if (Object.keys(update.limits).length) await quota.setLimits(project, update.limits);
    sendJson(ctx, 200, { quota_set: quotaSetJson(await quota.usage(project), version, { id: false }) });
  }

  private async revertQuota(ctx: ApiContext): Promise<void> {
    const token = ctx.token();
    const project = ctx.params.project as string;
    this.policy.enforce(token, 'quota:limits:set', { project_id: project });
    const defaults = await this.options.quota.defaults();
    await this.options.quota.setLimits(
      project,
      Object.fromEntries(Object.keys(defaults).map((k) => [k, null])),
    );
    sendEmpty(ctx, 202);
  }

  private async limits(ctx: ApiContext): Promise<void> {
    const { token, projectId } = this.caller(ctx);
    const project = ctx.url.searchParams.get('tenant_id') ?? projectId;
    this.policy.enforce(token, 'quota:usage:get', { project_id: project });
    sendJson(ctx, 200, limitsJson(await this.options.quota.usage(project), this.version(ctx)));
  }
}
