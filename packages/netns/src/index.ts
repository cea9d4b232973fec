/**
 * @nubes/netns: network namespaces, links, tenant VPCs, security groups, tc QoS and cgroups.
 *
 * This package is a skeleton: it builds and publishes, and holds no API yet. Network namespaces and veth/bridge links, tc bandwidth shaping, cgroups v1 and v2, tenant VPC networking with routers and floating IPs, and security groups compiled to nftables.
 *
 * @packageDocumentation
 */

export {};
