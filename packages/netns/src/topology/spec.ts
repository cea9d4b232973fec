import { z } from 'zod';
import {
  aliasSchema,
  cidrSchema,
  interfaceNameSchema,
  ipAddressSchema,
  isCidr,
  macSchema,
  namespaceNameSchema,
} from '../names.js';

const where = { namespace: namespaceNameSchema.optional() };

const linkCommon = {
  ...where,
  name: interfaceNameSchema,
  /** MTU in bytes; part of the identity of a link (a different MTU on an existing link is a conflict). */
  mtu: z.number().int().min(68).max(65535).optional(),
  mac: macSchema.optional(),
  /** Bring the link up (default true). */
  up: z.boolean().default(true),
  /** Free text kept next to the owner tag in ifalias. */
  alias: aliasSchema.optional(),
  /** A bridge in the same namespace to enslave this link to. */
  master: interfaceNameSchema.optional(),
};

const vethPeerSchema = z.object({
  ...where,
  name: interfaceNameSchema,
  mtu: z.number().int().min(68).max(65535).optional(),
  mac: macSchema.optional(),
  up: z.boolean().default(true),
  master: interfaceNameSchema.optional(),
});

/** A veth pair; the peer is created directly in its namespace. */
export const vethSchema = z.object({ kind: z.literal('veth'), ...linkCommon, peer: vethPeerSchema });
/** A Linux bridge; STP is off unless asked for. */
export const bridgeSchema = z.object({
  kind: z.literal('bridge'),
  ...linkCommon,
  stp: z.boolean().default(false),
});
/** A persistent tap device for QEMU, owned by a user (and group) so an unprivileged QEMU can open it. */
export const tapSchema = z.object({
  kind: z.literal('tap'),
  ...linkCommon,
  user: z.union([z.number().int().min(0), z.string().regex(/^[a-z_][a-z0-9_-]*$/)]).optional(),
  group: z.union([z.number().int().min(0), z.string().regex(/^[a-z_][a-z0-9_-]*$/)]).optional(),
});
/** A VLAN sub-interface of `parent`. */
export const vlanSchema = z.object({
  kind: z.literal('vlan'),
  ...linkCommon,
  parent: interfaceNameSchema,
  id: z.number().int().min(1).max(4094),
});
/** A VXLAN device with learning off; `remotes` become static all-zero FDB entries (head-end replication). */
export const vxlanSchema = z.object({
  kind: z.literal('vxlan'),
  ...linkCommon,
  vni: z.number().int().min(0).max(16_777_215),
  local: ipAddressSchema.optional(),
  dstport: z.number().int().min(1).max(65535).default(4789),
  /** The underlay interface. */
  dev: interfaceNameSchema.optional(),
  remotes: z.array(ipAddressSchema).default([]),
});
/** An intermediate functional block, the target of ingress redirection. */
export const ifbSchema = z.object({ kind: z.literal('ifb'), ...linkCommon });

/** Any link the library can create. */
export const linkSpecSchema = z.discriminatedUnion('kind', [
  vethSchema,
  bridgeSchema,
  tapSchema,
  vlanSchema,
  vxlanSchema,
  ifbSchema,
]);

/** An address on an interface. */
export const addressSpecSchema = z.object({ ...where, dev: interfaceNameSchema, cidr: cidrSchema });

/** A route; `to: 'default'` is the default route of the gateway's family. */
export const routeSpecSchema = z
  .object({
    ...where,
    to: z
      .string()
      .refine((s) => s === 'default' || isCidr(s), 'must be "default" or a CIDR like 10.1.0.0/16'),
    via: ipAddressSchema.optional(),
    dev: interfaceNameSchema.optional(),
    /** `main` (default) or a table number 1..2^32-1 other than the reserved 253..255. */
    table: z
      .union([z.literal('main'), z.number().int().min(1).max(4_294_967_295)])
      .refine((t) => t === 'main' || t < 253 || t > 255, 'tables 253-255 are reserved (default, main, local)')
      .default('main'),
    metric: z.number().int().min(0).max(4_294_967_295).optional(),
  })
  .refine((r) => r.via !== undefined || r.dev !== undefined, { message: 'needs via or dev', path: ['via'] });

/** A static neighbor (ARP/NDP) entry. */
export const neighborSpecSchema = z.object({
  ...where,
  dev: interfaceNameSchema,
  address: ipAddressSchema,
  lladdr: macSchema,
});

/** Everything {@link NetworkHost.apply} can make exist, in one declarative value. */
export const topologySchema = z.object({
  namespaces: z.array(namespaceNameSchema).default([]),
  links: z.array(linkSpecSchema).default([]),
  addresses: z.array(addressSpecSchema).default([]),
  routes: z.array(routeSpecSchema).default([]),
  neighbors: z.array(neighborSpecSchema).default([]),
});

/** A link to create, as given to {@link NetworkHost.addLink}. */
export type LinkSpec = z.input<typeof linkSpecSchema>;
/** A link after validation and defaults. */
export type ParsedLinkSpec = z.output<typeof linkSpecSchema>;
/** An address to add. */
export type AddressSpec = z.input<typeof addressSpecSchema>;
/** A route to add. */
export type RouteSpec = z.input<typeof routeSpecSchema>;
/** A neighbor entry to add. */
export type NeighborSpec = z.input<typeof neighborSpecSchema>;
/** A whole desired topology. */
export type Topology = z.input<typeof topologySchema>;
/** A topology after validation and defaults. */
export type ParsedTopology = z.output<typeof topologySchema>;
