/**
 * The tenant's side of the demo as `openstack` commands: what the demo runs and the full-stack test checks,
 * written once so the two cannot drift apart.
 */
import { NubesError } from '@nubes/core';
import type { Credentials, OpenstackCli } from '../cli.js';
import type { GuestFiles } from '../guest/index.js';
import { GUEST_COMMAND_LINE, GUEST_READY_MARKER } from '../guest/index.js';

/** A row of `openstack … -f json`. */
export type Row = Record<string, unknown>;

/**
 * Uploads the guest as an AMI-style trio: kernel (`aki`), ramdisk (`ari`), and a qcow2 disk named `name`
 * whose `kernel_id` and `ramdisk_id` properties link the other two. Returns what the CLI printed for each
 * (the records as created, before their uploads).
 */
export async function uploadTinyImage(
  cli: OpenstackCli,
  who: Credentials,
  files: GuestFiles,
  name = 'tiny',
): Promise<{ kernel: Row; ramdisk: Row; disk: Row }> {
  const create = (format: 'aki' | 'ari', file: string, suffix: string) =>
    cli.json(who, [
      'image',
      'create',
      '--disk-format',
      format,
      '--container-format',
      format,
      '--file',
      file,
      `${name}-${suffix}`,
    ]);
  const kernel = await create('aki', files.kernel, 'kernel');
  const ramdisk = await create('ari', files.ramdisk, 'ramdisk');
  const disk = await cli.json(who, [
    'image',
    'create',
    '--disk-format',
    'qcow2',
    '--container-format',
    'bare',
    '--file',
    files.disk,
    '--property',
    `kernel_id=${kernel.id}`,
    '--property',
    `ramdisk_id=${ramdisk.id}`,
    '--property',
    `os_command_line=${GUEST_COMMAND_LINE}`,
    '--property',
    `nubes_ready_marker=${GUEST_READY_MARKER}`,
    name,
  ]);
  return { kernel, ramdisk, disk };
}

/** Names of what {@link createTenantNetwork} makes. */
export interface TenantNetworkNames {
  network: string;
  subnet: string;
  router: string;
  /** A security group allowing ICMP and TCP 22 in. */
  group: string;
}

/** A network with a 10.0.0.0/24 subnet behind a router, and a security group allowing ping and SSH. */
export async function createTenantNetwork(
  cli: OpenstackCli,
  who: Credentials,
  names: TenantNetworkNames,
): Promise<{ network: Row; subnet: Row }> {
  const network = await cli.json(who, ['network', 'create', names.network]);
  const subnet = await cli.json(who, [
    'subnet',
    'create',
    '--network',
    names.network,
    '--subnet-range',
    '10.0.0.0/24',
    names.subnet,
  ]);
  await cli.json(who, ['router', 'create', names.router]);
  await cli.quiet(who, ['router', 'add', 'subnet', names.router, names.subnet]);
  await cli.json(who, ['security', 'group', 'create', '--description', 'ping and ssh', names.group]);
  await cli.json(who, ['security', 'group', 'rule', 'create', '--protocol', 'icmp', names.group]);
  await cli.json(who, [
    'security',
    'group',
    'rule',
    'create',
    '--protocol',
    'tcp',
    '--dst-port',
    '22',
    names.group,
  ]);
  return { network, subnet };
}

/** `openstack server create --wait` of an m1.nano server on `network` in `securityGroup` and `serverGroup`. */
export function bootServer(
  cli: OpenstackCli,
  who: Credentials,
  server: {
    name: string;
    image: string;
    network: string;
    securityGroup: string;
    serverGroup: string;
    extra?: string[];
  },
): Promise<Row> {
  return cli.json(who, [
    'server',
    'create',
    '--flavor',
    'm1.nano',
    '--image',
    server.image,
    '--network',
    server.network,
    '--security-group',
    server.securityGroup,
    '--hint',
    `group=${server.serverGroup}`,
    ...(server.extra ?? []),
    '--wait',
    server.name,
  ]);
}

/** The first IPv4 address of a server as the CLI prints `addresses`. */
export function addressOf(server: Row): string {
  const addresses = server.addresses;
  const text = typeof addresses === 'string' ? addresses : JSON.stringify(addresses);
  const m = text.match(/\d+\.\d+\.\d+\.\d+/);
  if (!m) throw new NubesError('Internal', `no address in ${text}`);
  return m[0];
}

/** The sequence numbers of the ping replies a `nubes_ping` guest has printed on its console so far. */
export async function pingSequence(cli: OpenstackCli, who: Credentials, serverId: string): Promise<number[]> {
  const r = await cli.run(who, ['console', 'log', 'show', serverId], false);
  if (r.exitCode !== 0) throw new NubesError('CommandFailed', `console log show failed: ${r.stderr.trim()}`);
  return [...r.stdout.matchAll(/nubes-ping .*seq=(\d+)/g)].map((m) => Number(m[1]));
}
