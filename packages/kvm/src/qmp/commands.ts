import type { ExecuteOptions, QmpClient } from './client.js';
import type { QmpEvents } from './events.js';

// Argument and result types mirror QEMU's QAPI schema names (hyphens included) so QEMU's own
// reference applies to them word for word; only the method names are camelCase.

/** QEMU's run states (`query-status`). */
export type RunState =
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo';

/** `query-status` result. */
export interface StatusInfo {
  running: boolean;
  status: RunState;
  singlestep?: boolean;
}

/** One entry of `query-cpus-fast`. */
export interface CpuInfoFast {
  'cpu-index': number;
  'qom-path': string;
  'thread-id': number;
  target: string;
  props?: Record<string, number>;
}

/** The medium of a block device (`query-block` → `inserted`). */
export interface BlockDeviceInfo {
  file: string;
  'node-name'?: string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  image?: { filename: string; format: string; 'virtual-size': number; 'backing-filename'?: string };
  [key: string]: unknown;
}

/** One entry of `query-block`. */
export interface BlockInfo {
  device: string;
  qdev?: string;
  type: string;
  removable: boolean;
  locked: boolean;
  inserted?: BlockDeviceInfo;
}

/** I/O counters of one block node (`query-blockstats` → `stats`). */
export interface BlockDeviceStats {
  rd_bytes: number;
  wr_bytes: number;
  rd_operations: number;
  wr_operations: number;
  flush_operations: number;
  rd_total_time_ns: number;
  wr_total_time_ns: number;
  flush_total_time_ns: number;
  wr_highest_offset: number;
  [key: string]: unknown;
}

/** One entry of `query-blockstats`. */
export interface BlockStats {
  device?: string;
  qdev?: string;
  'node-name'?: string;
  stats: BlockDeviceStats;
  parent?: BlockStats;
  backing?: BlockStats;
}

/** Job states (`JobStatus`). */
export type JobStatus =
  | 'undefined'
  | 'created'
  | 'running'
  | 'paused'
  | 'ready'
  | 'standby'
  | 'waiting'
  | 'pending'
  | 'aborting'
  | 'concluded'
  | 'null';

/** One entry of `query-jobs`. */
export interface JobInfo {
  id: string;
  type: string;
  status: JobStatus;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** RAM counters of a migration. */
export interface MigrationStats {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  normal: number;
  'normal-bytes': number;
  'dirty-pages-rate': number;
  mbps: number;
  'dirty-sync-count': number;
  'postcopy-requests': number;
  'page-size': number;
  [key: string]: unknown;
}

/** Migration states (`MigrationStatus`). */
export type MigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

/** `query-migrate` result. */
export interface MigrationInfo {
  status?: MigrationStatus;
  ram?: MigrationStats;
  'total-time'?: number;
  'expected-downtime'?: number;
  downtime?: number;
  'setup-time'?: number;
  /** The vCPU throttle auto-converge applies now, percent (present once it throttles). */
  'cpu-throttle-percentage'?: number;
  'error-desc'?: string;
  [key: string]: unknown;
}

/** Migration capabilities this package knows by name (any other name is passed through). */
export type MigrationCapabilityName =
  | 'xbzrle'
  | 'auto-converge'
  | 'postcopy-ram'
  | 'events'
  | 'compress'
  | 'multifd'
  | 'pause-before-switchover'
  | 'late-block-activate'
  | 'zero-copy-send'
  | (string & {});

/** Migration parameters (`migrate-set-parameters`): `downtime-limit` is in ms, `max-bandwidth` in bytes/s. */
export interface MigrationParameters {
  'downtime-limit'?: number;
  'max-bandwidth'?: number;
  'max-postcopy-bandwidth'?: number;
  'cpu-throttle-initial'?: number;
  'cpu-throttle-increment'?: number;
  'multifd-channels'?: number;
  [key: string]: unknown;
}

/** `query-balloon` result. */
export interface BalloonInfo {
  /** Memory the guest has, in bytes. */
  actual: number;
}

/** Arguments of `blockdev-snapshot-sync`. */
export interface BlockdevSnapshotSyncArgs {
  device?: string;
  'node-name'?: string;
  'snapshot-file': string;
  'snapshot-node-name'?: string;
  format?: string;
  mode?: 'existing' | 'absolute-paths';
}

/** Arguments of `block-commit`. */
export interface BlockCommitArgs {
  'job-id'?: string;
  device: string;
  'base-node'?: string;
  base?: string;
  'top-node'?: string;
  top?: string;
  speed?: number;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
}

/** Arguments of `blockdev-mirror`. */
export interface BlockdevMirrorArgs {
  'job-id'?: string;
  device: string;
  target: string;
  sync: 'full' | 'top' | 'none';
  speed?: number;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
  'copy-mode'?: 'background' | 'write-blocking';
}

/** Arguments of `drive-mirror`. */
export interface DriveMirrorArgs {
  'job-id'?: string;
  device: string;
  target: string;
  format?: string;
  sync: 'full' | 'top' | 'none';
  mode?: 'existing' | 'absolute-paths';
  speed?: number;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
}

/** Arguments of `migrate`. */
export interface MigrateArgs {
  uri: string;
  detach?: boolean;
  resume?: boolean;
}

/** Arguments of `device_add`: the driver, its id and the driver's own properties. */
export interface DeviceAddArgs {
  driver: string;
  id?: string;
  bus?: string;
  [property: string]: unknown;
}

/** Arguments of `netdev_add` (the `Netdev` union). */
export interface NetdevAddArgs {
  type: 'user' | 'tap' | 'socket' | 'stream' | 'dgram' | 'hubport' | 'bridge' | (string & {});
  id: string;
  [option: string]: unknown;
}

/** Arguments of `blockdev-add` (the `BlockdevOptions` union). */
export interface BlockdevAddArgs {
  driver: string;
  'node-name'?: string;
  [option: string]: unknown;
}

/**
 * Typed wrappers for the QMP commands a VM manager uses, over a {@link QmpClient}. Every method takes
 * the same {@link ExecuteOptions} as `execute` (timeout, cancellation), and {@link QmpCommands.execute}
 * remains for every other command.
 */
export class QmpCommands {
  constructor(
    /** The underlying client. */
    readonly client: QmpClient,
  ) {}

  /** The client's events. */
  get events(): QmpEvents {
    return this.client.events;
  }

  /** Any command by name: the escape hatch for what has no wrapper. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options?: ExecuteOptions,
  ): Promise<T> {
    return this.client.execute<T>(command, args, options);
  }

  /** `query-status`. */
  queryStatus(options?: ExecuteOptions): Promise<StatusInfo> {
    return this.execute('query-status', undefined, options);
  }
  /** `stop`: pause every vCPU. */
  async stop(options?: ExecuteOptions): Promise<void> {
    await this.execute('stop', undefined, options);
  }
  /** `cont`: resume. */
  async cont(options?: ExecuteOptions): Promise<void> {
    await this.execute('cont', undefined, options);
  }
  /** `system_powerdown`: press the ACPI power button. */
  async systemPowerdown(options?: ExecuteOptions): Promise<void> {
    await this.execute('system_powerdown', undefined, options);
  }
  /** `system_reset`. */
  async systemReset(options?: ExecuteOptions): Promise<void> {
    await this.execute('system_reset', undefined, options);
  }
  /** `quit`: QEMU exits right after answering. */
  async quit(options?: ExecuteOptions): Promise<void> {
    await this.execute('quit', undefined, options);
  }
  /** `query-cpus-fast`. */
  queryCpusFast(options?: ExecuteOptions): Promise<CpuInfoFast[]> {
    return this.execute('query-cpus-fast', undefined, options);
  }
  /** `query-block`. */
  queryBlock(options?: ExecuteOptions): Promise<BlockInfo[]> {
    return this.execute('query-block', undefined, options);
  }
  /** `query-blockstats`. */
  queryBlockstats(args: { 'query-nodes'?: boolean } = {}, options?: ExecuteOptions): Promise<BlockStats[]> {
    return this.execute('query-blockstats', args, options);
  }
  /** `blockdev-add`. */
  async blockdevAdd(args: BlockdevAddArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('blockdev-add', args, options);
  }
  /** `blockdev-del`. */
  async blockdevDel(nodeName: string, options?: ExecuteOptions): Promise<void> {
    await this.execute('blockdev-del', { 'node-name': nodeName }, options);
  }
  /** `device_add`. */
  async deviceAdd(args: DeviceAddArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('device_add', args, options);
  }
  /** `device_del`: asks for removal; the guest confirms later with `DEVICE_DELETED`. */
  async deviceDel(id: string, options?: ExecuteOptions): Promise<void> {
    await this.execute('device_del', { id }, options);
  }
  /** `blockdev-snapshot-sync`: a new external overlay on top of a node. */
  async blockdevSnapshotSync(args: BlockdevSnapshotSyncArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('blockdev-snapshot-sync', { ...args }, options);
  }
  /** `block-commit`: starts a commit job. */
  async blockCommit(args: BlockCommitArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('block-commit', { ...args }, options);
  }
  /** `blockdev-mirror`: mirror onto an existing node. */
  async blockdevMirror(args: BlockdevMirrorArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('blockdev-mirror', { ...args }, options);
  }
  /** `drive-mirror`: mirror onto a file QEMU creates or opens. */
  async driveMirror(args: DriveMirrorArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('drive-mirror', { ...args }, options);
  }
  /** `block-job-complete`: pivot a ready mirror or commit job. */
  async blockJobComplete(device: string, options?: ExecuteOptions): Promise<void> {
    await this.execute('block-job-complete', { device }, options);
  }
  /** `block-job-cancel` (on a ready mirror, completes without pivoting). */
  async blockJobCancel(device: string, force = false, options?: ExecuteOptions): Promise<void> {
    await this.execute('block-job-cancel', { device, force }, options);
  }
  /** `job-dismiss`: remove a concluded job. */
  async jobDismiss(id: string, options?: ExecuteOptions): Promise<void> {
    await this.execute('job-dismiss', { id }, options);
  }
  /** `query-jobs`. */
  queryJobs(options?: ExecuteOptions): Promise<JobInfo[]> {
    return this.execute('query-jobs', undefined, options);
  }
  /** `migrate`: starts migrating to `uri` (returns at once; watch `query-migrate` or `MIGRATION`). */
  async migrate(args: MigrateArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('migrate', { ...args }, options);
  }
  /** `migrate-incoming`: listen for an incoming migration (QEMU started with `-incoming defer`). */
  async migrateIncoming(uri: string, options?: ExecuteOptions): Promise<void> {
    await this.execute('migrate-incoming', { uri }, options);
  }
  /** `query-migrate`. */
  queryMigrate(options?: ExecuteOptions): Promise<MigrationInfo> {
    return this.execute('query-migrate', undefined, options);
  }
  /** `migrate-set-capabilities`. */
  async migrateSetCapabilities(
    capabilities: Partial<Record<MigrationCapabilityName, boolean>>,
    options?: ExecuteOptions,
  ): Promise<void> {
    const list = Object.entries(capabilities).map(([capability, state]) => ({ capability, state }));
    await this.execute('migrate-set-capabilities', { capabilities: list }, options);
  }
  /** `migrate-set-parameters`. */
  async migrateSetParameters(parameters: MigrationParameters, options?: ExecuteOptions): Promise<void> {
    await this.execute('migrate-set-parameters', { ...parameters }, options);
  }
  /** `migrate_cancel`. */
  async migrateCancel(options?: ExecuteOptions): Promise<void> {
    await this.execute('migrate_cancel', undefined, options);
  }
  /** `balloon`: ask the guest to shrink or grow to `bytes`. */
  async balloon(bytes: number, options?: ExecuteOptions): Promise<void> {
    await this.execute('balloon', { value: bytes }, options);
  }
  /** `query-balloon`. */
  queryBalloon(options?: ExecuteOptions): Promise<BalloonInfo> {
    return this.execute('query-balloon', undefined, options);
  }
  /** `screendump` into a file on the QEMU host. */
  async screendump(filename: string, format?: 'ppm' | 'png', options?: ExecuteOptions): Promise<void> {
    await this.execute('screendump', format ? { filename, format } : { filename }, options);
  }
  /** `netdev_add`. */
  async netdevAdd(args: NetdevAddArgs, options?: ExecuteOptions): Promise<void> {
    await this.execute('netdev_add', { ...args }, options);
  }
  /** `netdev_del`. */
  async netdevDel(id: string, options?: ExecuteOptions): Promise<void> {
    await this.execute('netdev_del', { id }, options);
  }
  /** `set_link`: bring a NIC's link up or down. */
  async setLink(name: string, up: boolean, options?: ExecuteOptions): Promise<void> {
    await this.execute('set_link', { name, up }, options);
  }
  /** `human-monitor-command`: one HMP command line; resolves with its output. */
  humanMonitorCommand(commandLine: string, options?: ExecuteOptions): Promise<string> {
    return this.execute('human-monitor-command', { 'command-line': commandLine }, options);
  }
}
