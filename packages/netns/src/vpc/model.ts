import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { interfaceNameSchema, macSchema, namespaceNameSchema } from '../names.js';
import { parseIpv4Cidr } from './ipv4.js';

/**
 * The VPC model in Neutron's terms: networks, subnets, ports, routers, floating IPs and security
 * groups. Input schemas validate what callers pass; the record types are what the Store keeps.
 */

const ipv4Schema = z.string().refine((s) => isIPv4(s), 'must be an IPv4 address like 10.0.0.5');
/** An IPv4 network in CIDR form with no host bits set (`10.0.0.0/24`). */
export const ipv4NetworkSchema = z.string().superRefine((s, ctx) => {
  const parsed = parseIpv4Cidr(s);
  if (!parsed) ctx.addIssue({ code: 'custom', message: 'must be an IPv4 network like 10.0.0.0/24' });
  else if (parsed.hostBits) ctx.addIssue({ code: 'custom', message: 'must not have host bits set' });
});
const idSchema = z.string().regex(/^[0-9a-f]{32}$/, 'must be an id as returned by create (32 hex digits)');
/** A tenant (project) id: free text up to 64 safe characters. */
export const tenantSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters')
  .regex(/^[A-Za-z0-9_.-]+$/, 'may only hold letters, digits, "_", "." and "-"');
const nameSchema = z.string().max(255, 'must be at most 255 characters').default('');
/** A host name as agents register it. */
export const hostNameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters')
  .regex(/^[A-Za-z0-9_.-]+$/, 'may only hold letters, digits, "_", "." and "-"');

/** Input of {@link Vpc.createNetwork}. */
export const networkInputSchema = z
  .object({
    tenant: tenantSchema,
    name: nameSchema,
    /** A provider network: routers put their gateway on it and floating IPs come from it. Any tenant may attach. */
    external: z.boolean().default(false),
    /** Neutron's `shared`: ports of any tenant may plug into it (subnets stay the owner's). */
    shared: z.boolean().default(false),
    /** MTU of every port on the network; 1450 leaves room for VXLAN's 50 bytes on a 1500 underlay. */
    mtu: z.number().int().min(576).max(9000).default(1450),
    /** Ask for this VNI instead of the next free one of the pool. */
    vni: z.number().int().min(1).max(16_777_215).optional(),
  })
  .strict();

/** Input of {@link Vpc.createSubnet}. */
export const subnetInputSchema = z
  .object({
    tenant: tenantSchema,
    networkId: idSchema,
    name: nameSchema,
    cidr: ipv4NetworkSchema,
    /** The router's address on the subnet; default the first host address, `null` for none. */
    gateway: ipv4Schema.nullable().optional(),
    /** Where fixed IPs are allocated from; default the host range without the gateway. */
    allocationPools: z
      .array(z.object({ start: ipv4Schema, end: ipv4Schema }).strict())
      .min(1)
      .optional(),
    dnsNameservers: z.array(ipv4Schema).max(5).default([]),
    /** Extra routes the instances on the subnet get. */
    hostRoutes: z
      .array(z.object({ destination: ipv4NetworkSchema, nexthop: ipv4Schema }).strict())
      .default([]),
  })
  .strict();

/** Where a port plugs in on its host. */
export const portDeviceSchema = z.discriminatedUnion('kind', [
  /** A veth pair: this end goes into `namespace` as `name` with the port's MAC and addresses. */
  z
    .object({
      kind: z.literal('veth'),
      namespace: namespaceNameSchema,
      name: interfaceNameSchema.default('eth0'),
    })
    .strict(),
  /** A tap device for QEMU in the host's namespace; the guest configures its own addresses. */
  z.object({ kind: z.literal('tap'), name: interfaceNameSchema }).strict(),
]);

/** Input of {@link Vpc.createPort}. */
export const portInputSchema = z
  .object({
    tenant: tenantSchema,
    networkId: idSchema,
    name: nameSchema,
    /**
     * The host whose agent wires the port. Leave out `host` and `device` for an unbound port (Neutron's port
     * made before Nova binds it): it holds its addresses and MAC, and no agent wires it until {@link Vpc.bindPort}.
     */
    host: hostNameSchema.optional(),
    device: portDeviceSchema.optional(),
    /** Addresses to take; default one free address of the network's first subnet. */
    fixedIps: z
      .array(z.object({ subnetId: idSchema, ip: ipv4Schema.optional() }).strict())
      .min(1)
      .optional(),
    mac: macSchema.optional(),
    securityGroups: z.array(idSchema).default([]),
    /** Filtering and anti-spoofing on; off only for ports that must forward others' traffic. */
    portSecurity: z.boolean().default(true),
  })
  .strict()
  .superRefine((p, ctx) => {
    // A device names a link on one host: it means nothing without the host.
    if ((p.host === undefined) !== (p.device === undefined))
      ctx.addIssue({
        code: 'custom',
        path: ['device'],
        message: 'give host and device together, or neither',
      });
  });

/** Input of {@link Vpc.bindPort}: the host whose agent wires the port and the device it plugs into. */
export const portBindingSchema = z.object({ host: hostNameSchema, device: portDeviceSchema }).strict();

/** Input of {@link Vpc.updatePort}; absent fields stay as they are. */
export const portUpdateSchema = z
  .object({
    name: z.string().max(255, 'must be at most 255 characters').optional(),
    securityGroups: z.array(idSchema).optional(),
    portSecurity: z.boolean().optional(),
  })
  .strict();

/** Input of {@link Vpc.updateSubnet}; absent fields stay as they are. */
export const subnetUpdateSchema = z
  .object({
    name: z.string().max(255, 'must be at most 255 characters').optional(),
    dnsNameservers: z.array(ipv4Schema).max(5).optional(),
    hostRoutes: z
      .array(z.object({ destination: ipv4NetworkSchema, nexthop: ipv4Schema }).strict())
      .optional(),
  })
  .strict();

/** Input of {@link Vpc.updateRouter}; absent fields stay as they are. */
export const routerUpdateSchema = z
  .object({
    name: z.string().max(255, 'must be at most 255 characters').optional(),
    snat: z.boolean().optional(),
  })
  .strict();

/** Input of {@link Vpc.updateNetwork} and {@link Vpc.updateSecurityGroup}: a new name. */
export const renameSchema = z
  .object({ name: z.string().max(255, 'must be at most 255 characters') })
  .strict();

/** Input of {@link Vpc.createRouter}. */
export const routerInputSchema = z
  .object({ tenant: tenantSchema, name: nameSchema, host: hostNameSchema, snat: z.boolean().default(true) })
  .strict();

/** Input of {@link Vpc.createFloatingIp}. */
export const floatingIpInputSchema = z
  .object({ tenant: tenantSchema, networkId: idSchema, ip: ipv4Schema.optional() })
  .strict();

/** Input of {@link Vpc.createSecurityGroup}. */
export const securityGroupInputSchema = z
  .object({
    tenant: tenantSchema,
    name: nameSchema,
    /** Neutron gives every new group "allow all egress" rules for both families; `false` starts empty. */
    defaultEgress: z.boolean().default(true),
  })
  .strict();

const PORT_PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);

/** A security group rule as Neutron defines it; port fields are the ICMP type and code for ICMP. */
export const ruleInputSchema = z
  .object({
    direction: z.enum(['ingress', 'egress']),
    ethertype: z.enum(['IPv4', 'IPv6']).default('IPv4'),
    /** `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, an IP protocol number, or omitted for any. */
    protocol: z
      .union([z.enum(['tcp', 'udp', 'sctp', 'icmp', 'icmpv6']), z.number().int().min(0).max(255)])
      .optional(),
    portRangeMin: z.number().int().min(0).max(65535).optional(),
    portRangeMax: z.number().int().min(0).max(65535).optional(),
    remoteIpPrefix: z.string().optional(),
    remoteGroupId: idSchema.optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    const isIcmp = r.protocol === 'icmp' || r.protocol === 'icmpv6';
    const hasPorts = r.portRangeMin !== undefined || r.portRangeMax !== undefined;
    if (hasPorts && !isIcmp && !PORT_PROTOCOLS.has(String(r.protocol)))
      issue('portRangeMin', 'port ranges need protocol tcp, udp, sctp (ports) or icmp (type and code)');
    if (
      r.portRangeMin !== undefined &&
      r.portRangeMax !== undefined &&
      r.portRangeMin > r.portRangeMax &&
      !isIcmp
    )
      issue('portRangeMax', `must not be below portRangeMin (${r.portRangeMin})`);
    if (!isIcmp && r.portRangeMax !== undefined && r.portRangeMin === undefined)
      issue('portRangeMin', 'is needed when portRangeMax is given');
    if (isIcmp) {
      if (r.portRangeMin !== undefined && r.portRangeMin > 255)
        issue('portRangeMin', 'ICMP type must be 0-255');
      if (r.portRangeMax !== undefined && r.portRangeMax > 255)
        issue('portRangeMax', 'ICMP code must be 0-255');
      if (r.portRangeMax !== undefined && r.portRangeMin === undefined)
        issue('portRangeMin', 'an ICMP code needs an ICMP type');
    }
    if (
      (r.protocol === 'icmp' && r.ethertype === 'IPv6') ||
      (r.protocol === 'icmpv6' && r.ethertype === 'IPv4')
    )
      issue('protocol', `${r.protocol} does not fit ethertype ${r.ethertype}`);
    if (r.remoteIpPrefix !== undefined && r.remoteGroupId !== undefined)
      issue('remoteGroupId', 'give remoteIpPrefix or remoteGroupId, not both');
    if (r.remoteIpPrefix !== undefined) {
      const v4 = parseIpv4Cidr(r.remoteIpPrefix);
      if (r.ethertype === 'IPv4' && (!v4 || v4.hostBits))
        issue('remoteIpPrefix', 'must be an IPv4 network like 0.0.0.0/0 for ethertype IPv4');
      if (r.ethertype === 'IPv6' && !/^[0-9a-fA-F:]+\/\d{1,3}$/.test(r.remoteIpPrefix))
        issue('remoteIpPrefix', 'must be an IPv6 network like ::/0 for ethertype IPv6');
    }
  });

/** A network as stored. */
export interface NetworkRecord {
  id: string;
  tenant: string;
  name: string;
  external: boolean;
  /** Absent in records written before `shared` existed: not shared. */
  shared?: boolean;
  mtu: number;
  /** The VXLAN network identifier, unique in the Store. */
  vni: number;
}

/** A subnet as stored. */
export interface SubnetRecord {
  id: string;
  tenant: string;
  networkId: string;
  name: string;
  cidr: string;
  gateway: string | null;
  allocationPools: { start: string; end: string }[];
  dnsNameservers: string[];
  hostRoutes: { destination: string; nexthop: string }[];
}

/** What a port belongs to: an instance, or a router's interface or gateway. */
export type PortOwner =
  | { kind: 'instance' }
  | { kind: 'routerInterface'; routerId: string }
  | { kind: 'routerGateway'; routerId: string };

/** A port as stored. */
export interface PortRecord {
  id: string;
  tenant: string;
  networkId: string;
  name: string;
  /** Unset while the port is unbound: no agent wires it. */
  host?: string;
  mac: string;
  fixedIps: { subnetId: string; ip: string }[];
  /** Undefined for router ports: the agent names their devices inside the router's namespace. */
  device?: z.output<typeof portDeviceSchema>;
  securityGroups: string[];
  portSecurity: boolean;
  owner: PortOwner;
}

/** A router as stored. */
export interface RouterRecord {
  id: string;
  tenant: string;
  name: string;
  host: string;
  snat: boolean;
  /** Port ids of its interfaces on tenant subnets. */
  interfaces: string[];
  /** Port id of its external gateway, if set. */
  gatewayPortId?: string;
}

/** A floating IP as stored; `portId` and `fixedIp` are set while it is associated. */
export interface FloatingIpRecord {
  id: string;
  tenant: string;
  networkId: string;
  subnetId: string;
  ip: string;
  portId?: string;
  fixedIp?: string;
  routerId?: string;
}

/** A security group rule as stored. */
export type SecurityGroupRule = z.output<typeof ruleInputSchema> & { id: string };

/** A security group as stored. */
export interface SecurityGroupRecord {
  id: string;
  tenant: string;
  name: string;
  rules: SecurityGroupRule[];
}

/** A host an agent runs on: its underlay address terminates the VXLAN tunnels. */
export interface HostRecord {
  name: string;
  underlayIp: string;
  /** The underlay interface, when the VXLAN devices should be bound to one. */
  underlayDev?: string;
}

/** Input of {@link Vpc.registerHost}. */
export const hostInputSchema = z
  .object({ name: hostNameSchema, underlayIp: ipv4Schema, underlayDev: interfaceNameSchema.optional() })
  .strict();

/** Everything in the Store at one revision: what an agent reconciles towards. */
export interface VpcSnapshot {
  networks: NetworkRecord[];
  subnets: SubnetRecord[];
  ports: PortRecord[];
  routers: RouterRecord[];
  floatingIps: FloatingIpRecord[];
  securityGroups: SecurityGroupRecord[];
  hosts: HostRecord[];
}

/** Input types, as callers write them. */
export type NetworkInput = z.input<typeof networkInputSchema>;
/** Input of {@link Vpc.createSubnet}. */
export type SubnetInput = z.input<typeof subnetInputSchema>;
/** Input of {@link Vpc.createPort}. */
export type PortInput = z.input<typeof portInputSchema>;
/** Input of {@link Vpc.createRouter}. */
export type RouterInput = z.input<typeof routerInputSchema>;
/** Input of {@link Vpc.createFloatingIp}. */
export type FloatingIpInput = z.input<typeof floatingIpInputSchema>;
/** Input of {@link Vpc.createSecurityGroup}. */
export type SecurityGroupInput = z.input<typeof securityGroupInputSchema>;
/** Input of {@link Vpc.addRule}. */
export type RuleInput = z.input<typeof ruleInputSchema>;
/** Input of {@link Vpc.registerHost}. */
export type HostInput = z.input<typeof hostInputSchema>;
/** Input of {@link Vpc.bindPort}. */
export type PortBinding = z.input<typeof portBindingSchema>;
/** Input of {@link Vpc.updatePort}. */
export type PortUpdate = z.input<typeof portUpdateSchema>;
/** Input of {@link Vpc.updateSubnet}. */
export type SubnetUpdate = z.input<typeof subnetUpdateSchema>;
/** Input of {@link Vpc.updateRouter}. */
export type RouterUpdate = z.input<typeof routerUpdateSchema>;
