/**
 * The reference cloud's network service: Neutron v2.0 as python-openstackclient 6.0 uses it (networks,
 * subnets, ports, routers, floating IPs, security groups and their rules, quotas), built only from the
 * public APIs of `@nubes/netns` (the Vpc model the agents wire), `@nubes/quota` and `@nubes/auth`.
 */
import type { AuthService, TokenContext } from '@nubes/auth';
import { invalidInput, isNubesError, NubesError, type Store } from '@nubes/core';
import {
  type FloatingIpRecord,
  ipv4InNetwork,
  type NetworkRecord,
  type PortRecord,
  parseIpv4Cidr,
  type RouterRecord,
  type RuleInput,
  type SecurityGroupRecord,
  type SecurityGroupRule,
  type SubnetRecord,
  type Vpc,
  type VpcSnapshot,
} from '@nubes/netns';
import type { Quota } from '@nubes/quota';
import type { Inventory } from '@nubes/scheduler';
import {
  neutronConflict,
  neutronErrorBody,
  neutronNotFound,
  policyRefusal,
  QUOTA_NAMES,
  toNeutronError,
} from '../network/errors.js';
import { tapName } from '../network/ports.js';
import {
  createAttrs,
  deleteAttrs,
  ensureDefaultSecurityGroup,
  forgetDefaultSecurityGroup,
  listAttrs,
  type NeutronAttrs,
  type NeutronKind,
  readAttrs,
  releaseKey,
  updateAttrs,
  withDefaults,
} from '../network/records.js';
import {
  applyQuery,
  type Body,
  floatingIpView,
  networkView,
  portView,
  project,
  routerView,
  ruleView,
  securityGroupView,
  subnetView,
} from '../network/views.js';
import {
  type ApiContext,
  member,
  optionalBoolean,
  optionalInt,
  optionalString,
  Router,
  readJson,
  requiredString,
  type ServiceApi,
  sendEmpty,
  sendJson,
} from './http.js';

/** The router host used while no host is registered in the Vpc (see {@link NetworkApiOptions.routerHost}). */
export const DEFAULT_ROUTER_HOST = 'network-node';

/** Options of {@link NetworkApi}. */
export interface NetworkApiOptions {
  /** Identity and policy: tokens are verified, `cloud_admin` and `member_or_admin` decide who may do what. */
  auth: AuthService;
  /** The admin project's id (its admins are cloud admins; a token without a project acts for it). */
  adminProjectId: string;
  /** The tenant networks the agents wire: the truth for everything but Neutron-only attributes. */
  vpc: Vpc;
  /** Per-project limits of networks, subnets, ports, routers, floatingIps, securityGroups, securityGroupRules. */
  quota: Quota;
  /** The compute inventory. Not consulted: routers go on hosts registered in the Vpc, where agents run. */
  inventory?: Inventory;
  /** Where the Neutron-only side records (`neutron/...`) live; default the Vpc's Store. */
  store?: Store;
  /**
   * The host routers are put on while no host is registered in the Vpc (default {@link DEFAULT_ROUTER_HOST});
   * with hosts registered, a new router goes on the first one by name.
   */
  routerHost?: string;
}

/** The extensions this service really implements, as Neutron lists them at `/v2.0/extensions`. */
const EXTENSIONS: { alias: string; name: string; description: string }[] = [
  { alias: 'security-group', name: 'security-group', description: 'The security groups extension.' },
  { alias: 'router', name: 'Neutron L3 Router', description: 'Router abstraction for basic L3 forwarding.' },
  {
    alias: 'ext-gw-mode',
    name: 'Neutron L3 Configurable external gateway mode',
    description: 'enable_snat.',
  },
  {
    alias: 'external-net',
    name: 'Neutron external network',
    description: 'Adds external network attribute.',
  },
  { alias: 'quotas', name: 'Quota management support', description: 'Expose functions for quotas.' },
  { alias: 'quota_details', name: 'Quota details management support', description: 'Quota usage.' },
  { alias: 'port-security', name: 'Port Security', description: 'Provides port security.' },
  { alias: 'binding', name: 'Port Binding', description: 'Expose port bindings of a virtual port.' },
  { alias: 'net-mtu', name: 'Network MTU', description: 'Provides MTU attribute for a network resource.' },
  { alias: 'provider', name: 'Provider Network', description: 'Expose mapping of virtual networks.' },
  { alias: 'project-id', name: 'project_id field enabled', description: 'project_id is supported.' },
  {
    alias: 'standard-attr-description',
    name: 'standard-attr-description',
    description: 'Extension to add descriptions to standard attributes.',
  },
  {
    alias: 'standard-attr-timestamp',
    name: 'Resource timestamps',
    description: 'Adds created_at and updated_at fields to all Neutron resources.',
  },
  {
    alias: 'standard-attr-revisions',
    name: 'Resource revision numbers',
    description: 'This extension will display the revision number of neutron resources.',
  },
];

/** The resources of `@nubes/quota` Neutron's quota API shows, in its order. */
const QUOTA_RESOURCES = [
  'networks',
  'subnets',
  'ports',
  'routers',
  'floatingIps',
  'securityGroups',
  'securityGroupRules',
] as const;

/** Who is asking: the project the token is scoped to, and whether they are a cloud admin. */
interface Caller {
  token: TokenContext;
  project: string;
  admin: boolean;
}

/** A resource kind as the API names it, for messages and side records. */
interface Kind {
  attrs: NeutronKind;
  /** Neutron's word in messages and error types (`Network`, `Security group`). */
  noun: string;
}

const NETWORK: Kind = { attrs: 'networks', noun: 'network' };
const SUBNET: Kind = { attrs: 'subnets', noun: 'subnet' };
const PORT: Kind = { attrs: 'ports', noun: 'port' };
const ROUTER: Kind = { attrs: 'routers', noun: 'router' };
const FLOATINGIP: Kind = { attrs: 'floatingips', noun: 'floating IP' };
const SECGROUP: Kind = { attrs: 'secgroups', noun: 'security group' };
const RULE: Kind = { attrs: 'rules', noun: 'security group rule' };

/** Rejects attributes Neutron would not accept here (`Unrecognized attribute(s)`), naming the first. */
function onlyKnown(body: Body, known: readonly string[]): void {
  for (const key of Object.keys(body))
    if (!known.includes(key)) throw invalidInput(key, 'is not a recognized attribute here');
}

function stringList(value: unknown, field: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) throw invalidInput(field, 'must be a list');
  return value.map((v, i) => {
    if (typeof v !== 'string') throw invalidInput(`${field}.${i}`, 'must be a string');
    return v;
  });
}

function objectList(value: unknown, field: string): Body[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) throw invalidInput(field, 'must be a list');
  return value.map((v, i) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v))
      throw invalidInput(`${field}.${i}`, 'must be an object');
    return v as Body;
  });
}

/** An attribute that must be absent, null or empty: accepted for clients that send it, never stored. */
function emptyOnly(body: Body, field: string): void {
  const v = body[field];
  if (v === undefined || v === null || v === false || (Array.isArray(v) && v.length === 0)) return;
  throw invalidInput(field, 'is not supported by this cloud');
}

/** IP protocols Neutron accepts by name besides the ones the Vpc model names. */
const PROTOCOL_NUMBERS: Record<string, number> = {
  ah: 51,
  dccp: 33,
  egp: 8,
  esp: 50,
  gre: 47,
  igmp: 2,
  ipip: 4,
  ipv6_encap: 41,
  ospf: 89,
  pgm: 113,
  rsvp: 46,
  udplite: 136,
  vrrp: 112,
};

function ruleProtocol(value: unknown): RuleInput['protocol'] {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0 || value > 255)
      throw invalidInput('protocol', 'must be 0 to 255');
    return value;
  }
  if (typeof value !== 'string') throw invalidInput('protocol', 'must be a name or a number');
  const p = value.toLowerCase();
  if (p === '' || p === 'any') return undefined;
  if (/^\d+$/.test(p)) return ruleProtocol(Number(p));
  if (p === 'tcp' || p === 'udp' || p === 'sctp' || p === 'icmp' || p === 'icmpv6') return p;
  if (p === 'ipv6-icmp') return 'icmpv6';
  const n = PROTOCOL_NUMBERS[p];
  if (n === undefined) throw invalidInput('protocol', `${value} is not a supported protocol`);
  return n;
}

/** `0.0.0.0/0` and `::/0` mean any remote, as no prefix does: Neutron treats such rules as the same. */
function remotePrefix(prefix: string | undefined): string | undefined {
  return prefix === '0.0.0.0/0' || prefix === '::/0' ? undefined : prefix;
}

/** Whether a rule already in a group is the one asked for (Neutron's SecurityGroupRuleExists). */
function sameRule(a: SecurityGroupRule, b: RuleInput): boolean {
  return (
    a.direction === b.direction &&
    a.ethertype === (b.ethertype ?? 'IPv4') &&
    String(a.protocol) === String(b.protocol) &&
    a.portRangeMin === b.portRangeMin &&
    a.portRangeMax === b.portRangeMax &&
    remotePrefix(a.remoteIpPrefix) === remotePrefix(b.remoteIpPrefix) &&
    a.remoteGroupId === b.remoteGroupId
  );
}

/**
 * Neutron v2.0 over a {@link Vpc}. Every project sees its own resources, external and shared networks
 * (and their subnets); another project's resources are `404`, as if they did not exist; the cloud admin
 * sees and changes everything. Creates reserve quota and commit it once the resource exists; deletes give
 * it back with an idempotency key, so a retried delete releases once.
 */
export class NetworkApi implements ServiceApi {
  readonly type = 'network';
  readonly name = 'neutron';
  readonly prefix = '/network';
  private readonly router = new Router();
  private readonly store: Store;

  constructor(readonly options: NetworkApiOptions) {
    this.store = options.store ?? options.vpc.store;
    const r = this.router;
    r.on('GET', '/', (ctx) => sendJson(ctx, 200, this.versions(ctx.base)));
    r.on('GET', '/v2.0', (ctx) => this.resources(ctx));
    r.on('GET', '/v2.0/extensions', (ctx) => this.extensions(ctx));
    r.on('GET', '/v2.0/extensions/:alias', (ctx) => this.extension(ctx));

    r.on('GET', '/v2.0/networks', (ctx) => this.listNetworks(ctx));
    r.on('POST', '/v2.0/networks', (ctx) => this.createNetwork(ctx));
    r.on('GET', '/v2.0/networks/:id', (ctx) => this.showNetwork(ctx));
    r.on('PUT', '/v2.0/networks/:id', (ctx) => this.updateNetwork(ctx));
    r.on('DELETE', '/v2.0/networks/:id', (ctx) => this.deleteNetwork(ctx));

    r.on('GET', '/v2.0/subnets', (ctx) => this.listSubnets(ctx));
    r.on('POST', '/v2.0/subnets', (ctx) => this.createSubnet(ctx));
    r.on('GET', '/v2.0/subnets/:id', (ctx) => this.showSubnet(ctx));
    r.on('PUT', '/v2.0/subnets/:id', (ctx) => this.updateSubnet(ctx));
    r.on('DELETE', '/v2.0/subnets/:id', (ctx) => this.deleteSubnet(ctx));

    r.on('GET', '/v2.0/ports', (ctx) => this.listPorts(ctx));
    r.on('POST', '/v2.0/ports', (ctx) => this.createPort(ctx));
    r.on('GET', '/v2.0/ports/:id', (ctx) => this.showPort(ctx));
    r.on('PUT', '/v2.0/ports/:id', (ctx) => this.updatePort(ctx));
    r.on('DELETE', '/v2.0/ports/:id', (ctx) => this.deletePort(ctx));

    r.on('GET', '/v2.0/routers', (ctx) => this.listRouters(ctx));
    r.on('POST', '/v2.0/routers', (ctx) => this.createRouter(ctx));
    r.on('GET', '/v2.0/routers/:id', (ctx) => this.showRouter(ctx));
    r.on('PUT', '/v2.0/routers/:id', (ctx) => this.updateRouter(ctx));
    r.on('DELETE', '/v2.0/routers/:id', (ctx) => this.deleteRouter(ctx));
    r.on('PUT', '/v2.0/routers/:id/add_router_interface', (ctx) => this.routerInterface(ctx, 'add'));
    r.on('PUT', '/v2.0/routers/:id/remove_router_interface', (ctx) => this.routerInterface(ctx, 'remove'));

    r.on('GET', '/v2.0/floatingips', (ctx) => this.listFloatingIps(ctx));
    r.on('POST', '/v2.0/floatingips', (ctx) => this.createFloatingIp(ctx));
    r.on('GET', '/v2.0/floatingips/:id', (ctx) => this.showFloatingIp(ctx));
    r.on('PUT', '/v2.0/floatingips/:id', (ctx) => this.updateFloatingIp(ctx));
    r.on('DELETE', '/v2.0/floatingips/:id', (ctx) => this.deleteFloatingIp(ctx));

    r.on('GET', '/v2.0/security-groups', (ctx) => this.listSecurityGroups(ctx));
    r.on('POST', '/v2.0/security-groups', (ctx) => this.createSecurityGroup(ctx));
    r.on('GET', '/v2.0/security-groups/:id', (ctx) => this.showSecurityGroup(ctx));
    r.on('PUT', '/v2.0/security-groups/:id', (ctx) => this.updateSecurityGroup(ctx));
    r.on('DELETE', '/v2.0/security-groups/:id', (ctx) => this.deleteSecurityGroup(ctx));

    r.on('GET', '/v2.0/security-group-rules', (ctx) => this.listRules(ctx));
    r.on('POST', '/v2.0/security-group-rules', (ctx) => this.createRule(ctx));
    r.on('GET', '/v2.0/security-group-rules/:id', (ctx) => this.showRule(ctx));
    r.on('DELETE', '/v2.0/security-group-rules/:id', (ctx) => this.deleteRule(ctx));

    r.on('GET', '/v2.0/quotas/:project', (ctx) => this.showQuota(ctx, 'limits'));
    r.on('PUT', '/v2.0/quotas/:project', (ctx) => this.updateQuota(ctx));
    r.on('DELETE', '/v2.0/quotas/:project', (ctx) => this.resetQuota(ctx));
    r.on('GET', '/v2.0/quotas/:project/default', (ctx) => this.showQuota(ctx, 'default'));
    r.on('GET', '/v2.0/quotas/:project/details', (ctx) => this.showQuota(ctx, 'details'));
  }

  endpoint(base: string): string {
    return `${base}/network`;
  }

  async handle(ctx: ApiContext): Promise<void> {
    // openstacksdk asks for `.json` paths in places; Neutron answers them as the plain ones.
    const path = ctx.path.replace(/\.json$/, '');
    try {
      await this.router.dispatch(path === ctx.path ? ctx : { ...ctx, path });
    } catch (error) {
      throw toNeutronError(error);
    }
  }

  errorBody(status: number, message: string, error: unknown): unknown {
    return neutronErrorBody(status, message, error);
  }

  // ---------------------------------------------------------------- discovery

  private versions(base: string): Body {
    return {
      versions: [{ id: 'v2.0', status: 'CURRENT', links: [{ href: `${base}/network/v2.0/`, rel: 'self' }] }],
    };
  }

  private resources(ctx: ApiContext): void {
    const collections: [string, string][] = [
      ['network', 'networks'],
      ['subnet', 'subnets'],
      ['port', 'ports'],
      ['router', 'routers'],
      ['floatingip', 'floatingips'],
      ['security_group', 'security-groups'],
      ['security_group_rule', 'security-group-rules'],
      ['quota', 'quotas'],
    ];
    sendJson(ctx, 200, {
      resources: collections.map(([name, collection]) => ({
        name,
        collection,
        links: [{ href: `${ctx.base}/network/v2.0/${collection}`, rel: 'self' }],
      })),
    });
  }

  private extensionBody(e: (typeof EXTENSIONS)[number]): Body {
    return { ...e, updated: '2013-01-20T00:00:00-00:00', links: [] };
  }

  private extensions(ctx: ApiContext): void {
    ctx.token();
    sendJson(ctx, 200, { extensions: EXTENSIONS.map((e) => this.extensionBody(e)) });
  }

  private extension(ctx: ApiContext): void {
    ctx.token();
    const e = EXTENSIONS.find((x) => x.alias === ctx.params.alias);
    if (!e) throw neutronNotFound('extension', ctx.params.alias as string);
    sendJson(ctx, 200, { extension: this.extensionBody(e) });
  }

  // ---------------------------------------------------------------- callers and access

  private caller(ctx: ApiContext): Caller {
    const token = ctx.token();
    const admin = this.options.auth.policy.authorize(token, 'cloud_admin').allowed;
    const project = token.project?.id;
    if (!project && !admin) throw policyRefusal('project_scope');
    return { token, admin, project: project ?? this.options.adminProjectId };
  }

  /** Members (and admins) of `owner` change its resources; readers only look. */
  private mayWrite(c: Caller, owner: string, action: string): void {
    if (c.admin) return;
    if (owner !== c.project) throw policyRefusal(action);
    if (!this.options.auth.policy.authorize(c.token, 'member_or_admin', { project_id: owner }).allowed)
      throw policyRefusal(action);
  }

  /** The project a create is for: the body's `project_id`/`tenant_id` (another project's: admins only). */
  private owner(c: Caller, body: Body, action: string): string {
    const asked =
      optionalString(body.project_id, 'project_id', 64) ?? optionalString(body.tenant_id, 'tenant_id', 64);
    if (
      asked !== undefined &&
      body.project_id !== undefined &&
      body.tenant_id !== undefined &&
      body.project_id !== body.tenant_id
    )
      throw invalidInput('tenant_id', 'must equal project_id when both are given');
    const owner = asked ?? c.project;
    this.mayWrite(c, owner, action);
    return owner;
  }

  private owns(c: Caller, tenant: string): boolean {
    return c.admin || tenant === c.project;
  }

  private networkVisible(c: Caller, n: NetworkRecord): boolean {
    return this.owns(c, n.tenant) || n.external || n.shared === true;
  }

  private subnetVisible(c: Caller, s: SubnetRecord, snap: VpcSnapshot): boolean {
    if (this.owns(c, s.tenant)) return true;
    const n = snap.networks.find((x) => x.id === s.networkId);
    return n !== undefined && (n.external || n.shared === true);
  }

  /** A router's gateway port is Neutron's (no project); every other port is its project's. */
  private portVisible(c: Caller, p: PortRecord): boolean {
    if (p.owner.kind === 'routerGateway') return c.admin;
    return this.owns(c, p.tenant);
  }

  // ---------------------------------------------------------------- shared plumbing

  private async body(ctx: ApiContext, key: string): Promise<Body> {
    return member(await readJson(ctx.request), key);
  }

  private attrsOf(kind: Kind): Promise<Map<string, NeutronAttrs>> {
    return listAttrs(this.store, kind.attrs);
  }

  private async attrs(kind: Kind, id: string): Promise<NeutronAttrs> {
    return readAttrs(this.store, kind.attrs, id);
  }

  /** Sends a list: `{ <key>: [...] }`, with `<key>_links` when `limit` cut it short. */
  private sendList(ctx: ApiContext, key: string, items: Body[]): void {
    const page = applyQuery(items, ctx.url.searchParams);
    const body: Body = { [key]: page.items };
    if (page.more) {
      const next = new URL(ctx.url.toString());
      next.searchParams.set('marker', String(page.items[page.items.length - 1]?.id));
      body[`${key}_links`] = [{ rel: 'next', href: `${ctx.base}${next.pathname}${next.search}` }];
    }
    sendJson(ctx, 200, body);
  }

  private sendOne(ctx: ApiContext, status: number, key: string, item: Body): void {
    sendJson(ctx, status, { [key]: project(item, ctx.url.searchParams) });
  }

  /**
   * Creates a counted resource: reserves quota, creates, writes the side record, commits. Any failure rolls
   * the reservation back; a failure after the create undoes it, so a refused create leaves nothing behind.
   */
  private async counted<T extends { id: string }>(
    owner: string,
    deltas: Record<string, number>,
    kind: Kind,
    attrs: Partial<NeutronAttrs>,
    create: () => Promise<T>,
    undo: (made: T) => Promise<unknown>,
  ): Promise<T> {
    const reservation = await this.options.quota.reserve(owner, deltas, { ttlMs: 60_000 });
    let made: T | undefined;
    try {
      made = await create();
      await createAttrs(this.store, kind.attrs, made.id, { ...attrs, counted: true });
      await this.options.quota.commit(reservation);
      return made;
    } catch (error) {
      await this.options.quota.rollback(reservation).catch(() => {});
      if (made) {
        const id = made.id;
        await undo(made).catch(() => {});
        await deleteAttrs(this.store, kind.attrs, id).catch(() => {});
      }
      throw error;
    }
  }

  private async release(
    owner: string,
    deltas: Record<string, number>,
    kind: string,
    id: string,
  ): Promise<void> {
    const positive = Object.fromEntries(Object.entries(deltas).filter(([, n]) => n > 0));
    if (Object.keys(positive).length === 0) return;
    await this.options.quota.release(owner, positive, { idempotencyKey: releaseKey(kind, id) });
  }

  /** Reads one record, `404` with Neutron's type when it is missing or not the caller's to see. */
  private async find<T>(
    kind: Kind,
    id: string,
    read: (id: string) => Promise<T>,
    visible: (t: T) => boolean,
  ): Promise<T> {
    let record: T;
    try {
      // Ids are 32 hex digits: anything else (a name, as the CLI tries first) is simply not found.
      if (!/^[0-9a-f]{32}$/.test(id)) throw neutronNotFound(kind.noun, id);
      record = await read(id);
    } catch (error) {
      if (isNubesError(error, 'NotFound')) throw neutronNotFound(kind.noun, id);
      throw error;
    }
    if (!visible(record)) throw neutronNotFound(kind.noun, id);
    return record;
  }

  /** Runs a Vpc change, turning its `Conflict` into a Neutron type (`NetworkInUse`, ...). */
  private async inUse<T>(type: string, change: () => Promise<T>): Promise<T> {
    try {
      return await change();
    } catch (error) {
      if (isNubesError(error, 'Conflict') && typeof error.details.neutronType !== 'string') {
        const rest = error.message.replace(/^[\w.]+: /, '');
        throw neutronConflict(type, rest);
      }
      throw error;
    }
  }

  private ensureDefaultGroup(project: string): Promise<SecurityGroupRecord> {
    return ensureDefaultSecurityGroup(this.options.vpc, this.store, project, this.options.quota);
  }

  // ---------------------------------------------------------------- networks

  private async listNetworks(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const [snap, attrs] = await Promise.all([this.options.vpc.snapshot(), this.attrsOf(NETWORK)]);
    const items = snap.networks
      .filter((n) => this.networkVisible(c, n))
      .map((n) => networkView(n, readOr(attrs, n.id), snap, c.admin));
    this.sendList(ctx, 'networks', items);
  }

  private async networkBody(c: Caller, n: NetworkRecord): Promise<Body> {
    return networkView(n, await this.attrs(NETWORK, n.id), await this.options.vpc.snapshot(), c.admin);
  }

  private findNetwork(c: Caller, id: string): Promise<NetworkRecord> {
    return this.find(
      NETWORK,
      id,
      (i) => this.options.vpc.getNetwork(i),
      (n) => this.networkVisible(c, n),
    );
  }

  private async showNetwork(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const n = await this.findNetwork(c, ctx.params.id as string);
    this.sendOne(ctx, 200, 'network', await this.networkBody(c, n));
  }

  private async createNetwork(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const b = await this.body(ctx, 'network');
    onlyKnown(b, [
      'name',
      'description',
      'admin_state_up',
      'shared',
      'router:external',
      'mtu',
      'port_security_enabled',
      'project_id',
      'tenant_id',
      'provider:network_type',
      'provider:physical_network',
      'provider:segmentation_id',
      'availability_zone_hints',
      'is_default',
      'qos_policy_id',
      'dns_domain',
    ]);
    const owner = this.owner(c, b, 'create_network');
    const name = optionalString(b.name, 'name') ?? '';
    const description = optionalString(b.description, 'description') ?? '';
    const adminStateUp = optionalBoolean(b.admin_state_up, 'admin_state_up') ?? true;
    const shared = optionalBoolean(b.shared, 'shared') ?? false;
    const external = optionalBoolean(b['router:external'], 'router:external') ?? false;
    const mtu = optionalInt(b.mtu, 'mtu', 576, 9000);
    const portSecurity = optionalBoolean(b.port_security_enabled, 'port_security_enabled') ?? true;
    const networkType = optionalString(b['provider:network_type'], 'provider:network_type');
    const vni = optionalInt(b['provider:segmentation_id'], 'provider:segmentation_id', 1, 16_777_215);
    for (const f of [
      'provider:physical_network',
      'availability_zone_hints',
      'is_default',
      'qos_policy_id',
      'dns_domain',
    ])
      emptyOnly(b, f);
    if (networkType !== undefined && networkType !== 'vxlan')
      throw invalidInput('provider:network_type', 'only vxlan networks are supported');
    // Neutron's default policy: only the cloud admin makes provider, external or shared networks.
    if (external && !c.admin) throw policyRefusal('create_network:router:external');
    if (shared && !c.admin) throw policyRefusal('create_network:shared');
    if ((networkType !== undefined || vni !== undefined) && !c.admin)
      throw policyRefusal('create_network:provider:network_type');
    const vpc = this.options.vpc;
    const n = await this.counted(
      owner,
      { networks: 1 },
      NETWORK,
      { description, adminStateUp, portSecurity },
      () =>
        vpc.createNetwork({
          tenant: owner,
          name,
          external,
          shared,
          ...(mtu !== undefined ? { mtu } : {}),
          ...(vni !== undefined ? { vni } : {}),
        }),
      (made) => vpc.deleteNetwork(made.id),
    );
    this.sendOne(ctx, 201, 'network', await this.networkBody(c, n));
  }

  private async updateNetwork(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const n = await this.findNetwork(c, ctx.params.id as string);
    const b = await this.body(ctx, 'network');
    onlyKnown(b, [
      'name',
      'description',
      'admin_state_up',
      'port_security_enabled',
      'mtu',
      'shared',
      'router:external',
    ]);
    this.mayWrite(c, n.tenant, 'update_network');
    const name = optionalString(b.name, 'name');
    const description = optionalString(b.description, 'description');
    const adminStateUp = optionalBoolean(b.admin_state_up, 'admin_state_up');
    const portSecurity = optionalBoolean(b.port_security_enabled, 'port_security_enabled');
    // MTU, sharing and external-ness are fixed at create in the Vpc: the same value is accepted, not a change.
    if (b.mtu !== undefined && optionalInt(b.mtu, 'mtu', 576, 9000) !== n.mtu)
      throw invalidInput('mtu', 'cannot be changed after create');
    if (b.shared !== undefined && optionalBoolean(b.shared, 'shared') !== (n.shared === true))
      throw invalidInput('shared', 'cannot be changed after create');
    if (
      b['router:external'] !== undefined &&
      optionalBoolean(b['router:external'], 'router:external') !== n.external
    )
      throw invalidInput('router:external', 'cannot be changed after create');
    const updated = name !== undefined ? await this.options.vpc.updateNetwork(n.id, { name }) : n;
    await updateAttrs(this.store, 'networks', n.id, {
      ...(description !== undefined ? { description } : {}),
      ...(adminStateUp !== undefined ? { adminStateUp } : {}),
      ...(portSecurity !== undefined ? { portSecurity } : {}),
    });
    this.sendOne(ctx, 200, 'network', await this.networkBody(c, updated));
  }

  private async deleteNetwork(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const n = await this.findNetwork(c, ctx.params.id as string);
    this.mayWrite(c, n.tenant, 'delete_network');
    const subnets = (await this.options.vpc.listSubnets()).filter((s) => s.networkId === n.id);
    await this.inUse('NetworkInUse', () => this.options.vpc.deleteNetwork(n.id));
    // The Vpc deleted the network's subnets with it: their side records and quota go too.
    const attrs = await this.attrsOf(SUBNET);
    for (const s of subnets) {
      if (readOr(attrs, s.id).counted) await this.release(s.tenant, { subnets: 1 }, 'subnet', s.id);
      await deleteAttrs(this.store, 'subnets', s.id);
    }
    const a = await this.attrs(NETWORK, n.id);
    if (a.counted) await this.release(n.tenant, { networks: 1 }, 'network', n.id);
    await deleteAttrs(this.store, 'networks', n.id);
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- subnets

  private async listSubnets(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const [snap, attrs] = await Promise.all([this.options.vpc.snapshot(), this.attrsOf(SUBNET)]);
    const items = snap.subnets
      .filter((s) => this.subnetVisible(c, s, snap))
      .map((s) => subnetView(s, readOr(attrs, s.id)));
    this.sendList(ctx, 'subnets', items);
  }

  private async findSubnet(c: Caller, id: string): Promise<SubnetRecord> {
    const snap = await this.options.vpc.snapshot();
    return this.find(
      SUBNET,
      id,
      async (i) => {
        const s = snap.subnets.find((x) => x.id === i);
        if (!s) throw neutronNotFound(SUBNET.noun, i);
        return s;
      },
      (s) => this.subnetVisible(c, s, snap),
    );
  }

  private async showSubnet(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const s = await this.findSubnet(c, ctx.params.id as string);
    this.sendOne(ctx, 200, 'subnet', subnetView(s, await this.attrs(SUBNET, s.id)));
  }

  private async createSubnet(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const b = await this.body(ctx, 'subnet');
    onlyKnown(b, [
      'name',
      'description',
      'network_id',
      'ip_version',
      'cidr',
      'gateway_ip',
      'allocation_pools',
      'enable_dhcp',
      'dns_nameservers',
      'host_routes',
      'project_id',
      'tenant_id',
      'ipv6_ra_mode',
      'ipv6_address_mode',
      'subnetpool_id',
      'use_default_subnetpool',
      'service_types',
      'segment_id',
      'prefixlen',
    ]);
    const networkId = requiredString(b.network_id, 'network_id', 64);
    const ipVersion = optionalInt(b.ip_version, 'ip_version', 4, 6) ?? 4;
    if (ipVersion !== 4) throw invalidInput('ip_version', 'only IPv4 subnets (ip_version 4) are supported');
    for (const f of [
      'ipv6_ra_mode',
      'ipv6_address_mode',
      'subnetpool_id',
      'use_default_subnetpool',
      'service_types',
      'segment_id',
      'prefixlen',
    ])
      emptyOnly(b, f);
    const cidr = requiredString(b.cidr, 'cidr', 64);
    const parsed = parseIpv4Cidr(cidr);
    if (!parsed) throw invalidInput('cidr', `'${cidr}' is not a valid IPv4 subnet like 10.0.0.0/24`);
    if (parsed.hostBits) throw invalidInput('cidr', `'${cidr}' has host bits set: give the network address`);
    const name = optionalString(b.name, 'name') ?? '';
    const description = optionalString(b.description, 'description') ?? '';
    const enableDhcp = optionalBoolean(b.enable_dhcp, 'enable_dhcp') ?? true;
    const gatewayGiven = 'gateway_ip' in b;
    const gateway = gatewayGiven ? (optionalString(b.gateway_ip, 'gateway_ip', 64) ?? null) : undefined;
    const pools = objectList(b.allocation_pools, 'allocation_pools')?.map((p, i) => {
      onlyKnown(p, ['start', 'end']);
      return {
        start: requiredString(p.start, `allocation_pools.${i}.start`, 64),
        end: requiredString(p.end, `allocation_pools.${i}.end`, 64),
      };
    });
    const dns = stringList(b.dns_nameservers, 'dns_nameservers');
    const routes = objectList(b.host_routes, 'host_routes')?.map((r, i) => {
      onlyKnown(r, ['destination', 'nexthop']);
      return {
        destination: requiredString(r.destination, `host_routes.${i}.destination`, 64),
        nexthop: requiredString(r.nexthop, `host_routes.${i}.nexthop`, 64),
      };
    });
    const network = await this.findNetwork(c, networkId);
    // A subnet belongs to its network's project; only that project (or the admin) adds one.
    const owner = this.owner(
      c,
      { ...b, project_id: b.project_id ?? b.tenant_id ?? network.tenant, tenant_id: undefined },
      'create_subnet',
    );
    if (owner !== network.tenant) throw policyRefusal('create_subnet');
    const vpc = this.options.vpc;
    const s = await this.counted(
      owner,
      { subnets: 1 },
      SUBNET,
      { description, enableDhcp },
      () =>
        vpc.createSubnet({
          tenant: owner,
          networkId: network.id,
          name,
          cidr,
          ...(gateway !== undefined ? { gateway } : {}),
          ...(pools ? { allocationPools: pools } : {}),
          ...(dns ? { dnsNameservers: dns } : {}),
          ...(routes ? { hostRoutes: routes } : {}),
        }),
      (made) => vpc.deleteSubnet(made.id),
    );
    this.sendOne(ctx, 201, 'subnet', subnetView(s, await this.attrs(SUBNET, s.id)));
  }

  private async updateSubnet(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const s = await this.findSubnet(c, ctx.params.id as string);
    const b = await this.body(ctx, 'subnet');
    onlyKnown(b, ['name', 'description', 'enable_dhcp', 'dns_nameservers', 'host_routes']);
    this.mayWrite(c, s.tenant, 'update_subnet');
    const name = optionalString(b.name, 'name');
    const description = optionalString(b.description, 'description');
    const enableDhcp = optionalBoolean(b.enable_dhcp, 'enable_dhcp');
    const dns = stringList(b.dns_nameservers, 'dns_nameservers');
    const routes = objectList(b.host_routes, 'host_routes')?.map((r, i) => ({
      destination: requiredString(r.destination, `host_routes.${i}.destination`, 64),
      nexthop: requiredString(r.nexthop, `host_routes.${i}.nexthop`, 64),
    }));
    const updated = await this.options.vpc.updateSubnet(s.id, {
      ...(name !== undefined ? { name } : {}),
      ...(dns ? { dnsNameservers: dns } : {}),
      ...(routes ? { hostRoutes: routes } : {}),
    });
    const a = await updateAttrs(this.store, 'subnets', s.id, {
      ...(description !== undefined ? { description } : {}),
      ...(enableDhcp !== undefined ? { enableDhcp } : {}),
    });
    this.sendOne(ctx, 200, 'subnet', subnetView(updated, a));
  }

  private async deleteSubnet(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const s = await this.findSubnet(c, ctx.params.id as string);
    this.mayWrite(c, s.tenant, 'delete_subnet');
    await this.inUse('SubnetInUse', () => this.options.vpc.deleteSubnet(s.id));
    if ((await this.attrs(SUBNET, s.id)).counted)
      await this.release(s.tenant, { subnets: 1 }, 'subnet', s.id);
    await deleteAttrs(this.store, 'subnets', s.id);
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- ports

  private async listPorts(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const [ports, attrs] = await Promise.all([this.options.vpc.listPorts(), this.attrsOf(PORT)]);
    const items = ports
      .filter((p) => this.portVisible(c, p))
      .map((p) => portView(p, readOr(attrs, p.id), c.admin));
    this.sendList(ctx, 'ports', items);
  }

  private findPort(c: Caller, id: string): Promise<PortRecord> {
    return this.find(
      PORT,
      id,
      (i) => this.options.vpc.getPort(i),
      (p) => this.portVisible(c, p),
    );
  }

  private async showPort(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const p = await this.findPort(c, ctx.params.id as string);
    this.sendOne(ctx, 200, 'port', portView(p, await this.attrs(PORT, p.id), c.admin));
  }

  private async fixedIps(
    networkId: string,
    value: unknown,
  ): Promise<{ subnetId: string; ip?: string }[] | undefined> {
    const list = objectList(value, 'fixed_ips');
    if (!list) return undefined;
    if (list.length === 0) throw invalidInput('fixed_ips', 'ports without addresses are not supported');
    const subnets = (await this.options.vpc.listSubnets()).filter((s) => s.networkId === networkId);
    return list.map((f, i) => {
      onlyKnown(f, ['subnet_id', 'ip_address']);
      const ip = optionalString(f.ip_address, `fixed_ips.${i}.ip_address`, 64);
      let subnetId = optionalString(f.subnet_id, `fixed_ips.${i}.subnet_id`, 64);
      if (subnetId === undefined) {
        if (ip === undefined) throw invalidInput(`fixed_ips.${i}`, 'needs a subnet_id or an ip_address');
        subnetId = subnets.find((s) => {
          const net = parseIpv4Cidr(s.cidr);
          return net !== undefined && ipv4InNetwork(net, ip);
        })?.id;
        if (subnetId === undefined)
          throw invalidInput(`fixed_ips.${i}.ip_address`, `no subnet of network ${networkId} holds ${ip}`);
      }
      return { subnetId, ...(ip !== undefined ? { ip } : {}) };
    });
  }

  private async createPort(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const b = await this.body(ctx, 'port');
    onlyKnown(b, [
      'name',
      'description',
      'network_id',
      'admin_state_up',
      'mac_address',
      'fixed_ips',
      'device_id',
      'device_owner',
      'security_groups',
      'port_security_enabled',
      'project_id',
      'tenant_id',
      'binding:host_id',
      'binding:vnic_type',
      'binding:profile',
      'allowed_address_pairs',
      'extra_dhcp_opts',
      'qos_policy_id',
      'dns_name',
    ]);
    const networkId = requiredString(b.network_id, 'network_id', 64);
    const name = optionalString(b.name, 'name') ?? '';
    const description = optionalString(b.description, 'description') ?? '';
    const adminStateUp = optionalBoolean(b.admin_state_up, 'admin_state_up') ?? true;
    const mac = optionalString(b.mac_address, 'mac_address', 32);
    const deviceId = optionalString(b.device_id, 'device_id') ?? '';
    const deviceOwner = optionalString(b.device_owner, 'device_owner') ?? '';
    const groups = stringList(b.security_groups, 'security_groups');
    const host = optionalString(b['binding:host_id'], 'binding:host_id', 64);
    const vnic = optionalString(b['binding:vnic_type'], 'binding:vnic_type');
    if (vnic !== undefined && vnic !== 'normal')
      throw invalidInput('binding:vnic_type', 'only normal is supported');
    const profile = b['binding:profile'];
    if (
      profile !== undefined &&
      profile !== null &&
      (typeof profile !== 'object' || Object.keys(profile).length)
    )
      throw invalidInput('binding:profile', 'is not supported by this cloud');
    for (const f of ['allowed_address_pairs', 'extra_dhcp_opts', 'qos_policy_id', 'dns_name'])
      emptyOnly(b, f);
    if (host && !c.admin) throw policyRefusal('create_port:binding:host_id');
    const network = await this.findNetwork(c, networkId);
    const owner = this.owner(c, b, 'create_port');
    const portSecurity =
      optionalBoolean(b.port_security_enabled, 'port_security_enabled') ??
      (await this.attrs(NETWORK, network.id)).portSecurity;
    if (!portSecurity && groups?.length)
      throw invalidInput('security_groups', 'a port with port security disabled cannot have security groups');
    const fixedIps = await this.fixedIps(network.id, b.fixed_ips);
    const securityGroups = groups ?? (portSecurity ? [(await this.ensureDefaultGroup(owner)).id] : []);
    const vpc = this.options.vpc;
    const p = await this.counted(
      owner,
      { ports: 1 },
      PORT,
      { description, adminStateUp, deviceId, deviceOwner },
      async () => {
        const made = await vpc.createPort({
          tenant: owner,
          networkId: network.id,
          name,
          ...(fixedIps ? { fixedIps } : {}),
          ...(mac !== undefined ? { mac } : {}),
          securityGroups,
          portSecurity,
        });
        // Binding names the tap after the port id, which only exists now (as Nova's os-vif does).
        return host ? vpc.bindPort(made.id, { host, device: { kind: 'tap', name: tapName(made.id) } }) : made;
      },
      (made) => vpc.deletePort(made.id),
    );
    this.sendOne(ctx, 201, 'port', portView(p, await this.attrs(PORT, p.id), c.admin));
  }

  private async updatePort(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const p = await this.findPort(c, ctx.params.id as string);
    const b = await this.body(ctx, 'port');
    onlyKnown(b, [
      'name',
      'description',
      'admin_state_up',
      'device_id',
      'device_owner',
      'security_groups',
      'port_security_enabled',
      'binding:host_id',
      'binding:vnic_type',
      'binding:profile',
      'allowed_address_pairs',
      'extra_dhcp_opts',
    ]);
    this.mayWrite(c, p.tenant, 'update_port');
    const name = optionalString(b.name, 'name');
    const description = optionalString(b.description, 'description');
    const adminStateUp = optionalBoolean(b.admin_state_up, 'admin_state_up');
    const deviceId = optionalString(b.device_id, 'device_id');
    const deviceOwner = optionalString(b.device_owner, 'device_owner');
    const groups = stringList(b.security_groups, 'security_groups');
    const portSecurity = optionalBoolean(b.port_security_enabled, 'port_security_enabled');
    const hostGiven = 'binding:host_id' in b;
    const host = optionalString(b['binding:host_id'], 'binding:host_id', 64);
    for (const f of ['allowed_address_pairs', 'extra_dhcp_opts', 'binding:profile']) emptyOnly(b, f);
    const vnic = optionalString(b['binding:vnic_type'], 'binding:vnic_type');
    if (vnic !== undefined && vnic !== 'normal')
      throw invalidInput('binding:vnic_type', 'only normal is supported');
    if (hostGiven && !c.admin) throw policyRefusal('update_port:binding:host_id');
    if (p.owner.kind !== 'instance' && (groups || portSecurity !== undefined || hostGiven))
      throw neutronConflict('L3PortInUse', `Port ${p.id} belongs to router ${p.owner.routerId}.`);
    const vpc = this.options.vpc;
    let updated = p;
    if (name !== undefined || groups || portSecurity !== undefined)
      updated = await vpc.updatePort(p.id, {
        ...(name !== undefined ? { name } : {}),
        ...(groups ? { securityGroups: groups } : {}),
        ...(portSecurity !== undefined ? { portSecurity } : {}),
      });
    if (hostGiven)
      updated = host
        ? await vpc.bindPort(p.id, { host, device: { kind: 'tap', name: tapName(p.id) } })
        : await vpc.unbindPort(p.id);
    const a = await updateAttrs(this.store, 'ports', p.id, {
      ...(description !== undefined ? { description } : {}),
      ...(adminStateUp !== undefined ? { adminStateUp } : {}),
      ...(deviceId !== undefined ? { deviceId } : {}),
      ...(deviceOwner !== undefined ? { deviceOwner } : {}),
    });
    this.sendOne(ctx, 200, 'port', portView(updated, a, c.admin));
  }

  private async deletePort(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const p = await this.findPort(c, ctx.params.id as string);
    this.mayWrite(c, p.tenant, 'delete_port');
    if (p.owner.kind !== 'instance')
      throw neutronConflict(
        'L3PortInUse',
        `Port ${p.id} cannot be deleted directly via the port API: it is an interface of router ${p.owner.routerId}.`,
      );
    await this.options.vpc.deletePort(p.id);
    if ((await this.attrs(PORT, p.id)).counted) await this.release(p.tenant, { ports: 1 }, 'port', p.id);
    await deleteAttrs(this.store, 'ports', p.id);
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- routers

  private async listRouters(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const [snap, attrs] = await Promise.all([this.options.vpc.snapshot(), this.attrsOf(ROUTER)]);
    const items = snap.routers
      .filter((r) => this.owns(c, r.tenant))
      .map((r) => routerView(r, readOr(attrs, r.id), snap));
    this.sendList(ctx, 'routers', items);
  }

  private findRouter(c: Caller, id: string): Promise<RouterRecord> {
    return this.find(
      ROUTER,
      id,
      (i) => this.options.vpc.getRouter(i),
      (r) => this.owns(c, r.tenant),
    );
  }

  private async routerBody(r: RouterRecord): Promise<Body> {
    return routerView(r, await this.attrs(ROUTER, r.id), await this.options.vpc.snapshot());
  }

  private async showRouter(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const r = await this.findRouter(c, ctx.params.id as string);
    this.sendOne(ctx, 200, 'router', await this.routerBody(r));
  }

  /** The host a new router goes on: the first registered Vpc host by name, else the configured fallback. */
  private async routerHost(): Promise<string> {
    const hosts = (await this.options.vpc.listHosts()).map((h) => h.name).sort();
    return hosts[0] ?? this.options.routerHost ?? DEFAULT_ROUTER_HOST;
  }

  /** Parses `external_gateway_info`: `null`/`{}` clears it; otherwise an external network the caller sees. */
  private async gatewayInfo(
    c: Caller,
    value: unknown,
  ): Promise<{ network: NetworkRecord; snat: boolean | undefined } | null> {
    if (value === null) return null;
    if (typeof value !== 'object' || Array.isArray(value))
      throw invalidInput('external_gateway_info', 'must be an object');
    const g = value as Body;
    if (Object.keys(g).length === 0) return null;
    onlyKnown(g, ['network_id', 'enable_snat', 'external_fixed_ips']);
    const networkId = requiredString(g.network_id, 'external_gateway_info.network_id', 64);
    const snat = optionalBoolean(g.enable_snat, 'external_gateway_info.enable_snat');
    if (snat !== undefined && !c.admin)
      throw policyRefusal('update_router:external_gateway_info:enable_snat');
    if (Array.isArray(g.external_fixed_ips) ? g.external_fixed_ips.length : g.external_fixed_ips)
      throw invalidInput('external_gateway_info.external_fixed_ips', 'is not supported by this cloud');
    let network: NetworkRecord;
    try {
      network = await this.findNetwork(c, networkId);
    } catch (error) {
      if (isNubesError(error, 'NotFound'))
        throw invalidInput('external_gateway_info.network_id', `network ${networkId} not found`);
      throw error;
    }
    if (!network.external)
      throw invalidInput(
        'external_gateway_info.network_id',
        `network ${networkId} is not an external network`,
      );
    return { network, snat };
  }

  /** Makes a router's gateway what was asked: cleared, kept (only SNAT changed) or moved to another network. */
  private async applyGateway(
    r: RouterRecord,
    info: { network: NetworkRecord; snat: boolean | undefined } | null,
  ): Promise<void> {
    const vpc = this.options.vpc;
    const current = r.gatewayPortId ? await vpc.getPort(r.gatewayPortId) : undefined;
    if (info === null) {
      if (current)
        await this.inUse('RouterExternalGatewayInUseByFloatingIp', () => vpc.clearRouterGateway(r.id));
      return;
    }
    if (info.snat !== undefined && info.snat !== r.snat) await vpc.updateRouter(r.id, { snat: info.snat });
    if (current?.networkId === info.network.id) return;
    if (current)
      await this.inUse('RouterExternalGatewayInUseByFloatingIp', () => vpc.clearRouterGateway(r.id));
    await vpc.setRouterGateway(r.id, info.network.id);
  }

  private async createRouter(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const b = await this.body(ctx, 'router');
    onlyKnown(b, [
      'name',
      'description',
      'admin_state_up',
      'external_gateway_info',
      'project_id',
      'tenant_id',
      'distributed',
      'ha',
      'availability_zone_hints',
      'flavor_id',
    ]);
    const owner = this.owner(c, b, 'create_router');
    const name = optionalString(b.name, 'name') ?? '';
    const description = optionalString(b.description, 'description') ?? '';
    const adminStateUp = optionalBoolean(b.admin_state_up, 'admin_state_up') ?? true;
    for (const f of ['distributed', 'ha', 'availability_zone_hints', 'flavor_id']) emptyOnly(b, f);
    const gateway =
      b.external_gateway_info === undefined ? null : await this.gatewayInfo(c, b.external_gateway_info);
    const vpc = this.options.vpc;
    const host = await this.routerHost();
    const r = await this.counted(
      owner,
      { routers: 1 },
      ROUTER,
      { description, adminStateUp },
      async () => {
        const made = await vpc.createRouter({
          tenant: owner,
          name,
          host,
          ...(gateway?.snat !== undefined ? { snat: gateway.snat } : {}),
        });
        if (gateway) {
          try {
            await vpc.setRouterGateway(made.id, gateway.network.id);
          } catch (error) {
            await vpc.deleteRouter(made.id).catch(() => {});
            throw error;
          }
        }
        return vpc.getRouter(made.id);
      },
      (made) => vpc.deleteRouter(made.id),
    );
    this.sendOne(ctx, 201, 'router', await this.routerBody(r));
  }

  private async updateRouter(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const r = await this.findRouter(c, ctx.params.id as string);
    const b = await this.body(ctx, 'router');
    onlyKnown(b, ['name', 'description', 'admin_state_up', 'external_gateway_info', 'routes']);
    this.mayWrite(c, r.tenant, 'update_router');
    const name = optionalString(b.name, 'name');
    const description = optionalString(b.description, 'description');
    const adminStateUp = optionalBoolean(b.admin_state_up, 'admin_state_up');
    emptyOnly(b, 'routes');
    const gateway =
      'external_gateway_info' in b ? await this.gatewayInfo(c, b.external_gateway_info) : undefined;
    if (gateway !== undefined) await this.applyGateway(r, gateway);
    if (name !== undefined) await this.options.vpc.updateRouter(r.id, { name });
    await updateAttrs(this.store, 'routers', r.id, {
      ...(description !== undefined ? { description } : {}),
      ...(adminStateUp !== undefined ? { adminStateUp } : {}),
    });
    this.sendOne(ctx, 200, 'router', await this.routerBody(await this.options.vpc.getRouter(r.id)));
  }

  private async deleteRouter(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const r = await this.findRouter(c, ctx.params.id as string);
    this.mayWrite(c, r.tenant, 'delete_router');
    await this.inUse('RouterInUse', () => this.options.vpc.deleteRouter(r.id));
    if ((await this.attrs(ROUTER, r.id)).counted)
      await this.release(r.tenant, { routers: 1 }, 'router', r.id);
    await deleteAttrs(this.store, 'routers', r.id);
    sendEmpty(ctx, 204);
  }

  private async routerInterface(ctx: ApiContext, action: 'add' | 'remove'): Promise<void> {
    const c = this.caller(ctx);
    const r = await this.findRouter(c, ctx.params.id as string);
    const b = await readJson(ctx.request);
    onlyKnown(b, ['subnet_id', 'port_id']);
    this.mayWrite(c, r.tenant, `${action}_router_interface`);
    const subnetId = optionalString(b.subnet_id, 'subnet_id', 64);
    const portId = optionalString(b.port_id, 'port_id', 64);
    if ((subnetId === undefined) === (portId === undefined))
      throw invalidInput('subnet_id', 'give either subnet_id or port_id');
    const vpc = this.options.vpc;
    let port: PortRecord;
    if (action === 'add') {
      if (portId !== undefined)
        throw invalidInput('port_id', 'adding an existing port is not supported: add the subnet instead');
      const subnet = await this.findSubnet(c, subnetId as string);
      port = await vpc.addRouterInterface(r.id, subnet.id);
    } else {
      const interfaces = await Promise.all(r.interfaces.map((id) => vpc.getPort(id)));
      const found = interfaces.find((p) =>
        portId !== undefined ? p.id === portId : p.fixedIps.some((f) => f.subnetId === subnetId),
      );
      if (!found)
        throw new NubesError(
          'NotFound',
          `Router ${r.id} has no interface ${portId ?? `on subnet ${subnetId}`}.`,
          {
            details: { neutronType: 'RouterInterfaceNotFound' },
          },
        );
      port = found;
      const subnet = found.fixedIps[0]?.subnetId as string;
      await this.inUse('RouterInterfaceInUseByFloatingIP', () => vpc.removeRouterInterface(r.id, subnet));
    }
    const subnets = port.fixedIps.map((f) => f.subnetId);
    sendJson(ctx, 200, {
      id: r.id,
      tenant_id: r.tenant,
      project_id: r.tenant,
      port_id: port.id,
      network_id: port.networkId,
      subnet_id: subnets[0],
      subnet_ids: subnets,
      tags: [],
    });
  }

  // ---------------------------------------------------------------- floating IPs

  private async listFloatingIps(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const [fips, attrs] = await Promise.all([this.options.vpc.listFloatingIps(), this.attrsOf(FLOATINGIP)]);
    const items = fips
      .filter((f) => this.owns(c, f.tenant))
      .map((f) => floatingIpView(f, readOr(attrs, f.id)));
    this.sendList(ctx, 'floatingips', items);
  }

  private findFloatingIp(c: Caller, id: string): Promise<FloatingIpRecord> {
    return this.find(
      FLOATINGIP,
      id,
      (i) => this.options.vpc.getFloatingIp(i),
      (f) => this.owns(c, f.tenant),
    );
  }

  private async showFloatingIp(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const f = await this.findFloatingIp(c, ctx.params.id as string);
    this.sendOne(ctx, 200, 'floatingip', floatingIpView(f, await this.attrs(FLOATINGIP, f.id)));
  }

  /** Associates a floating IP with a port the caller sees; `fixed_ip_address` must be the port's address. */
  private async associate(
    c: Caller,
    fip: FloatingIpRecord,
    portId: string,
    fixedIp: string | undefined,
  ): Promise<FloatingIpRecord> {
    let port: PortRecord;
    try {
      port = await this.findPort(c, portId);
    } catch (error) {
      if (isNubesError(error, 'NotFound')) throw invalidInput('port_id', `port ${portId} not found`);
      throw error;
    }
    if (fixedIp !== undefined && port.fixedIps[0]?.ip !== fixedIp)
      throw invalidInput('fixed_ip_address', `${fixedIp} is not the first fixed IP of port ${port.id}`);
    try {
      return await this.options.vpc.associateFloatingIp(fip.id, port.id);
    } catch (error) {
      // No router joins the port's subnet to the external network: Neutron's ExternalGatewayForFloatingIPNotFound.
      if (isNubesError(error, 'InvalidInput') && /no router/.test(error.message))
        throw new NubesError(
          'NotFound',
          `External network ${fip.networkId} is not reachable from subnet of port ${port.id}.`,
          {
            details: { neutronType: 'ExternalGatewayForFloatingIPNotFound' },
          },
        );
      throw error;
    }
  }

  private async createFloatingIp(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const b = await this.body(ctx, 'floatingip');
    onlyKnown(b, [
      'floating_network_id',
      'floating_ip_address',
      'subnet_id',
      'port_id',
      'fixed_ip_address',
      'description',
      'project_id',
      'tenant_id',
      'qos_policy_id',
      'dns_name',
      'dns_domain',
    ]);
    const networkId = requiredString(b.floating_network_id, 'floating_network_id', 64);
    const ip = optionalString(b.floating_ip_address, 'floating_ip_address', 64);
    const subnetId = optionalString(b.subnet_id, 'subnet_id', 64);
    const portId = optionalString(b.port_id, 'port_id', 64);
    const fixedIp = optionalString(b.fixed_ip_address, 'fixed_ip_address', 64);
    const description = optionalString(b.description, 'description') ?? '';
    for (const f of ['qos_policy_id', 'dns_name', 'dns_domain']) emptyOnly(b, f);
    const owner = this.owner(c, b, 'create_floatingip');
    let network: NetworkRecord;
    try {
      network = await this.findNetwork(c, networkId);
    } catch (error) {
      if (isNubesError(error, 'NotFound'))
        throw invalidInput('floating_network_id', `network ${networkId} not found`);
      throw error;
    }
    if (!network.external)
      throw invalidInput('floating_network_id', `network ${networkId} is not an external network`);
    if (subnetId !== undefined) {
      const subnet = (await this.options.vpc.listSubnets()).find(
        (s) => s.id === subnetId && s.networkId === network.id,
      );
      if (!subnet) throw invalidInput('subnet_id', `is not a subnet of network ${network.id}`);
      if (
        ip === undefined &&
        (await this.options.vpc.listSubnets()).filter((s) => s.networkId === network.id)[0]?.id !== subnet.id
      )
        throw invalidInput(
          'subnet_id',
          'choosing a subnet other than the first one is not supported: give floating_ip_address',
        );
    }
    const vpc = this.options.vpc;
    const f = await this.counted(
      owner,
      { floatingIps: 1 },
      FLOATINGIP,
      { description },
      async () => {
        const made = await vpc.createFloatingIp({
          tenant: owner,
          networkId: network.id,
          ...(ip ? { ip } : {}),
        });
        if (portId === undefined) return made;
        try {
          return await this.associate(c, made, portId, fixedIp);
        } catch (error) {
          await vpc.deleteFloatingIp(made.id).catch(() => {});
          throw error;
        }
      },
      (made) => vpc.deleteFloatingIp(made.id),
    );
    this.sendOne(ctx, 201, 'floatingip', floatingIpView(f, await this.attrs(FLOATINGIP, f.id)));
  }

  private async updateFloatingIp(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const f = await this.findFloatingIp(c, ctx.params.id as string);
    const b = await this.body(ctx, 'floatingip');
    onlyKnown(b, ['port_id', 'fixed_ip_address', 'description', 'qos_policy_id']);
    this.mayWrite(c, f.tenant, 'update_floatingip');
    const description = optionalString(b.description, 'description');
    const portGiven = 'port_id' in b;
    const portId = optionalString(b.port_id, 'port_id', 64);
    const fixedIp = optionalString(b.fixed_ip_address, 'fixed_ip_address', 64);
    emptyOnly(b, 'qos_policy_id');
    let updated = f;
    if (portGiven)
      updated = portId
        ? await this.associate(c, f, portId, fixedIp)
        : await this.options.vpc.disassociateFloatingIp(f.id);
    const a = await updateAttrs(
      this.store,
      'floatingips',
      f.id,
      description !== undefined ? { description } : {},
    );
    this.sendOne(ctx, 200, 'floatingip', floatingIpView(updated, a));
  }

  private async deleteFloatingIp(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const f = await this.findFloatingIp(c, ctx.params.id as string);
    this.mayWrite(c, f.tenant, 'delete_floatingip');
    await this.options.vpc.deleteFloatingIp(f.id);
    if ((await this.attrs(FLOATINGIP, f.id)).counted)
      await this.release(f.tenant, { floatingIps: 1 }, 'floatingip', f.id);
    await deleteAttrs(this.store, 'floatingips', f.id);
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- security groups

  private async groupBody(g: SecurityGroupRecord): Promise<Body> {
    const [a, rules] = await Promise.all([this.attrs(SECGROUP, g.id), this.attrsOf(RULE)]);
    return securityGroupView(g, a, (id) => readOr(rules, id, a));
  }

  private async listSecurityGroups(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    // Neutron makes the caller's default group on first use, so even an empty project lists it.
    if (c.token.project) await this.ensureDefaultGroup(c.project);
    const [groups, attrs, rules] = await Promise.all([
      this.options.vpc.listSecurityGroups(),
      this.attrsOf(SECGROUP),
      this.attrsOf(RULE),
    ]);
    const items = groups
      .filter((g) => this.owns(c, g.tenant))
      .map((g) => {
        const a = readOr(attrs, g.id);
        return securityGroupView(g, a, (id) => readOr(rules, id, a));
      });
    this.sendList(ctx, 'security_groups', items);
  }

  private findGroup(c: Caller, id: string): Promise<SecurityGroupRecord> {
    return this.find(
      SECGROUP,
      id,
      (i) => this.options.vpc.getSecurityGroup(i),
      (g) => this.owns(c, g.tenant),
    );
  }

  private async showSecurityGroup(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    if (c.token.project) await this.ensureDefaultGroup(c.project);
    const g = await this.findGroup(c, ctx.params.id as string);
    this.sendOne(ctx, 200, 'security_group', await this.groupBody(g));
  }

  private async createSecurityGroup(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const b = await this.body(ctx, 'security_group');
    onlyKnown(b, ['name', 'description', 'project_id', 'tenant_id', 'stateful', 'shared']);
    const owner = this.owner(c, b, 'create_security_group');
    const name = optionalString(b.name, 'name') ?? '';
    const description = optionalString(b.description, 'description') ?? '';
    if (optionalBoolean(b.stateful, 'stateful') === false)
      throw invalidInput('stateful', 'stateless security groups are not supported');
    emptyOnly(b, 'shared');
    await this.ensureDefaultGroup(owner);
    if (name === 'default')
      throw neutronConflict('SecurityGroupDefaultAlreadyExists', 'Default security group already exists.');
    const vpc = this.options.vpc;
    // A new group comes with Neutron's two allow-all egress rules; they count as rules.
    const g = await this.counted(
      owner,
      { securityGroups: 1, securityGroupRules: 2 },
      SECGROUP,
      { description },
      () => vpc.createSecurityGroup({ tenant: owner, name }),
      (made) => vpc.deleteSecurityGroup(made.id),
    );
    this.sendOne(ctx, 201, 'security_group', await this.groupBody(g));
  }

  private async updateSecurityGroup(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const g = await this.findGroup(c, ctx.params.id as string);
    const b = await this.body(ctx, 'security_group');
    onlyKnown(b, ['name', 'description', 'stateful']);
    this.mayWrite(c, g.tenant, 'update_security_group');
    const name = optionalString(b.name, 'name');
    const description = optionalString(b.description, 'description');
    if (optionalBoolean(b.stateful, 'stateful') === false)
      throw invalidInput('stateful', 'stateless security groups are not supported');
    if (name !== undefined && name !== g.name && (g.name === 'default' || name === 'default'))
      throw neutronConflict(
        'SecurityGroupCannotUpdateDefault',
        'Updating default security group not allowed.',
      );
    const updated = name !== undefined ? await this.options.vpc.updateSecurityGroup(g.id, { name }) : g;
    await updateAttrs(this.store, 'secgroups', g.id, description !== undefined ? { description } : {});
    this.sendOne(ctx, 200, 'security_group', await this.groupBody(updated));
  }

  private async deleteSecurityGroup(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const g = await this.findGroup(c, ctx.params.id as string);
    this.mayWrite(c, g.tenant, 'delete_security_group');
    if (g.name === 'default' && !c.admin)
      throw neutronConflict(
        'SecurityGroupCannotRemoveDefault',
        'Removing default security group not allowed.',
      );
    await this.inUse('SecurityGroupInUse', () => this.options.vpc.deleteSecurityGroup(g.id));
    const a = await this.attrs(SECGROUP, g.id);
    const countedRules = g.rules.filter((r) => !a.uncountedRules.includes(r.id)).length;
    await this.release(
      g.tenant,
      { securityGroups: a.counted ? 1 : 0, securityGroupRules: countedRules },
      'secgroup',
      g.id,
    );
    for (const r of g.rules) await deleteAttrs(this.store, 'rules', r.id);
    await deleteAttrs(this.store, 'secgroups', g.id);
    if (g.name === 'default') await forgetDefaultSecurityGroup(this.store, g.tenant, g.id);
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- security group rules

  private async listRules(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    if (c.token.project) await this.ensureDefaultGroup(c.project);
    const [groups, groupAttrs, rules] = await Promise.all([
      this.options.vpc.listSecurityGroups(),
      this.attrsOf(SECGROUP),
      this.attrsOf(RULE),
    ]);
    const items = groups
      .filter((g) => this.owns(c, g.tenant))
      .flatMap((g) => g.rules.map((r) => ruleView(g, r, readOr(rules, r.id, readOr(groupAttrs, g.id)))));
    this.sendList(ctx, 'security_group_rules', items);
  }

  /** The group holding a rule and the rule, `SecurityGroupRuleNotFound` when the caller sees neither. */
  private async findRule(
    c: Caller,
    id: string,
  ): Promise<{ group: SecurityGroupRecord; rule: SecurityGroupRule }> {
    for (const group of await this.options.vpc.listSecurityGroups()) {
      const rule = group.rules.find((r) => r.id === id);
      if (rule && this.owns(c, group.tenant)) return { group, rule };
    }
    throw neutronNotFound(RULE.noun, id);
  }

  private async showRule(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const { group, rule } = await this.findRule(c, ctx.params.id as string);
    const [rules, groupAttrs] = await Promise.all([this.attrsOf(RULE), this.attrs(SECGROUP, group.id)]);
    this.sendOne(ctx, 200, 'security_group_rule', ruleView(group, rule, readOr(rules, rule.id, groupAttrs)));
  }

  private async createRule(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const b = await this.body(ctx, 'security_group_rule');
    onlyKnown(b, [
      'security_group_id',
      'direction',
      'ethertype',
      'protocol',
      'port_range_min',
      'port_range_max',
      'remote_ip_prefix',
      'remote_group_id',
      'remote_address_group_id',
      'description',
      'project_id',
      'tenant_id',
    ]);
    const groupId = requiredString(b.security_group_id, 'security_group_id', 64);
    const direction = requiredString(b.direction, 'direction', 16);
    if (direction !== 'ingress' && direction !== 'egress')
      throw invalidInput('direction', 'must be ingress or egress');
    const ethertype = optionalString(b.ethertype, 'ethertype', 8) ?? 'IPv4';
    if (ethertype !== 'IPv4' && ethertype !== 'IPv6') throw invalidInput('ethertype', 'must be IPv4 or IPv6');
    const protocol = ruleProtocol(b.protocol);
    const min = optionalInt(b.port_range_min, 'port_range_min', 0, 65535);
    const max = optionalInt(b.port_range_max, 'port_range_max', 0, 65535);
    const remoteIp = optionalString(b.remote_ip_prefix, 'remote_ip_prefix', 64);
    const remoteGroup = optionalString(b.remote_group_id, 'remote_group_id', 64);
    const description = optionalString(b.description, 'description') ?? '';
    emptyOnly(b, 'remote_address_group_id');
    const group = await this.findGroup(c, groupId);
    this.owner(c, { project_id: b.project_id ?? b.tenant_id ?? group.tenant }, 'create_security_group_rule');
    if (remoteGroup !== undefined)
      await this.findGroup(c, remoteGroup).catch((error: unknown) => {
        if (isNubesError(error, 'NotFound'))
          throw invalidInput('remote_group_id', `security group ${remoteGroup} not found`);
        throw error;
      });
    const input: RuleInput = {
      direction,
      ethertype,
      ...(protocol !== undefined ? { protocol } : {}),
      ...(min !== undefined ? { portRangeMin: min } : {}),
      ...(max !== undefined ? { portRangeMax: max } : {}),
      ...(remoteIp !== undefined ? { remoteIpPrefix: remoteIp } : {}),
      ...(remoteGroup !== undefined ? { remoteGroupId: remoteGroup } : {}),
    };
    // Neutron fills in the whole range when only the minimum port is given for TCP/UDP/SCTP.
    if (
      min !== undefined &&
      max === undefined &&
      (protocol === 'tcp' || protocol === 'udp' || protocol === 'sctp')
    )
      input.portRangeMax = min;
    const duplicate = group.rules.find((r) => sameRule(r, input));
    if (duplicate)
      throw neutronConflict(
        'SecurityGroupRuleExists',
        `Security group rule already exists. Rule id is ${duplicate.id}.`,
      );
    const vpc = this.options.vpc;
    const rule = await this.counted(
      group.tenant,
      { securityGroupRules: 1 },
      RULE,
      { description },
      () => vpc.addRule(group.id, input),
      (made) => vpc.removeRule(group.id, made.id),
    );
    this.sendOne(ctx, 201, 'security_group_rule', ruleView(group, rule, await this.attrs(RULE, rule.id)));
  }

  private async deleteRule(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const { group, rule } = await this.findRule(c, ctx.params.id as string);
    this.mayWrite(c, group.tenant, 'delete_security_group_rule');
    await this.options.vpc.removeRule(group.id, rule.id);
    const groupAttrs = await this.attrs(SECGROUP, group.id);
    if (!groupAttrs.uncountedRules.includes(rule.id))
      await this.release(group.tenant, { securityGroupRules: 1 }, 'rule', rule.id);
    await deleteAttrs(this.store, 'rules', rule.id);
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- quotas

  /** Members read their own project's quota; the admin reads and sets anyone's. */
  private quotaProject(ctx: ApiContext, c: Caller, write: boolean): string {
    const target = ctx.params.project as string;
    if (c.admin) return target;
    if (write) throw policyRefusal('update_quota');
    if (target !== c.project) throw policyRefusal('get_quota');
    return target;
  }

  private async showQuota(ctx: ApiContext, what: 'limits' | 'default' | 'details'): Promise<void> {
    const c = this.caller(ctx);
    const target = this.quotaProject(ctx, c, false);
    const quota = this.options.quota;
    const body: Body = {};
    if (what === 'default') {
      const defaults = await quota.defaults();
      for (const r of QUOTA_RESOURCES) body[QUOTA_NAMES[r] as string] = defaults[r] ?? -1;
    } else {
      const usage = await quota.usage(target);
      for (const r of QUOTA_RESOURCES) {
        const u = usage.resources[r];
        body[QUOTA_NAMES[r] as string] =
          what === 'limits'
            ? (u?.limit ?? -1)
            : { limit: u?.limit ?? -1, used: u?.inUse ?? 0, reserved: u?.reserved ?? 0 };
      }
    }
    sendJson(ctx, 200, { quota: body });
  }

  private async updateQuota(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const target = this.quotaProject(ctx, c, true);
    const b = await this.body(ctx, 'quota');
    const byName = new Map(Object.entries(QUOTA_NAMES).map(([resource, name]) => [name, resource]));
    const limits: Record<string, number> = {};
    for (const [key, value] of Object.entries(b)) {
      // openstackclient sends these flags along with the limits; this cloud always checks and never forces.
      if (key === 'check_limit' || key === 'force') {
        optionalBoolean(value, key);
        continue;
      }
      const resource = byName.get(key);
      if (!resource) throw invalidInput(key, 'is not a quota resource of this cloud');
      limits[resource] = optionalInt(value, key, -1, 2_147_483_647) ?? -1;
    }
    await this.options.quota.setLimits(target, limits);
    await this.showQuota(ctx, 'limits');
  }

  private async resetQuota(ctx: ApiContext): Promise<void> {
    const c = this.caller(ctx);
    const target = this.quotaProject(ctx, c, true);
    await this.options.quota.setLimits(target, Object.fromEntries(QUOTA_RESOURCES.map((r) => [r, null])));
    sendEmpty(ctx, 204);
  }
}

/** A side record from a listed map; without one, `fallback` (a rule's group's) or Neutron's defaults. */
function readOr(map: Map<string, NeutronAttrs>, id: string, fallback?: NeutronAttrs): NeutronAttrs {
  return map.get(id) ?? (fallback ? { ...fallback, description: '' } : withDefaults(undefined));
}
