/**
 * @nubes/kvm: libvirt's job for QEMU/KVM as a library. A layered QMP client (transport, protocol,
 * typed commands, events), a zod-validated VM spec rendered to QEMU's argv, a supervisor with a state
 * machine, graceful shutdown, crash detection, restart policy and re-attach, serial consoles, external
 * snapshots, mirroring, hot-plug and live migration with or without shared storage.
 *
 * @packageDocumentation
 */

export type {
  ConsoleAttachOptions,
  ConsoleWaitOptions,
  SerialConsoleEvents,
  SerialConsoleOptions,
} from './console/serial.js';
export { SerialConsole } from './console/serial.js';
export type { DriveStats } from './disks/block.js';
export { type CreateDiskOptions, createDisk } from './disks/image.js';
export { QmpCommandError, QmpConnectionError, QmpNegotiationError } from './errors.js';
export type { MigrateOptions, MigrationProgress, MigrationResult } from './migration/migrate.js';
export { migrate } from './migration/migrate.js';
export type { Accelerator, RunPaths } from './qemu/argv.js';
export { buildQemuArgv, defaultMac, driveNodes, runPaths } from './qemu/argv.js';
export {
  checkSpecOnHost,
  DEFAULT_QEMU_BINARY,
  kvmAvailable,
  qemuMachineTypes,
  resolveAccelerator,
} from './qemu/host.js';
export type { DriveSpec, NicSpec, ResolvedVmSpec, VmSpec } from './qemu/spec.js';
export { CACHE_MODES, driveSpecSchema, nicSpecSchema, vmSpecSchema } from './qemu/spec.js';
export type { ExecuteOptions, QmpClientEvents, QmpConnectOptions, QmpGreeting } from './qmp/client.js';
export { QmpClient } from './qmp/client.js';
export type {
  BalloonInfo,
  BlockCommitArgs,
  BlockDeviceInfo,
  BlockDeviceStats,
  BlockdevAddArgs,
  BlockdevMirrorArgs,
  BlockdevSnapshotSyncArgs,
  BlockInfo,
  BlockStats,
  CpuInfoFast,
  DeviceAddArgs,
  DriveMirrorArgs,
  JobInfo,
  JobStatus,
  MigrateArgs,
  MigrationCapabilityName,
  MigrationInfo,
  MigrationParameters,
  MigrationStats,
  MigrationStatus,
  NetdevAddArgs,
  RunState,
  StatusInfo,
} from './qmp/commands.js';
export { QmpCommands } from './qmp/commands.js';
export type { QmpEvent, QmpEventFilter, WaitForEventOptions } from './qmp/events.js';
export { QmpEvents } from './qmp/events.js';
export type { QmpAddress } from './qmp/transport.js';
export { canTransition, VM_TRANSITIONS, type VmState } from './vm/state.js';
export type {
  RestartPolicy,
  ShutdownOptions,
  SnapshotResult,
  VmEvents,
  VmExit,
  VmOptions,
  VmTransition,
} from './vm/vm.js';
export { defaultRunRoot, livePid, Vm } from './vm/vm.js';
