/**
 * @nubes/netns: network namespaces, links, tc QoS and cgroups v1 and v2 over the real kernel.
 *
 * Desired state is planned as data (pure functions) and applied through a {@link CommandRunner}
 * from `@nubes/core` with argv arrays, never a shell.
 *
 * @packageDocumentation
 */

export type { ReconcileResult, VpcAgentOptions } from './agent/agent.js';
export { parseTables, VpcAgent } from './agent/agent.js';
export type { AgentLoop, AgentLoopOptions } from './agent/loop.js';
export type {
  ActualHost,
  DesiredHost,
  DesiredPort,
  DesiredRouter,
  HostChanges,
  HostContext,
} from './agent/plan.js';
export { diffHost, fingerprintAlias, names as vpcDeviceNames, planHost } from './agent/plan.js';
export type { CgroupsOptions } from './cgroups/cgroups.js';
export { Cgroups, detectCgroupLayout } from './cgroups/cgroups.js';
export type { CgroupLayout } from './cgroups/layout.js';
export { parseCgroupLayout } from './cgroups/layout.js';
export type { CgroupWrite, V1Controller } from './cgroups/render.js';
export {
  ioWeightToBlkio,
  renderV1,
  renderV2,
  sharesToWeight,
  v2Controllers,
  weightToShares,
} from './cgroups/render.js';
export type { ParsedResourceSpec, ResourceSpec } from './cgroups/spec.js';
export { resourceSpecSchema } from './cgroups/spec.js';
export type { CgroupStats, StatFiles } from './cgroups/stats.js';
export { parseKeyed, statsFromV1, statsFromV2 } from './cgroups/stats.js';
export type { Argv, InNamespace } from './ip/ip.js';
export { Iproute } from './ip/ip.js';
export type { Address, Link, Neighbor, Route } from './ip/state.js';
export { parseAddresses, parseLinks, parseNeighbors, parseRoutes } from './ip/state.js';
export {
  aliasSchema,
  cgroupNameSchema,
  cidrSchema,
  interfaceNameSchema,
  ipAddressSchema,
  isCidr,
  macSchema,
  namespaceNameSchema,
  ownerSchema,
} from './names.js';
export type {
  ApplyResult,
  ExecOptions,
  LinkChange,
  NamespaceSysctls,
  NetworkHostOptions,
} from './network.js';
export { NetworkHost } from './network.js';
export type { EnterTarget, SandboxPlan } from './sandbox/plan.js';
export { DEFAULT_PATH, overlayOptions, planEnter, planSandbox, SETUP_SCRIPT } from './sandbox/plan.js';
export type { NodePty, NodePtyModule, TerminalExit } from './sandbox/pty.js';
export { loadNodePty, Terminal } from './sandbox/pty.js';
export type { ExecTarget, SandboxExit, SandboxesOptions, TerminalOptions } from './sandbox/sandbox.js';
export { Sandbox, Sandboxes } from './sandbox/sandbox.js';
export type { ParsedSandboxSpec, SandboxSpec } from './sandbox/spec.js';
export { absolutePathSchema, hostnameSchema, sandboxSpecSchema } from './sandbox/spec.js';
export type { FilteredPort, FilterMode, HostFilter, RenderedRuleset } from './secgroups/render.js';
export { digest, renderHostFilter, renderRule, replaceTables } from './secgroups/render.js';
export type { QosStats } from './tc/apply.js';
export type { QdiscInfo, QosPlan } from './tc/plan.js';
export { defaultBurst, ifbName, planQos } from './tc/plan.js';
export type { ParsedQos, QosSpec } from './tc/spec.js';
export { qosSchema } from './tc/spec.js';
export type { ClassStats, QdiscStats } from './tc/stats.js';
export { parseClassStats, parseQdiscStats } from './tc/stats.js';
export type { Batch, HostState, NamespaceState, TopologyPlan } from './topology/plan.js';
export { ownerAlias, parseOwnerAlias, planTopology } from './topology/plan.js';
export type {
  AddressSpec,
  LinkSpec,
  NeighborSpec,
  ParsedLinkSpec,
  ParsedTopology,
  RouteSpec,
  Topology,
} from './topology/spec.js';
export { topologySchema } from './topology/spec.js';
export type { Rate, Size } from './units.js';
export { parseRate, parseSize, rateSchema, renderRate, renderSize, sizeSchema } from './units.js';
export type { AddressRange, Ipv4Network } from './vpc/ipv4.js';
export {
  defaultPools,
  firstFreeAddress,
  formatIpv4Network,
  hostRange,
  intToIpv4,
  ipv4InNetwork,
  ipv4NetworksOverlap,
  ipv4ToInt,
  parseIpv4Cidr,
} from './vpc/ipv4.js';
export type {
  FloatingIpInput,
  FloatingIpRecord,
  HostInput,
  HostRecord,
  NetworkInput,
  NetworkRecord,
  PortBinding,
  PortInput,
  PortOwner,
  PortRecord,
  PortUpdate,
  RouterInput,
  RouterRecord,
  RouterUpdate,
  RuleInput,
  SecurityGroupInput,
  SecurityGroupRecord,
  SecurityGroupRule,
  SubnetInput,
  SubnetRecord,
  SubnetUpdate,
  VpcSnapshot,
} from './vpc/model.js';
export { ruleInputSchema } from './vpc/model.js';
export type { VpcOptions } from './vpc/vpc.js';
export { Vpc } from './vpc/vpc.js';
