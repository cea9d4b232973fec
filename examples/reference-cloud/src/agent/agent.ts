/**
 * The compute agent of one host (nova-compute's job): it watches the server records in the Store, does the
 * work the compute API asks of its host (`task`), and writes the outcome back with compare-and-put. The
 * network side of the host is a @nubes/netns `VpcAgent` running in the same process: it makes the ports'
 * tap devices, bridges, VXLAN devices and security-group rules; this agent only boots QEMU on those taps.
 */

import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { isNubesError, type JsonValue, NubesError, runCommand, type Store } from '@nubes/core';
import { livePid, migrate, runPaths, Vm, type VmSpec } from '@nubes/kvm';
import { NetworkHost, VpcAgent } from '@nubes/netns';
import type { CloudParts } from '../cloud.js';
import { openParts } from '../cloud.js';
import {
  SERVERS_PREFIX,
  type ServerRecord,
  type ServerTask,
  serverKey,
  serverQuotaDeltas,
} from '../compute/model.js';
import { bindServerPort, detachServerPort } from '../network/ports.js';
import { consoleLogPath, instanceDir, runDir } from './paths.js';

/** The host an agent runs for. */
export interface ComputeHostInfo {
  /** Host name: the scheduler's host id and the Vpc's host name (what `ServerRecord.host` holds). */
  name: string;
  /** The network namespace that is this host's root namespace (simulated hosts); unset: the machine's own. */
  namespace?: string;
  /** Underlay (VTEP) address of the host, registered in the Vpc. */
  underlayIp: string;
  /** Underlay interface, if the VXLAN devices must be bound to one. */
  underlayDev?: string;
}

/** Options of {@link ComputeAgent}. */
export interface ComputeAgentOptions {
  /** The cloud's shared parts; or give `store` and they are opened on it with {@link openParts}. */
  parts?: CloudParts;
  /** The shared Store (when `parts` is not given). */
  store?: Store;
  /** The host. */
  host: ComputeHostInfo;
  /** The data directory shared with the API (image blobs, instance disks, instance directories). */
  dataDir: string;
  /** QEMU accelerator: `tcg` (default: nested KVM is unreliable), `kvm`, or `auto` (KVM when /dev/kvm works). */
  accelerator?: 'auto' | 'kvm' | 'tcg';
  /** What the host offers the scheduler. Default 4 vCPUs, 4096 MiB, 40 GiB. */
  capacity?: { vcpus: number; memoryMiB: number; diskGiB: number };
  /** Availability zone registered for the host. Default `nova`. */
  availabilityZone?: string;
  /**
   * Owner tag of the host's VpcAgent (its namespaces are `<owner>-...`). Default: the host namespace when it
   * is a valid owner tag, else `nubes-<host>`.
   */
  networkOwner?: string;
  /** How long a guest gets to power off after the ACPI button before QEMU is told to quit. Default 10 s. */
  shutdownTimeoutMs?: number;
  /** How long a live migration may take before it is cancelled (the guest stays on its host). Default 120 s. */
  migrationTimeoutMs?: number;
  /** How long to wait for the VpcAgent to make a port's tap device. Default 60 s. */
  tapTimeoutMs?: number;
  /** How long a guest gets to print the image's ready marker (`nubes_ready_marker`). Default 180 s. */
  bootTimeoutMs?: number;
  /**
   * The namespace of another host (the target of a live migration on this machine). Default: this host's
   * namespace with its host name replaced (`rc-1-h1` -> `rc-1-h2`), as {@link SimulatedHosts} names them.
   */
  hostNamespace?: (host: string) => string | undefined;
  /** Called with errors of the background loops (a task that failed is also recorded on the server). */
  onError?: (error: unknown) => void;
  /** Called with one line per thing the agent does, for logs. */
  log?: (line: string) => void;
}

/**
 * Image property naming a line the guest prints on its console when it has booted. When the image has it,
 * the agent reports `ACTIVE` only once the line appeared (or `ERROR` after `bootTimeoutMs`); without it,
 * once QEMU runs, as Nova does.
 */
export const READY_MARKER_PROPERTY = 'nubes_ready_marker';

/** The fault recorded on a server whose build was interrupted by the agent's own death. */
export const RESTARTED_DURING_BUILD = 'compute agent restarted during build';

/**
 * The kernel command line of a server booted from a kernel image: the image's `os_command_line` (or
 * `console=ttyS0`) plus the guest's network settings from its first port, its hostname, and the address in
 * its `nubes_ping` metadata if it has one. The demo guest reads `nubes.ip`, `nubes.gw`, `nubes.hostname` and
 * `nubes.ping` in its init; other kernels ignore unknown parameters.
 */
export function guestCommandLine(
  base: string | undefined,
  server: Pick<ServerRecord, 'name' | 'ports'> & { metadata?: Record<string, string> },
): string {
  const parts = [(base ?? 'console=ttyS0').trim()];
  const port = server.ports[0];
  if (port?.ip) parts.push(`nubes.ip=${port.ip}/${port.prefixLength}`);
  if (port?.gateway) parts.push(`nubes.gw=${port.gateway}`);
  // A hostname is one DNS label: anything else in a server name becomes '-'.
  const label = server.name
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
  if (label) parts.push(`nubes.hostname=${label}`);
  // Only a dotted quad goes on the command line: anything else could smuggle in other kernel parameters.
  const ping = server.metadata?.nubes_ping;
  if (ping && IPV4.test(ping)) parts.push(`nubes.ping=${ping}`);
  return parts.join(' ');
}

const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$/;
const OWNER = /^[a-z0-9][a-z0-9-]{0,23}$/;
const SAFE_NAMESPACE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const GIB = 2 ** 30;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A server's work was abandoned because the record changed under it (deleted, moved, re-tasked). */
class Superseded extends Error {}

/** Per-server work queue: one task at a time per server, re-run when the record changed meanwhile. */
interface Slot {
  running: Promise<void> | undefined;
  dirty: boolean;
}

/** The compute agent of one host. */
export class ComputeAgent {
  /** The shared parts it works with. */
  readonly parts: CloudParts;
  /** The host. */
  readonly host: ComputeHostInfo;
  private readonly o: ComputeAgentOptions;
  private readonly vpcAgent: VpcAgent;
  private readonly net: NetworkHost;
  private readonly vms = new Map<string, Vm>();
  /** Servers whose QEMU this agent is stopping on purpose (an exit is then not a guest power-off). */
  private readonly stopping = new Set<string>();
  private readonly slots = new Map<string, Slot>();
  private vpcLoop: { close(): Promise<void>; idle(): Promise<void> } | undefined;
  private watch: { close(): void } | undefined;
  private watching: Promise<void> | undefined;
  private stopped = true;
  private qemuBinary: string | undefined;

  constructor(options: ComputeAgentOptions) {
    if (!options.parts && !options.store)
      throw new NubesError('InvalidInput', 'options: give parts or store', {
        details: { field: 'options.store' },
      });
    if (options.host.namespace !== undefined && !SAFE_NAMESPACE.test(options.host.namespace))
      throw new NubesError('InvalidInput', 'host.namespace: not a valid namespace name', {
        details: { field: 'host.namespace' },
      });
    this.o = options;
    this.host = options.host;
    this.parts = options.parts ?? openParts(options.store as Store, options.dataDir);
    const ns = options.host.namespace;
    const owner =
      options.networkOwner ?? (ns && OWNER.test(ns) ? ns : `nubes-${options.host.name}`.slice(0, 24));
    this.vpcAgent = new VpcAgent({
      vpc: this.parts.vpc,
      host: options.host.name,
      owner,
      ...(ns ? { namespace: ns } : {}),
    });
    this.net = new NetworkHost({ owner });
  }

  /** The serial console log of a server (see {@link consoleLogPath}). */
  consoleLog(serverId: string): string {
    return consoleLogPath(this.o.dataDir, serverId);
  }

  /**
   * The running VM of a server on this host, if any: its `console` can be written to (`vm.console.write`)
   * and waited on (`vm.console.waitFor`), as `virsh console` would.
   */
  vm(serverId: string): Vm | undefined {
    const vm = this.vms.get(serverId);
    return vm && (vm.state === 'running' || vm.state === 'paused') ? vm : undefined;
  }

  /**
   * Registers the host (scheduler inventory and Vpc), starts the network agent, reconciles what a previous
   * agent process left, then watches the server records. Resolves once the first full pass is scheduled.
   */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    const { inventory, vpc } = this.parts;
    const capacity = this.o.capacity ?? { vcpus: 4, memoryMiB: 4096, diskGiB: 40 };
    await inventory.registerHost({
      id: this.host.name,
      name: this.host.name,
      availabilityZone: this.o.availabilityZone ?? 'nova',
      capacity,
    });
    await vpc.registerHost({
      name: this.host.name,
      underlayIp: this.host.underlayIp,
      ...(this.host.underlayDev ? { underlayDev: this.host.underlayDev } : {}),
    });
    this.qemuBinary = await this.writeQemuWrapper();
    this.vpcLoop = await this.vpcAgent.watch({
      debounceMs: 100,
      retryMs: 1000,
      // Level-triggered safety net: a host that missed a change (a guest's peer unreachable until some
      // later change came along was seen once in CI) is put right within one period.
      resyncMs: 5000,
      onError: (error) => this.o.onError?.(error),
    });
    await this.reconcileOnStart();
    const watch = await this.parts.store.watch<ServerRecord>(SERVERS_PREFIX);
    this.watch = watch;
    this.watching = this.consume(watch);
    await this.relist();
  }

  /**
   * Stops watching and waits for work in progress. Guests keep running (an agent restart must not take
   * them down) unless `killGuests` is set, which also tears down the host's network devices.
   */
  async stop(options: { killGuests?: boolean } = {}): Promise<void> {
    this.stopped = true;
    this.watch?.close();
    await this.watching?.catch(() => {});
    await Promise.all([...this.slots.values()].map((s) => s.running?.catch(() => {})));
    await this.vpcLoop?.close();
    this.vpcLoop = undefined;
    if (options.killGuests) {
      for (const [id, vm] of this.vms) {
        this.stopping.add(id);
        await vm.kill().catch(() => {});
      }
      await this.vpcAgent.teardown().catch(() => {});
    }
    // Drop the QMP and console connections (QEMU accepts one of each) so a next agent can attach.
    for (const vm of this.vms.values()) await release(vm);
    this.vms.clear();
  }

  /** Waits until the network agent has applied everything it has seen (tests and demos use it). */
  async networkIdle(): Promise<void> {
    await this.vpcLoop?.idle();
  }

  // ---- the loop ----------------------------------------------------------------------------------

  private async consume(watch: AsyncIterable<{ key: string }>): Promise<void> {
    for (;;) {
      try {
        for await (const event of watch) this.schedule(event.key.slice(SERVERS_PREFIX.length));
        return;
      } catch (error) {
        if (this.stopped) return;
        // A compacted history (`Gone`) or a broken connection: reopen and re-list, so nothing is missed.
        this.o.onError?.(error);
        await sleep(1000);
        if (this.stopped) return;
        const next = await this.parts.store.watch<ServerRecord>(SERVERS_PREFIX).catch(() => undefined);
        if (!next) continue;
        this.watch = next;
        watch = next;
        await this.relist();
      }
    }
  }

  private async relist(): Promise<void> {
    let startAfter: string | undefined;
    do {
      const page = await this.parts.store.list<ServerRecord>(SERVERS_PREFIX, {
        limit: 1000,
        ...(startAfter ? { startAfter } : {}),
      });
      for (const entry of page.items) this.schedule(entry.key.slice(SERVERS_PREFIX.length));
      startAfter = page.next;
    } while (startAfter);
  }

  private schedule(serverId: string): void {
    if (this.stopped || !serverId) return;
    let slot = this.slots.get(serverId);
    if (!slot) {
      slot = { running: undefined, dirty: false };
      this.slots.set(serverId, slot);
    }
    slot.dirty = true;
    if (slot.running) return;
    const s = slot;
    s.running = (async () => {
      while (s.dirty && !this.stopped) {
        s.dirty = false;
        try {
          await this.handle(serverId);
        } catch (error) {
          if (!(error instanceof Superseded)) this.o.onError?.(error);
        }
      }
      s.running = undefined;
      if (!this.vms.has(serverId)) this.slots.delete(serverId);
    })();
  }

  private async handle(serverId: string): Promise<void> {
    const entry = await this.parts.store.get<ServerRecord>(serverKey(serverId));
    const server = entry?.value;
    if (!server || server.host !== this.host.name) {
      // Gone, or assigned elsewhere (and not migrating from here): a QEMU of ours for it must not run on.
      const vm = this.vms.get(serverId);
      if (vm && !(server?.task === 'migrating' && server.migration?.sourceHost === this.host.name)) {
        this.log(`${serverId}: not assigned here any more, stopping its QEMU`);
        await this.destroyVm(serverId);
      }
      return;
    }
    if (!server.task) {
      // A QEMU started for this host by someone else (the source agent of a migration, or an earlier
      // process of this agent) is taken over.
      if (!this.vms.has(serverId) && server.powerState === 1) await this.adopt(serverId);
      return;
    }
    this.log(`${serverId}: ${server.task}`);
    switch (server.task) {
      case 'spawning':
        return this.spawn(server);
      case 'powering-off':
        return this.powerOff(server);
      case 'powering-on':
        return this.powerOn(server);
      case 'rebooting':
        return this.reboot(server);
      case 'deleting':
        return this.remove(server);
      case 'migrating':
        return this.migrate(server);
    }
  }

  // ---- tasks -------------------------------------------------------------------------------------

  private async spawn(server: ServerRecord): Promise<void> {
    const dir = instanceDir(this.o.dataDir, server.id);
    const run = runDir(this.o.dataDir, server.id, this.host.name);
    try {
      await mkdir(run, { recursive: true });
      // The marker says "a build started here"; an agent that finds it on start knows the build was cut off.
      await writeFile(join(run, 'building'), `${new Date().toISOString()}\n`);
      const image = await this.parts.images.get(server.imageId);
      const existing = await this.parts.images.instanceDisk(server.id).catch(() => undefined);
      const disk =
        existing ??
        (await this.parts.images.prepareInstanceDisk(server.imageId, {
          instanceId: server.id,
          ...(server.flavor.diskGiB * GIB > (image.virtualSize ?? 0)
            ? { size: server.flavor.diskGiB * GIB }
            : {}),
        }));
      const kernelId = image.properties.kernel_id;
      const ramdiskId = image.properties.ramdisk_id;
      if (kernelId) await this.fetchImage(kernelId, join(dir, 'kernel'));
      if (ramdiskId) await this.fetchImage(ramdiskId, join(dir, 'ramdisk'));
      const spec: VmSpec = {
        name: this.host.name,
        accel: this.o.accelerator ?? 'tcg',
        cpu: { count: server.flavor.vcpus },
        memoryMiB: server.flavor.ramMiB,
        balloon: false,
        boot: kernelId
          ? {
              from: 'kernel',
              kernel: join(dir, 'kernel'),
              ...(ramdiskId ? { initrd: join(dir, 'ramdisk') } : {}),
              cmdline: guestCommandLine(image.properties.os_command_line, server),
            }
          : { from: 'drive', drive: 'disk0' },
        drives: [{ id: 'disk0', path: disk.path, format: 'qcow2', cache: 'writeback', aio: 'threads' }],
        nics: server.ports.map((p, i) => ({
          id: `net${i}`,
          mac: p.mac,
          network: { type: 'tap', ifname: p.tap },
        })),
      };
      for (const port of server.ports) await this.waitForTap(port.tap);
      await this.current(server.id, 'spawning');
      const vm = await this.startVm(server.id, spec);
      const marker = image.properties[READY_MARKER_PROPERTY];
      if (marker) {
        await vm.console.waitFor(new RegExp(escapeRegExp(marker)), {
          timeoutMs: this.o.bootTimeoutMs ?? 180_000,
        });
      }
      if (server.reservationId) await this.parts.quota.commit(server.reservationId);
      await this.update(server.id, (s) => {
        if (s.host !== this.host.name) return undefined;
        const { reservationId: _committed, ...rest } = s;
        return {
          ...rest,
          status: s.task === 'spawning' ? 'ACTIVE' : s.status,
          task: s.task === 'spawning' ? null : s.task,
          powerState: 1,
          launchedAt: new Date().toISOString(),
        };
      });
      await rm(join(run, 'building'), { force: true });
      this.log(`${server.id}: ACTIVE`);
    } catch (error) {
      if (error instanceof Superseded || this.stopped) throw error;
      await this.failBuild(server.id, messageOf(error));
    }
  }

  /**
   * A build that cannot finish, as Nova cleans one up: the guest and its disk go, the ports are deleted
   * (their taps with them), the quota reservation is rolled back, and the server is `ERROR` with a fault.
   * The scheduler's allocation stays until the server is deleted.
   */
  private async failBuild(serverId: string, message: string): Promise<void> {
    this.log(`${serverId}: build failed: ${message}`);
    await this.destroyVm(serverId);
    await this.releaseDisk(serverId);
    const entry = await this.parts.store.get<ServerRecord>(serverKey(serverId));
    if (!entry) return;
    for (const port of entry.value.ports)
      await detachServerPort(this.parts.vpc, port, { quota: this.parts.quota }).catch(ignoreNotFound);
    await this.giveBackQuota(entry.value);
    await this.update(serverId, (s) => ({
      ...s,
      status: 'ERROR',
      task: s.task === 'spawning' ? null : s.task,
      powerState: 0,
      ports: [],
      fault: { code: 500, message, created: new Date().toISOString() },
    }));
  }

  private async powerOff(server: ServerRecord): Promise<void> {
    const vm = this.vms.get(server.id);
    if (vm && (vm.state === 'running' || vm.state === 'paused' || vm.state === 'stopping')) {
      this.stopping.add(server.id);
      try {
        await vm.shutdown({ timeoutMs: this.o.shutdownTimeoutMs ?? 10_000 });
      } finally {
        this.stopping.delete(server.id);
      }
    }
    await this.finish(server.id, 'powering-off', { status: 'SHUTOFF', powerState: 4 });
  }

  private async powerOn(server: ServerRecord): Promise<void> {
    const vm = this.vm(server.id);
    if (!vm) await this.restartVm(server);
    await this.finish(server.id, 'powering-on', { status: 'ACTIVE', powerState: 1 });
  }

  private async reboot(server: ServerRecord): Promise<void> {
    const vm = this.vm(server.id);
    // The demo guest has no ACPI reboot handling, so both soft and hard reboot are a reset (`system_reset`).
    if (vm) await vm.reset();
    else await this.restartVm(server);
    await this.finish(server.id, 'rebooting', { status: 'ACTIVE', powerState: 1 });
  }

  private async remove(server: ServerRecord): Promise<void> {
    await this.destroyVm(server.id);
    await this.releaseDisk(server.id);
    for (const port of server.ports)
      await detachServerPort(this.parts.vpc, port, { quota: this.parts.quota }).catch(ignoreNotFound);
    await this.parts.inventory.release(server.id).catch(ignoreNotFound);
    await this.giveBackQuota(server, true);
    await rm(instanceDir(this.o.dataDir, server.id), { recursive: true, force: true });
    // Deleted only if nobody changed it since we read it; a changed record is looked at again.
    const entry = await this.parts.store.get<ServerRecord>(serverKey(server.id));
    if (entry?.value.task === 'deleting' && entry.value.host === this.host.name)
      await this.parts.store.delete(serverKey(server.id), { ifRevision: entry.revision }).catch((error) => {
        if (!isNubesError(error, 'Conflict')) throw error;
        this.schedule(server.id);
      });
    this.log(`${server.id}: deleted`);
  }

  /**
   * Live migration on shared storage: the destination QEMU is started in the target host's namespace (same
   * machine, same data directory), the guest's RAM moves over a unix socket, then the ports are re-bound
   * to the target host and the record names it. The target's agent then owns the server; its own QEMU
   * object for it is made by re-attaching (see {@link reconcileOnStart} and `adopt`).
   */
  private async migrate(server: ServerRecord): Promise<void> {
    const target = server.migration?.targetHost;
    const fail = async (message: string) => {
      await this.update(server.id, (s) => {
        const { migration: _m, ...rest } = s;
        return {
          ...rest,
          task: s.task === 'migrating' ? null : s.task,
          status: 'ACTIVE',
          fault: { code: 500, message, created: new Date().toISOString() },
        };
      });
    };
    const source = this.vm(server.id);
    if (!target || target === this.host.name) return fail('migration: no other target host');
    if (!source) return fail('migration: the server is not running on its host');
    const targetNs = await this.targetNamespace(target);
    let switched = false;
    try {
      // The ports stay bound here until the guest has moved: the source QEMU keeps using its taps, and a tap
      // deleted under a running QEMU wedges its migration. So the target gets plain taps of the same names
      // now (Nova's pre_live_migration step on the destination, done from here because both hosts are on
      // this machine); the target's VpcAgent adopts and wires them once the ports move.
      // Same settings as the VpcAgent gives a port's tap (the network's MTU), or it would refuse to adopt it.
      for (const port of server.ports) {
        const ns = targetNs ? ['-n', targetNs] : [];
        const { mtu } = await this.parts.vpc.getNetwork(port.networkId);
        await runCommand('ip', [...ns, 'tuntap', 'add', 'dev', port.tap, 'mode', 'tap']);
        await runCommand('ip', [...ns, 'link', 'set', 'dev', port.tap, 'mtu', String(mtu)]);
      }
      const wrapper = await this.writeQemuWrapper(targetNs, target);
      const destination = await Vm.create(
        { ...source.spec, name: target, incoming: true },
        { runRoot: instanceDir(this.o.dataDir, server.id), ...(wrapper ? { qemuBinary: wrapper } : {}) },
      );
      this.log(`${server.id}: destination QEMU started on ${target}`);
      this.stopping.add(server.id);
      try {
        let logged = 0;
        await migrate(source, destination, {
          storage: 'shared',
          transport: 'unix',
          // A guest under TCG can dirty memory faster than it is sent; throttling it lets the copy converge.
          autoConverge: true,
          timeoutMs: this.o.migrationTimeoutMs ?? 120_000,
          onProgress: (p) => {
            if (Date.now() - logged < 2000) return;
            logged = Date.now();
            this.log(
              `${server.id}: migration ${p.phase}: ${p.transferredBytes} sent, ${p.remainingBytes} left`,
            );
          },
        });
      } catch (error) {
        await destination.kill().catch(() => {});
        for (const port of server.ports)
          await runCommand('ip', [...(targetNs ? ['-n', targetNs] : []), 'link', 'del', port.tap]).catch(
            () => {},
          );
        throw error;
      } finally {
        this.stopping.delete(server.id);
      }
      switched = true;
      this.vms.delete(server.id);
      await this.linkConsole(server.id, target);
      // Leave the connections to the target's agent, which re-attaches on seeing the record.
      await release(destination);
      for (const port of server.ports)
        await bindServerPort(this.parts.vpc, port.portId, { host: target, tap: port.tap });
      await this.update(server.id, (s) => {
        const { migration: _m, ...rest } = s;
        return { ...rest, host: target, task: null, status: 'ACTIVE', powerState: 1 };
      });
      await rm(runDir(this.o.dataDir, server.id, this.host.name), { recursive: true, force: true });
      this.log(`${server.id}: migrated to ${target}`);
    } catch (error) {
      if (switched) {
        // The guest runs on the target already: the record must say so, whatever failed after the switch.
        this.o.onError?.(error);
        await this.update(server.id, (s) => {
          const { migration: _m, ...rest } = s;
          return { ...rest, host: target, task: null, status: 'ACTIVE', powerState: 1 };
        });
        return;
      }
      // The API moved the scheduler's claim to the target before asking; it comes back with the server.
      await this.parts.inventory.move(server.id, this.host.name).catch(() => {});
      await fail(`migration failed: ${messageOf(error)}`);
    }
  }

  // ---- QEMU --------------------------------------------------------------------------------------

  private async startVm(serverId: string, spec: VmSpec): Promise<Vm> {
    const vm = Vm.define(spec, {
      runRoot: instanceDir(this.o.dataDir, serverId),
      ...(this.qemuBinary ? { qemuBinary: this.qemuBinary } : {}),
    });
    await vm.start();
    this.track(serverId, vm);
    await this.linkConsole(serverId, this.host.name);
    return vm;
  }

  /** Boots a stopped server again from its spec (its disk and kernel files are still there). */
  private async restartVm(server: ServerRecord): Promise<void> {
    let spec: VmSpec;
    try {
      const saved = JSON.parse(
        await readFile(join(runDir(this.o.dataDir, server.id, this.host.name), 'spec.json'), 'utf8'),
      ) as { spec: VmSpec };
      spec = saved.spec;
    } catch (cause) {
      throw new NubesError('NotFound', `server ${server.id} has no QEMU spec on ${this.host.name}`, {
        cause,
      });
    }
    const vm = this.vms.get(server.id);
    if (vm && (vm.state === 'stopped' || vm.state === 'crashed' || vm.state === 'defined')) {
      await vm.start();
      await this.linkConsole(server.id, this.host.name);
      return;
    }
    await this.startVm(server.id, { ...spec, name: this.host.name });
  }

  private track(serverId: string, vm: Vm): void {
    this.vms.set(serverId, vm);
    vm.on('exit', () => {
      if (this.stopping.has(serverId) || this.stopped) return;
      // The guest powered itself off, or QEMU died: Nova's power-state sync records it as SHUTOFF.
      this.log(`${serverId}: QEMU exited`);
      void this.update(serverId, (s) =>
        s.host === this.host.name && !s.task && s.status === 'ACTIVE'
          ? { ...s, status: 'SHUTOFF', powerState: 4 }
          : undefined,
      ).catch((error) => this.o.onError?.(error));
    });
  }

  /** Kills a server's QEMU on this host, whether this process started it or not. */
  private async destroyVm(serverId: string): Promise<void> {
    const vm = this.vms.get(serverId);
    this.stopping.add(serverId);
    try {
      if (vm) await vm.kill();
      await killStale(runDir(this.o.dataDir, serverId, this.host.name));
    } finally {
      this.stopping.delete(serverId);
      this.vms.delete(serverId);
    }
  }

  /** `console.log` of the instance directory points at the log of the QEMU on `host`. */
  private async linkConsole(serverId: string, host: string): Promise<void> {
    const link = consoleLogPath(this.o.dataDir, serverId);
    const temp = `${link}.${process.pid}.tmp`;
    await rm(temp, { force: true });
    await symlink(join(host, 'console.log'), temp);
    await rename(temp, link);
  }

  /**
   * QEMU must open the port's tap in the host's namespace, where the VpcAgent made it; @nubes/kvm spawns
   * one binary, so the binary is a two-line wrapper that enters the namespace (`ip netns exec` ends in
   * `execvp`, so the pid @nubes/kvm sees is QEMU's own).
   */
  private async writeQemuWrapper(
    namespace = this.host.namespace,
    host = this.host.name,
  ): Promise<string | undefined> {
    if (!namespace) return undefined;
    if (!SAFE_NAMESPACE.test(namespace))
      throw new NubesError('InvalidInput', `namespace ${namespace}: not a valid namespace name`);
    const dir = join(this.o.dataDir, 'agents', host);
    await mkdir(dir, { recursive: true });
    const path = join(dir, 'qemu-system-x86_64');
    const temp = `${path}.${process.pid}.tmp`;
    await writeFile(temp, `#!/bin/sh\nexec ip netns exec ${namespace} qemu-system-x86_64 "$@"\n`, {
      mode: 0o755,
    });
    await rename(temp, path);
    return path;
  }

  private async targetNamespace(target: string): Promise<string | undefined> {
    if (this.o.hostNamespace) return this.o.hostNamespace(target);
    // The target's namespace is not in the Store; simulated hosts are named `<prefix>-<host>` like ours.
    const ns = this.host.namespace;
    if (!ns?.endsWith(`-${this.host.name}`)) return undefined;
    return `${ns.slice(0, -this.host.name.length)}${target}`;
  }

  private async waitForTap(tap: string, namespace = this.host.namespace): Promise<void> {
    const deadline = Date.now() + (this.o.tapTimeoutMs ?? 60_000);
    for (;;) {
      const link = await this.net.link(tap, namespace).catch(() => undefined);
      // Attached to its bridge means the VpcAgent has wired it (QEMU would otherwise create a stray tap).
      if (link?.master) return;
      if (Date.now() > deadline)
        throw new NubesError('Timeout', `tap ${tap} did not appear on host ${this.host.name}`, {
          details: { tap, host: this.host.name },
        });
      await sleep(200);
    }
  }

  private async fetchImage(imageId: string, path: string): Promise<void> {
    const download = await this.parts.images.download(imageId);
    const temp = `${path}.${process.pid}.tmp`;
    await pipeline(download.stream, createWriteStream(temp));
    await rename(temp, path);
  }

  private async releaseDisk(serverId: string): Promise<void> {
    await this.parts.images.releaseInstanceDisk(serverId).catch(ignoreNotFound);
  }

  /**
   * Gives a server's quota back, once: a reservation still on the record is rolled back (committed ones
   * are cleared from the record), otherwise, on delete, the committed usage is released under an
   * idempotency key so a retried delete releases it once.
   */
  private async giveBackQuota(server: ServerRecord, deleting = false): Promise<void> {
    const { quota } = this.parts;
    const release = () =>
      quota.release(server.projectId, serverQuotaDeltas(server), {
        idempotencyKey: `server-delete-${server.id}`,
      });
    if (server.reservationId) {
      try {
        await quota.rollback(server.reservationId);
      } catch (error) {
        if (isNubesError(error, 'NotFound')) return;
        if (!isNubesError(error, 'Conflict')) throw error;
        // Committed before the record said so (an agent that died in between): usage is counted.
        await release();
      }
      return;
    }
    if (deleting) await release();
  }

  // ---- records -----------------------------------------------------------------------------------

  /** Throws {@link Superseded} when the server's task is no longer `task` on this host. */
  private async current(serverId: string, task: ServerTask): Promise<ServerRecord> {
    const entry = await this.parts.store.get<ServerRecord>(serverKey(serverId));
    if (!entry || entry.value.host !== this.host.name || entry.value.task !== task) throw new Superseded();
    return entry.value;
  }

  /** Clears `task` (when it is still `task`) and sets the outcome. */
  private finish(serverId: string, task: ServerTask, outcome: Pick<ServerRecord, 'status' | 'powerState'>) {
    return this.update(serverId, (s) =>
      s.host === this.host.name && s.task === task ? { ...s, ...outcome, task: null } : undefined,
    );
  }

  /**
   * Compare-and-put of a server record: `change` gets the current record (return `undefined` to write
   * nothing); a concurrent write makes it run again on the newer record.
   */
  private async update(
    serverId: string,
    change: (server: ServerRecord) => ServerRecord | undefined,
  ): Promise<ServerRecord | undefined> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const entry = await this.parts.store.get<ServerRecord>(serverKey(serverId));
      if (!entry) return undefined;
      const next = change(entry.value);
      if (!next) return entry.value;
      const value = { ...next, updated: new Date().toISOString() };
      try {
        await this.parts.store.put(serverKey(serverId), value as unknown as JsonValue, {
          ifRevision: entry.revision,
        });
        return value;
      } catch (error) {
        if (!isNubesError(error, 'Conflict')) throw error;
      }
    }
    throw new NubesError('Conflict', `server ${serverId}: too many concurrent changes`);
  }

  // ---- start-up ------------------------------------------------------------------------------------

  /**
   * What a previous agent process left: QEMUs of servers that are gone or not assigned here are killed and
   * their files removed; a build it was doing is failed (`ERROR`, fault {@link RESTARTED_DURING_BUILD},
   * reservation rolled back); QEMUs of servers still assigned here are re-attached.
   */
  private async reconcileOnStart(): Promise<void> {
    const root = join(this.o.dataDir, 'instances');
    const ids = await readdir(root).catch(() => [] as string[]);
    for (const id of ids) {
      const run = runDir(this.o.dataDir, id, this.host.name);
      const ours = await readdir(run).catch(() => undefined);
      if (!ours) continue;
      const server = (await this.parts.store.get<ServerRecord>(serverKey(id)))?.value;
      if (!server || server.host !== this.host.name) {
        this.log(`${id}: left over from a server that is gone or elsewhere, cleaning up`);
        await killStale(run);
        if (!server) {
          await this.releaseDisk(id);
          await rm(instanceDir(this.o.dataDir, id), { recursive: true, force: true });
        } else await rm(run, { recursive: true, force: true });
        continue;
      }
      if (server.task === 'spawning' && ours.includes('building')) {
        await killStale(run);
        await this.failBuild(id, RESTARTED_DURING_BUILD);
        continue;
      }
      await this.adopt(id);
    }
  }

  /** Re-attaches to a QEMU of this host that an earlier agent process started. */
  private async adopt(serverId: string): Promise<void> {
    try {
      const vm = await Vm.attach(this.host.name, {
        runRoot: instanceDir(this.o.dataDir, serverId),
        ...(this.qemuBinary ? { qemuBinary: this.qemuBinary } : {}),
      });
      this.track(serverId, vm);
    } catch (error) {
      if (!isNubesError(error, 'NotFound')) throw error;
      // Not running: if the record says it should, Nova's power-state sync would record SHUTOFF.
      await this.update(serverId, (s) =>
        s.host === this.host.name && !s.task && s.status === 'ACTIVE'
          ? { ...s, status: 'SHUTOFF', powerState: 4 }
          : undefined,
      );
    }
  }

  private log(line: string): void {
    this.o.log?.(`[${this.host.name}] ${line}`);
  }
}

/** SIGKILLs the QEMU of a run directory (if its pidfile names a live QEMU of that directory) and waits. */
async function killStale(dir: string): Promise<void> {
  const paths = runPaths(dir);
  const pid = await livePid(paths);
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 100 && (await livePid(paths)) !== undefined; i++) await sleep(50);
}

/** Closes this process's QMP and console connections to a running QEMU, leaving QEMU running. */
async function release(vm: Vm): Promise<void> {
  if (vm.state !== 'running' && vm.state !== 'paused') return;
  vm.console.close();
  await vm.qmp.client.close().catch(() => {});
}

function ignoreNotFound(error: unknown): void {
  if (!isNubesError(error, 'NotFound')) throw error;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
