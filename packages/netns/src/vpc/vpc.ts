import { randomBytes } from 'node:crypto';
import {
  invalidInput,
  type JsonValue,
  NubesError,
  newHexId,
  parseInput,
  type Store,
  type StoreReader,
  type Transaction,
} from '@nubes/core';
import { z } from 'zod';
import {
  defaultPools,
  firstFreeAddress,
  inPools,
  ipv4InNetwork,
  ipv4NetworksOverlap,
  ipv4ToInt,
  parseIpv4Cidr,
} from './ipv4.js';
import {
  type FloatingIpInput,
  type FloatingIpRecord,
  floatingIpInputSchema,
  type HostInput,
  type HostRecord,
  hostInputSchema,
  type NetworkInput,
  type NetworkRecord,
  networkInputSchema,
  type PortBinding,
  type PortInput,
  type PortOwner,
  type PortRecord,
  type PortUpdate,
  portBindingSchema,
  portInputSchema,
  portUpdateSchema,
  type RouterInput,
  type RouterRecord,
  type RouterUpdate,
  type RuleInput,
  renameSchema,
  routerInputSchema,
  routerUpdateSchema,
  ruleInputSchema,
  type SecurityGroupInput,
  type SecurityGroupRecord,
  type SecurityGroupRule,
  type SubnetInput,
  type SubnetRecord,
  type SubnetUpdate,
  securityGroupInputSchema,
  subnetInputSchema,
  subnetUpdateSchema,
  type VpcSnapshot,
} from './model.js';

/** Options of a {@link Vpc}. */
export interface VpcOptions {
  /** Where desired state and allocations live; share it between processes and hosts. */
  store: Store;
  /** Key prefix of every record (default `vpc/`). */
  prefix?: string;
  /** Inclusive VNI pool (default 1000 to 60999: inside 16 bits, so a VNI doubles as a conntrack zone). */
  vniRange?: [number, number];
}

const idSchema = z.string().regex(/^[0-9a-f]{32}$/, 'must be an id as returned by create (32 hex digits)');
const optionsSchema = z.object({
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9_./-]*$/)
    .default('vpc/'),
  vniRange: z
    .tuple([z.number().int().min(1), z.number().int().max(16_777_215)])
    .refine(([a, b]) => a <= b, 'start must not be above end')
    .default([1000, 60_999]),
});

function missing(field: string, kind: string, id: string): NubesError {
  return new NubesError('NotFound', `${field}: ${kind} ${JSON.stringify(id)} not found`, {
    details: { field, kind, id },
  });
}

function conflict(field: string, message: string, details: Record<string, unknown> = {}): NubesError {
  return new NubesError('Conflict', `${field}: ${message}`, { details: { field, ...details } });
}

/** Every entry under a prefix, across pages. Inside a transaction the whole range is validated at commit. */
async function listAll<T>(reader: StoreReader, prefix: string): Promise<T[]> {
  const out: T[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await reader.list<T>(prefix, { limit: 10_000, ...(startAfter ? { startAfter } : {}) });
    for (const item of page.items) out.push(item.value);
    if (!page.next) return out;
    startAfter = page.next;
  }
}

/** A locally administered unicast MAC in OpenStack's `fa:16:3e` range. */
function randomMac(): string {
  return ['fa', '16', '3e', ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/**
 * Tenant networks as desired state in a {@link Store}: networks with VNIs, subnets with IP address
 * management, ports, routers, floating IPs and security groups. Every change is one serializable
 * transaction, so two processes (or hosts) sharing the Store never hand out one address, MAC or VNI
 * twice, and a refused change leaves the Store as it was. Agents ({@link VpcAgent}) make the kernel match.
 */
export class Vpc {
  /** The Store the records live in. */
  readonly store: Store;
  /** Key prefix of every record; agents watch it for changes. */
  readonly prefix: string;
  private readonly vniRange: [number, number];

  constructor(options: VpcOptions) {
    const { prefix, vniRange } = parseInput(
      optionsSchema,
      { prefix: options.prefix, vniRange: options.vniRange },
      'options',
    );
    this.store = options.store;
    this.prefix = prefix;
    this.vniRange = vniRange;
  }

  private key(kind: string, ...parts: string[]): string {
    return `${this.prefix}${kind}/${parts.join('/')}`;
  }

  private async read<T>(reader: StoreReader, kind: string, id: string, field: string): Promise<T> {
    const entry = await reader.get<T>(this.key(kind, id));
    if (!entry) throw missing(field, kind.replace(/s$/, ''), id);
    return entry.value;
  }

  private write(tx: Transaction, kind: string, id: string, value: object): void {
    tx.put(this.key(kind, id), value as unknown as JsonValue);
  }

  /** Registers (or updates) a host and the underlay address its VXLAN tunnels end on. */
  async registerHost(input: HostInput): Promise<HostRecord> {
    const host = parseInput(hostInputSchema, input, 'host') as HostRecord;
    await this.store.transaction(async (tx) => {
      const others = await listAll<HostRecord>(tx, this.key('hosts', ''));
      const clash = others.find((h) => h.underlayIp === host.underlayIp && h.name !== host.name);
      if (clash) throw conflict('host.underlayIp', `is already used by host ${clash.name}`);
      this.write(tx, 'hosts', host.name, host);
    });
    return host;
  }

  /** Creates a tenant network and allocates its VNI from the pool. */
  async createNetwork(input: NetworkInput): Promise<NetworkRecord> {
    const n = parseInput(networkInputSchema, input, 'network');
    return this.store.transaction(async (tx) => {
      const used = new Set(
        (await listAll<{ networkId: string; vni: number }>(tx, this.key('vnis', ''))).map((v) => v.vni),
      );
      let vni = n.vni;
      if (vni !== undefined && used.has(vni)) throw conflict('network.vni', `VNI ${vni} is taken`);
      if (vni === undefined) {
        for (let v = this.vniRange[0]; v <= this.vniRange[1] && vni === undefined; v++)
          if (!used.has(v)) vni = v;
        if (vni === undefined)
          throw conflict('network.vni', 'the VNI pool is exhausted', { range: this.vniRange });
      }
      const record: NetworkRecord = {
        id: newHexId(),
        tenant: n.tenant,
        name: n.name,
        external: n.external,
        // Written only when set, so records of unshared networks look as they always did.
        ...(n.shared ? { shared: true } : {}),
        mtu: n.mtu,
        vni,
      };
      this.write(tx, 'networks', record.id, record);
      tx.put(this.key('vnis', String(vni)), { networkId: record.id, vni });
      return record;
    });
  }

  /** Deletes a network and its subnets; `Conflict` while ports are on it. */
  async deleteNetwork(id: string): Promise<void> {
    const networkId = parseInput(idSchema, id, 'id');
    await this.store.transaction(async (tx) => {
      const network = await this.read<NetworkRecord>(tx, 'networks', networkId, 'id');
      const ports = (await listAll<PortRecord>(tx, this.key('ports', ''))).filter(
        (p) => p.networkId === networkId,
      );
      if (ports.length)
        throw conflict('id', `network has ${ports.length} port(s)`, { ports: ports.map((p) => p.id) });
      const fips = (await listAll<FloatingIpRecord>(tx, this.key('floatingips', ''))).filter(
        (f) => f.networkId === networkId,
      );
      if (fips.length) throw conflict('id', `network has ${fips.length} floating IP(s)`);
      for (const s of await listAll<SubnetRecord>(tx, this.key('subnets', '')))
        if (s.networkId === networkId) tx.delete(this.key('subnets', s.id));
      tx.delete(this.key('vnis', String(network.vni)));
      tx.delete(this.key('networks', networkId));
    });
  }

  /**
   * Creates a subnet. Refused with `InvalidInput` naming the field: a CIDR that overlaps another subnet of
   * the same network (other networks, and other tenants, may reuse it), a gateway outside the CIDR, pools
   * outside the CIDR, overlapping each other or holding the gateway.
   */
  async createSubnet(input: SubnetInput): Promise<SubnetRecord> {
    const s = parseInput(subnetInputSchema, input, 'subnet');
    const net = parseIpv4Cidr(s.cidr);
    if (!net) throw invalidInput('subnet.cidr', 'must be an IPv4 network');
    if (net.prefix > 30)
      throw invalidInput('subnet.cidr', 'must leave room for a gateway and hosts (/30 or larger)');
    const gateway = s.gateway === undefined ? (defaultPools(net, null)[0]?.start ?? null) : s.gateway;
    if (gateway !== null && !ipv4InNetwork(net, gateway))
      throw invalidInput('subnet.gateway', `${gateway} is outside ${s.cidr}`);
    const pools = s.allocationPools ?? defaultPools(net, gateway);
    pools.forEach((p, i) => {
      const field = `subnet.allocationPools.${i}`;
      if (!ipv4InNetwork(net, p.start))
        throw invalidInput(`${field}.start`, `${p.start} is outside ${s.cidr}`);
      if (!ipv4InNetwork(net, p.end)) throw invalidInput(`${field}.end`, `${p.end} is outside ${s.cidr}`);
      if (ipv4ToInt(p.start) > ipv4ToInt(p.end))
        throw invalidInput(`${field}.end`, 'must not be below start');
      if (gateway !== null && inPools([p], gateway))
        throw invalidInput(field, `holds the gateway ${gateway}`);
      pools.slice(0, i).forEach((q, j) => {
        if (ipv4ToInt(p.start) <= ipv4ToInt(q.end) && ipv4ToInt(q.start) <= ipv4ToInt(p.end))
          throw invalidInput(field, `overlaps allocationPools.${j}`);
      });
    });
    return this.store.transaction(async (tx) => {
      const network = await this.read<NetworkRecord>(tx, 'networks', s.networkId, 'subnet.networkId');
      if (network.tenant !== s.tenant)
        throw invalidInput('subnet.networkId', `network belongs to another tenant than ${s.tenant}`);
      for (const other of await listAll<SubnetRecord>(tx, this.key('subnets', ''))) {
        const o = parseIpv4Cidr(other.cidr);
        if (other.networkId === s.networkId && o && ipv4NetworksOverlap(net, o))
          throw invalidInput(
            'subnet.cidr',
            `${s.cidr} overlaps subnet ${other.id} (${other.cidr}) of the same network`,
          );
      }
      const record: SubnetRecord = {
        id: newHexId(),
        tenant: s.tenant,
        networkId: s.networkId,
        name: s.name,
        cidr: s.cidr,
        gateway,
        allocationPools: pools,
        dnsNameservers: s.dnsNameservers,
        hostRoutes: s.hostRoutes,
      };
      this.write(tx, 'subnets', record.id, record);
      return record;
    });
  }

  /** Deletes a subnet; `Conflict` while addresses of it are allocated. */
  async deleteSubnet(id: string): Promise<void> {
    const subnetId = parseInput(idSchema, id, 'id');
    await this.store.transaction(async (tx) => {
      await this.read<SubnetRecord>(tx, 'subnets', subnetId, 'id');
      const page = await tx.list(this.key('ips', subnetId, ''), { limit: 1 });
      if (page.items.length) throw conflict('id', 'subnet has allocated addresses');
      tx.delete(this.key('subnets', subnetId));
    });
  }

  /** Allocates `ip` (or the first free address of the pools) on a subnet inside `tx`. */
  private async allocate(
    tx: Transaction,
    subnet: SubnetRecord,
    holder: Record<string, string>,
    field: string,
    ip?: string,
  ): Promise<string> {
    const taken = new Set(
      (await listAll<{ ip: string }>(tx, this.key('ips', subnet.id, ''))).map((a) => a.ip),
    );
    if (ip !== undefined) {
      const net = parseIpv4Cidr(subnet.cidr);
      if (!net || !ipv4InNetwork(net, ip))
        throw invalidInput(`${field}.ip`, `${ip} is outside ${subnet.cidr}`);
      if (ip === subnet.gateway && !holder.routerId)
        throw invalidInput(`${field}.ip`, `${ip} is the subnet's gateway`);
      if (taken.has(ip)) throw conflict(`${field}.ip`, `${ip} is already allocated`);
    } else {
      ip = firstFreeAddress(subnet.allocationPools, taken);
      if (ip === undefined)
        throw conflict(`${field}.subnetId`, `no free address left in ${subnet.cidr}`, {
          subnetId: subnet.id,
        });
    }
    tx.put(this.key('ips', subnet.id, ip), { ip, ...holder });
    return ip;
  }

  private async subnetsOf(tx: Transaction, networkId: string): Promise<SubnetRecord[]> {
    return (await listAll<SubnetRecord>(tx, this.key('subnets', ''))).filter(
      (s) => s.networkId === networkId,
    );
  }

  /** Writes a port with its allocations (IPs, MAC, device) inside `tx`; validation happened before. */
  private async addPort(
    tx: Transaction,
    p: {
      tenant: string;
      network: NetworkRecord;
      name: string;
      host?: string | undefined;
      device?: PortRecord['device'] | undefined;
      fixedIps?: { subnetId: string; ip?: string | undefined }[];
      mac?: string | undefined;
      securityGroups: string[];
      portSecurity: boolean;
      owner: PortOwner;
    },
    field: string,
  ): Promise<PortRecord> {
    const id = newHexId();
    if (p.device && p.host !== undefined) await this.claimDevice(tx, id, p.host, p.device, `${field}.device`);
    const subnets = await this.subnetsOf(tx, p.network.id);
    const wanted = p.fixedIps ?? (subnets[0] ? [{ subnetId: subnets[0].id }] : []);
    if (wanted.length === 0)
      throw invalidInput(`${field}.networkId`, 'network has no subnet to take an address from');
    const fixedIps: PortRecord['fixedIps'] = [];
    for (const [i, want] of wanted.entries()) {
      const subnet = subnets.find((s) => s.id === want.subnetId);
      if (!subnet)
        throw invalidInput(
          `${field}.fixedIps.${i}.subnetId`,
          `subnet ${want.subnetId} is not on network ${p.network.id}`,
        );
      const holder: Record<string, string> =
        p.owner.kind === 'instance' ? { portId: id } : { portId: id, routerId: p.owner.routerId };
      fixedIps.push({
        subnetId: subnet.id,
        ip: await this.allocate(tx, subnet, holder, `${field}.fixedIps.${i}`, want.ip),
      });
    }
    let mac = p.mac;
    if (mac !== undefined) {
      if (await tx.get(this.key('macs', mac))) throw conflict(`${field}.mac`, `${mac} is already in use`);
    } else {
      do mac = randomMac();
      while (await tx.get(this.key('macs', mac)));
    }
    tx.put(this.key('macs', mac), { portId: id });
    const record: PortRecord = {
      id,
      tenant: p.tenant,
      networkId: p.network.id,
      name: p.name,
      ...(p.host !== undefined ? { host: p.host } : {}),
      mac,
      fixedIps,
      ...(p.device ? { device: p.device } : {}),
      securityGroups: p.securityGroups,
      portSecurity: p.portSecurity,
      owner: p.owner,
    };
    this.write(tx, 'ports', id, record);
    return record;
  }

  private deviceKey(host: string, device: NonNullable<PortRecord['device']>): string {
    const where = device.kind === 'veth' ? [device.namespace, device.name] : ['', device.name];
    return this.key('devices', host, ...where);
  }

  /** Takes a device name on a host for a port inside `tx`; `Conflict` when another port holds it. */
  private async claimDevice(
    tx: Transaction,
    portId: string,
    host: string,
    device: NonNullable<PortRecord['device']>,
    field: string,
  ): Promise<void> {
    const key = this.deviceKey(host, device);
    const holder = await tx.get<{ portId: string }>(key);
    if (holder && holder.value.portId !== portId)
      throw conflict(field, `another port already uses this device on host ${host}`);
    tx.put(key, { portId });
  }

  private releaseDevice(tx: Transaction, port: PortRecord): void {
    if (port.device && port.host !== undefined) tx.delete(this.deviceKey(port.host, port.device));
  }

  private async removePort(tx: Transaction, port: PortRecord): Promise<void> {
    for (const f of port.fixedIps) tx.delete(this.key('ips', f.subnetId, f.ip));
    tx.delete(this.key('macs', port.mac));
    this.releaseDevice(tx, port);
    tx.delete(this.key('ports', port.id));
  }

  private async checkGroups(tx: Transaction, tenant: string, groups: string[], field: string): Promise<void> {
    for (const [i, g] of groups.entries()) {
      const group = await this.read<SecurityGroupRecord>(tx, 'secgroups', g, `${field}.${i}`);
      if (group.tenant !== tenant)
        throw invalidInput(`${field}.${i}`, `security group belongs to another tenant`);
    }
  }

  /**
   * Creates an instance port: allocates its addresses (the first free one of the network's first subnet
   * by default) and MAC, and names the device it plugs into (or, without `host` and `device`, leaves it
   * unbound until {@link bindPort}). A network of another tenant is refused (`InvalidInput` on
   * `port.networkId`) unless it is external or shared.
   */
  async createPort(input: PortInput): Promise<PortRecord> {
    const p = parseInput(portInputSchema, input, 'port');
    return this.store.transaction(async (tx) => {
      const network = await this.read<NetworkRecord>(tx, 'networks', p.networkId, 'port.networkId');
      if (network.tenant !== p.tenant && !network.external && !network.shared)
        throw invalidInput('port.networkId', `network belongs to another tenant than ${p.tenant}`);
      await this.checkGroups(tx, p.tenant, p.securityGroups, 'port.securityGroups');
      return this.addPort(tx, { ...p, network, owner: { kind: 'instance' } }, 'port');
    });
  }

  /** Deletes an instance port, freeing its addresses; a floating IP on it is disassociated. */
  async deletePort(id: string): Promise<void> {
    const portId = parseInput(idSchema, id, 'id');
    await this.store.transaction(async (tx) => {
      const port = await this.read<PortRecord>(tx, 'ports', portId, 'id');
      if (port.owner.kind !== 'instance')
        throw conflict('id', 'is a router port: remove the router interface instead');
      for (const f of await listAll<FloatingIpRecord>(tx, this.key('floatingips', ''))) {
        if (f.portId === portId) this.write(tx, 'floatingips', f.id, this.detached(f));
      }
      await this.removePort(tx, port);
    });
  }

  /**
   * Binds an instance port to a host and a device (Nova plugging a server in), or moves its binding to
   * another host (live migration): the agent of the old host unwires it, the new host's agent wires it. The
   * device name is claimed on the new host (`Conflict` on `binding.device` when another port holds it) and
   * given back on the old one in the same transaction.
   */
  async bindPort(id: string, binding: PortBinding): Promise<PortRecord> {
    const portId = parseInput(idSchema, id, 'id');
    const b = parseInput(portBindingSchema, binding, 'binding');
    return this.store.transaction(async (tx) => {
      const port = await this.read<PortRecord>(tx, 'ports', portId, 'id');
      if (port.owner.kind !== 'instance') throw conflict('id', 'is a router port: its router places it');
      this.releaseDevice(tx, port);
      await this.claimDevice(tx, portId, b.host, b.device, 'binding.device');
      const updated: PortRecord = { ...port, host: b.host, device: b.device };
      this.write(tx, 'ports', portId, updated);
      return updated;
    });
  }

  /** Unbinds an instance port (Nova letting go of a port the user made): it keeps its addresses and MAC. */
  async unbindPort(id: string): Promise<PortRecord> {
    const portId = parseInput(idSchema, id, 'id');
    return this.store.transaction(async (tx) => {
      const port = await this.read<PortRecord>(tx, 'ports', portId, 'id');
      if (port.owner.kind !== 'instance') throw conflict('id', 'is a router port: its router places it');
      this.releaseDevice(tx, port);
      const { host: _host, device: _device, ...rest } = port;
      this.write(tx, 'ports', portId, rest);
      return rest;
    });
  }

  /**
   * Changes a port's name, security groups or port security. Groups must be the port's tenant's; port
   * security cannot be turned off while the port has groups (`InvalidInput` on `update.portSecurity`), as
   * Neutron refuses it: the filter would silently stop applying them.
   */
  async updatePort(id: string, update: PortUpdate): Promise<PortRecord> {
    const portId = parseInput(idSchema, id, 'id');
    const u = parseInput(portUpdateSchema, update, 'update');
    return this.store.transaction(async (tx) => {
      const port = await this.read<PortRecord>(tx, 'ports', portId, 'id');
      if (u.securityGroups)
        await this.checkGroups(tx, port.tenant, u.securityGroups, 'update.securityGroups');
      const updated: PortRecord = {
        ...port,
        ...(u.name !== undefined ? { name: u.name } : {}),
        ...(u.securityGroups !== undefined ? { securityGroups: u.securityGroups } : {}),
        ...(u.portSecurity !== undefined ? { portSecurity: u.portSecurity } : {}),
      };
      if (!updated.portSecurity && updated.securityGroups.length)
        throw invalidInput('update.portSecurity', 'cannot be off while the port has security groups');
      this.write(tx, 'ports', portId, updated);
      return updated;
    });
  }

  /** Renames a network. */
  async updateNetwork(id: string, update: { name: string }): Promise<NetworkRecord> {
    const networkId = parseInput(idSchema, id, 'id');
    const u = parseInput(renameSchema, update, 'update');
    return this.store.transaction(async (tx) => {
      const updated = { ...(await this.read<NetworkRecord>(tx, 'networks', networkId, 'id')), name: u.name };
      this.write(tx, 'networks', networkId, updated);
      return updated;
    });
  }

  /** Changes a subnet's name, DNS servers or host routes (its CIDR, gateway and pools stay). */
  async updateSubnet(id: string, update: SubnetUpdate): Promise<SubnetRecord> {
    const subnetId = parseInput(idSchema, id, 'id');
    const u = parseInput(subnetUpdateSchema, update, 'update');
    return this.store.transaction(async (tx) => {
      const subnet = await this.read<SubnetRecord>(tx, 'subnets', subnetId, 'id');
      const updated: SubnetRecord = {
        ...subnet,
        ...(u.name !== undefined ? { name: u.name } : {}),
        ...(u.dnsNameservers !== undefined ? { dnsNameservers: u.dnsNameservers } : {}),
        ...(u.hostRoutes !== undefined ? { hostRoutes: u.hostRoutes } : {}),
      };
      this.write(tx, 'subnets', subnetId, updated);
      return updated;
    });
  }

  /** Changes a router's name or whether it SNATs outbound traffic through its gateway. */
  async updateRouter(id: string, update: RouterUpdate): Promise<RouterRecord> {
    const routerId = parseInput(idSchema, id, 'id');
    const u = parseInput(routerUpdateSchema, update, 'update');
    return this.store.transaction(async (tx) => {
      const router = await this.read<RouterRecord>(tx, 'routers', routerId, 'id');
      const updated: RouterRecord = {
        ...router,
        ...(u.name !== undefined ? { name: u.name } : {}),
        ...(u.snat !== undefined ? { snat: u.snat } : {}),
      };
      this.write(tx, 'routers', routerId, updated);
      return updated;
    });
  }

  /** Renames a security group. */
  async updateSecurityGroup(id: string, update: { name: string }): Promise<SecurityGroupRecord> {
    const groupId = parseInput(idSchema, id, 'id');
    const u = parseInput(renameSchema, update, 'update');
    return this.store.transaction(async (tx) => {
      const group = await this.read<SecurityGroupRecord>(tx, 'secgroups', groupId, 'id');
      const updated = { ...group, name: u.name };
      this.write(tx, 'secgroups', groupId, updated);
      return updated;
    });
  }

  /** Replaces the security groups of a port. */
  async setPortSecurityGroups(id: string, groups: string[]): Promise<PortRecord> {
    const portId = parseInput(idSchema, id, 'id');
    const list = parseInput(z.array(idSchema), groups, 'securityGroups');
    return this.store.transaction(async (tx) => {
      const port = await this.read<PortRecord>(tx, 'ports', portId, 'id');
      await this.checkGroups(tx, port.tenant, list, 'securityGroups');
      const updated = { ...port, securityGroups: list };
      this.write(tx, 'ports', portId, updated);
      return updated;
    });
  }

  /** Creates a router; its namespace lives on `host`. */
  async createRouter(input: RouterInput): Promise<RouterRecord> {
    const r = parseInput(routerInputSchema, input, 'router');
    const record: RouterRecord = {
      id: newHexId(),
      tenant: r.tenant,
      name: r.name,
      host: r.host,
      snat: r.snat,
      interfaces: [],
    };
    await this.store.transaction((tx) => this.write(tx, 'routers', record.id, record));
    return record;
  }

  /** Deletes a router, clearing its gateway; `Conflict` while it has interfaces. */
  async deleteRouter(id: string): Promise<void> {
    const routerId = parseInput(idSchema, id, 'id');
    await this.store.transaction(async (tx) => {
      const router = await this.read<RouterRecord>(tx, 'routers', routerId, 'id');
      if (router.interfaces.length)
        throw conflict('id', `router still has ${router.interfaces.length} interface(s)`);
      if (router.gatewayPortId) await this.dropGateway(tx, router);
      tx.delete(this.key('routers', routerId));
    });
  }

  /** Plugs a router into a tenant subnet: a port holding the subnet's gateway address. */
  async addRouterInterface(routerId: string, subnetId: string): Promise<PortRecord> {
    const rid = parseInput(idSchema, routerId, 'routerId');
    const sid = parseInput(idSchema, subnetId, 'subnetId');
    return this.store.transaction(async (tx) => {
      const router = await this.read<RouterRecord>(tx, 'routers', rid, 'routerId');
      const subnet = await this.read<SubnetRecord>(tx, 'subnets', sid, 'subnetId');
      if (subnet.tenant !== router.tenant)
        throw invalidInput('subnetId', 'subnet belongs to another tenant than the router');
      if (subnet.gateway === null)
        throw invalidInput('subnetId', 'subnet has no gateway address for the router');
      const network = await this.read<NetworkRecord>(tx, 'networks', subnet.networkId, 'subnetId');
      if (network.external) throw invalidInput('subnetId', 'is on an external network: use setRouterGateway');
      const port = await this.addPort(
        tx,
        {
          tenant: router.tenant,
          network,
          name: `router-${rid}`,
          host: router.host,
          fixedIps: [{ subnetId: sid, ip: subnet.gateway }],
          securityGroups: [],
          portSecurity: false,
          owner: { kind: 'routerInterface', routerId: rid },
        },
        'subnetId',
      );
      this.write(tx, 'routers', rid, { ...router, interfaces: [...router.interfaces, port.id] });
      return port;
    });
  }

  /** Unplugs a router from a subnet; `Conflict` while floating IPs reach ports of it through this router. */
  async removeRouterInterface(routerId: string, subnetId: string): Promise<void> {
    const rid = parseInput(idSchema, routerId, 'routerId');
    const sid = parseInput(idSchema, subnetId, 'subnetId');
    await this.store.transaction(async (tx) => {
      const router = await this.read<RouterRecord>(tx, 'routers', rid, 'routerId');
      const ports = await Promise.all(
        router.interfaces.map((p) => this.read<PortRecord>(tx, 'ports', p, 'routerId')),
      );
      const port = ports.find((p) => p.fixedIps.some((f) => f.subnetId === sid));
      if (!port) throw missing('subnetId', 'router interface', sid);
      const subnet = await this.read<SubnetRecord>(tx, 'subnets', sid, 'subnetId');
      const net = parseIpv4Cidr(subnet.cidr);
      const used = (await listAll<FloatingIpRecord>(tx, this.key('floatingips', ''))).filter(
        (f) => f.routerId === rid && f.fixedIp !== undefined && net && ipv4InNetwork(net, f.fixedIp),
      );
      if (used.length)
        throw conflict('subnetId', `floating IPs use this interface`, { floatingIps: used.map((f) => f.id) });
      await this.removePort(tx, port);
      this.write(tx, 'routers', rid, {
        ...router,
        interfaces: router.interfaces.filter((p) => p !== port.id),
      });
    });
  }

  /** Gives a router its external gateway on a provider network (with SNAT for outbound traffic when `snat`). */
  async setRouterGateway(routerId: string, networkId: string): Promise<PortRecord> {
    const rid = parseInput(idSchema, routerId, 'routerId');
    const nid = parseInput(idSchema, networkId, 'networkId');
    return this.store.transaction(async (tx) => {
      const router = await this.read<RouterRecord>(tx, 'routers', rid, 'routerId');
      const network = await this.read<NetworkRecord>(tx, 'networks', nid, 'networkId');
      if (!network.external) throw invalidInput('networkId', 'must be an external network');
      if (router.gatewayPortId) throw conflict('routerId', 'router already has a gateway');
      const port = await this.addPort(
        tx,
        {
          tenant: router.tenant,
          network,
          name: `gateway-${rid}`,
          host: router.host,
          securityGroups: [],
          portSecurity: false,
          owner: { kind: 'routerGateway', routerId: rid },
        },
        'networkId',
      );
      this.write(tx, 'routers', rid, { ...router, gatewayPortId: port.id });
      return port;
    });
  }

  private async dropGateway(tx: Transaction, router: RouterRecord): Promise<void> {
    const fips = (await listAll<FloatingIpRecord>(tx, this.key('floatingips', ''))).filter(
      (f) => f.routerId === router.id,
    );
    if (fips.length) throw conflict('routerId', 'floating IPs are associated through this router');
    const port = await this.read<PortRecord>(tx, 'ports', router.gatewayPortId as string, 'routerId');
    await this.removePort(tx, port);
  }

  /** Removes a router's external gateway; `Conflict` while floating IPs go through it. */
  async clearRouterGateway(routerId: string): Promise<void> {
    const rid = parseInput(idSchema, routerId, 'routerId');
    await this.store.transaction(async (tx) => {
      const router = await this.read<RouterRecord>(tx, 'routers', rid, 'routerId');
      if (!router.gatewayPortId) return;
      await this.dropGateway(tx, router);
      const { gatewayPortId: _gone, ...rest } = router;
      this.write(tx, 'routers', rid, rest);
    });
  }

  /** Allocates a floating IP on an external network. */
  async createFloatingIp(input: FloatingIpInput): Promise<FloatingIpRecord> {
    const f = parseInput(floatingIpInputSchema, input, 'floatingIp');
    return this.store.transaction(async (tx) => {
      const network = await this.read<NetworkRecord>(tx, 'networks', f.networkId, 'floatingIp.networkId');
      if (!network.external) throw invalidInput('floatingIp.networkId', 'must be an external network');
      const subnets = await this.subnetsOf(tx, network.id);
      const subnet = f.ip
        ? subnets.find((s) => {
            const net = parseIpv4Cidr(s.cidr);
            return net && ipv4InNetwork(net, f.ip as string);
          })
        : subnets[0];
      if (!subnet)
        throw invalidInput(
          f.ip ? 'floatingIp.ip' : 'floatingIp.networkId',
          'no subnet of the network holds it',
        );
      const id = newHexId();
      const ip = await this.allocate(tx, subnet, { floatingIpId: id }, 'floatingIp', f.ip);
      const record: FloatingIpRecord = {
        id,
        tenant: f.tenant,
        networkId: network.id,
        subnetId: subnet.id,
        ip,
      };
      this.write(tx, 'floatingips', id, record);
      return record;
    });
  }

  private detached(f: FloatingIpRecord): FloatingIpRecord {
    const { portId: _p, fixedIp: _f, routerId: _r, ...rest } = f;
    return rest;
  }

  /**
   * Associates a floating IP with a port: traffic to it is DNATed to the port's fixed IP in the router
   * that joins the port's subnet to the floating IP's network, and the port's outbound traffic leaves as it.
   */
  async associateFloatingIp(floatingIpId: string, portId: string): Promise<FloatingIpRecord> {
    const fid = parseInput(idSchema, floatingIpId, 'floatingIpId');
    const pid = parseInput(idSchema, portId, 'portId');
    return this.store.transaction(async (tx) => {
      const fip = await this.read<FloatingIpRecord>(tx, 'floatingips', fid, 'floatingIpId');
      const port = await this.read<PortRecord>(tx, 'ports', pid, 'portId');
      if (port.tenant !== fip.tenant)
        throw invalidInput('portId', 'port belongs to another tenant than the floating IP');
      if (port.owner.kind !== 'instance') throw invalidInput('portId', 'must be an instance port');
      const fixed = port.fixedIps[0];
      if (!fixed) throw invalidInput('portId', 'port has no fixed IP');
      for (const router of await listAll<RouterRecord>(tx, this.key('routers', ''))) {
        if (!router.gatewayPortId) continue;
        const gw = await this.read<PortRecord>(tx, 'ports', router.gatewayPortId, 'portId');
        if (gw.networkId !== fip.networkId) continue;
        for (const iface of router.interfaces) {
          const p = await this.read<PortRecord>(tx, 'ports', iface, 'portId');
          if (p.fixedIps.some((f) => f.subnetId === fixed.subnetId)) {
            const updated = { ...fip, portId: pid, fixedIp: fixed.ip, routerId: router.id };
            this.write(tx, 'floatingips', fid, updated);
            return updated;
          }
        }
      }
      throw invalidInput('portId', `no router joins the port's subnet to the floating IP's network`);
    });
  }

  /** Disassociates a floating IP (it stays allocated to the tenant). */
  async disassociateFloatingIp(floatingIpId: string): Promise<FloatingIpRecord> {
    const fid = parseInput(idSchema, floatingIpId, 'floatingIpId');
    return this.store.transaction(async (tx) => {
      const fip = this.detached(await this.read<FloatingIpRecord>(tx, 'floatingips', fid, 'floatingIpId'));
      this.write(tx, 'floatingips', fid, fip);
      return fip;
    });
  }

  /** Releases a floating IP. */
  async deleteFloatingIp(floatingIpId: string): Promise<void> {
    const fid = parseInput(idSchema, floatingIpId, 'floatingIpId');
    await this.store.transaction(async (tx) => {
      const fip = await this.read<FloatingIpRecord>(tx, 'floatingips', fid, 'floatingIpId');
      tx.delete(this.key('ips', fip.subnetId, fip.ip));
      tx.delete(this.key('floatingips', fid));
    });
  }

  /** Creates a security group; by default with Neutron's two "allow all egress" rules. */
  async createSecurityGroup(input: SecurityGroupInput): Promise<SecurityGroupRecord> {
    const g = parseInput(securityGroupInputSchema, input, 'securityGroup');
    const egress = (ethertype: 'IPv4' | 'IPv6'): SecurityGroupRule => ({
      id: newHexId(),
      direction: 'egress',
      ethertype,
    });
    const record: SecurityGroupRecord = {
      id: newHexId(),
      tenant: g.tenant,
      name: g.name,
      rules: g.defaultEgress ? [egress('IPv4'), egress('IPv6')] : [],
    };
    await this.store.transaction((tx) => this.write(tx, 'secgroups', record.id, record));
    return record;
  }

  /** Adds a rule to a security group. Invalid ranges, protocols or remotes are `InvalidInput` naming the field. */
  async addRule(groupId: string, input: RuleInput): Promise<SecurityGroupRule> {
    const gid = parseInput(idSchema, groupId, 'groupId');
    const rule = { ...parseInput(ruleInputSchema, input, 'rule'), id: newHexId() } as SecurityGroupRule;
    return this.store.transaction(async (tx) => {
      const group = await this.read<SecurityGroupRecord>(tx, 'secgroups', gid, 'groupId');
      if (rule.remoteGroupId) {
        const remote = await this.read<SecurityGroupRecord>(
          tx,
          'secgroups',
          rule.remoteGroupId,
          'rule.remoteGroupId',
        );
        if (remote.tenant !== group.tenant)
          throw invalidInput('rule.remoteGroupId', 'belongs to another tenant');
      }
      this.write(tx, 'secgroups', gid, { ...group, rules: [...group.rules, rule] });
      return rule;
    });
  }

  /** Removes a rule from a security group; succeeds when it is gone already. */
  async removeRule(groupId: string, ruleId: string): Promise<void> {
    const gid = parseInput(idSchema, groupId, 'groupId');
    const rid = parseInput(idSchema, ruleId, 'ruleId');
    await this.store.transaction(async (tx) => {
      const group = await this.read<SecurityGroupRecord>(tx, 'secgroups', gid, 'groupId');
      this.write(tx, 'secgroups', gid, { ...group, rules: group.rules.filter((r) => r.id !== rid) });
    });
  }

  /** Deletes a security group; `Conflict` while a port uses it or a rule refers to it. */
  async deleteSecurityGroup(groupId: string): Promise<void> {
    const gid = parseInput(idSchema, groupId, 'groupId');
    await this.store.transaction(async (tx) => {
      await this.read<SecurityGroupRecord>(tx, 'secgroups', gid, 'groupId');
      const users = (await listAll<PortRecord>(tx, this.key('ports', ''))).filter((p) =>
        p.securityGroups.includes(gid),
      );
      if (users.length) throw conflict('groupId', `${users.length} port(s) use the group`);
      const referrers = (await listAll<SecurityGroupRecord>(tx, this.key('secgroups', ''))).filter(
        (g) => g.id !== gid && g.rules.some((r) => r.remoteGroupId === gid),
      );
      if (referrers.length) throw conflict('groupId', `rules of ${referrers.length} group(s) refer to it`);
      tx.delete(this.key('secgroups', gid));
    });
  }

  /** One network, or `NotFound`. */
  getNetwork(id: string): Promise<NetworkRecord> {
    return this.read(this.store, 'networks', parseInput(idSchema, id, 'id'), 'id');
  }

  /** One port, or `NotFound`. */
  getPort(id: string): Promise<PortRecord> {
    return this.read(this.store, 'ports', parseInput(idSchema, id, 'id'), 'id');
  }

  /** One router, or `NotFound`. */
  getRouter(id: string): Promise<RouterRecord> {
    return this.read(this.store, 'routers', parseInput(idSchema, id, 'id'), 'id');
  }

  /** One subnet, or `NotFound`. */
  getSubnet(id: string): Promise<SubnetRecord> {
    return this.read(this.store, 'subnets', parseInput(idSchema, id, 'id'), 'id');
  }

  /** One floating IP, or `NotFound`. */
  getFloatingIp(id: string): Promise<FloatingIpRecord> {
    return this.read(this.store, 'floatingips', parseInput(idSchema, id, 'id'), 'id');
  }

  /** One security group, or `NotFound`. */
  getSecurityGroup(id: string): Promise<SecurityGroupRecord> {
    return this.read(this.store, 'secgroups', parseInput(idSchema, id, 'id'), 'id');
  }

  /** Every network, in id order. */
  listNetworks(): Promise<NetworkRecord[]> {
    return listAll(this.store, this.key('networks', ''));
  }

  /** Every subnet, in id order. */
  listSubnets(): Promise<SubnetRecord[]> {
    return listAll(this.store, this.key('subnets', ''));
  }

  /** Every port (instance and router ports), in id order. */
  listPorts(): Promise<PortRecord[]> {
    return listAll(this.store, this.key('ports', ''));
  }

  /** Every router, in id order. */
  listRouters(): Promise<RouterRecord[]> {
    return listAll(this.store, this.key('routers', ''));
  }

  /** Every floating IP, in id order. */
  listFloatingIps(): Promise<FloatingIpRecord[]> {
    return listAll(this.store, this.key('floatingips', ''));
  }

  /** Every security group, in id order. */
  listSecurityGroups(): Promise<SecurityGroupRecord[]> {
    return listAll(this.store, this.key('secgroups', ''));
  }

  /** Every registered host, in name order. */
  listHosts(): Promise<HostRecord[]> {
    return listAll(this.store, this.key('hosts', ''));
  }

  /** Everything, read in one transaction so it is consistent (one revision). */
  snapshot(): Promise<VpcSnapshot> {
    return this.store.transaction(async (tx) => {
      const [networks, subnets, ports, routers, floatingIps, securityGroups, hosts] = await Promise.all([
        listAll<NetworkRecord>(tx, this.key('networks', '')),
        listAll<SubnetRecord>(tx, this.key('subnets', '')),
        listAll<PortRecord>(tx, this.key('ports', '')),
        listAll<RouterRecord>(tx, this.key('routers', '')),
        listAll<FloatingIpRecord>(tx, this.key('floatingips', '')),
        listAll<SecurityGroupRecord>(tx, this.key('secgroups', '')),
        listAll<HostRecord>(tx, this.key('hosts', '')),
      ]);
      return { networks, subnets, ports, routers, floatingIps, securityGroups, hosts };
    });
  }
}
