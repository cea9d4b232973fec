import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { DriveSpec, NicSpec, ResolvedVmSpec } from './spec.js';

/** The files of one VM in its run directory. */
export interface RunPaths {
  /** The run directory itself. */
  dir: string;
  /** QMP socket. */
  qmp: string;
  /** Pidfile written by QEMU. */
  pidfile: string;
  /** QEMU's stdout and stderr. */
  log: string;
  /** Serial console socket. */
  console: string;
  /** Everything the guest wrote to the serial console, written by QEMU even when nobody is attached. */
  consoleLog: string;
  /** VNC socket (when `vnc: { socket: true }`). */
  vnc: string;
  /** The resolved spec this VM was started with, for re-attach. */
  spec: string;
  /** Directory served to the guest as the cloud-init NoCloud seed (label `cidata`). */
  cidata: string;
}

/** The file layout of the run directory `dir`. */
export function runPaths(dir: string): RunPaths {
  return {
    dir,
    qmp: join(dir, 'qmp.sock'),
    pidfile: join(dir, 'qemu.pid'),
    log: join(dir, 'qemu.log'),
    console: join(dir, 'console.sock'),
    consoleLog: join(dir, 'console.log'),
    vnc: join(dir, 'vnc.sock'),
    spec: join(dir, 'spec.json'),
    cidata: join(dir, 'cidata'),
  };
}

/** The block node names of a drive: the protocol (file) node and the format node devices attach to. */
export function driveNodes(id: string): { file: string; format: string } {
  return { file: `${id}-file`, format: `${id}-fmt` };
}

/** A stable locally administered MAC in QEMU's 52:54:00 range, derived from the VM name and NIC id. */
export function defaultMac(vmName: string, nicId: string): string {
  const hash = createHash('sha256').update(`${vmName}/${nicId}`).digest();
  return ['52', '54', '00', ...[0, 1, 2].map((i) => (hash[i] as number).toString(16).padStart(2, '0'))].join(
    ':',
  );
}

function cacheFlags(cache: DriveSpec['cache']): { direct: boolean; noFlush: boolean; writeCache: boolean } {
  switch (cache) {
    case 'none':
      return { direct: true, noFlush: false, writeCache: true };
    case 'writeback':
      return { direct: false, noFlush: false, writeCache: true };
    case 'writethrough':
      return { direct: false, noFlush: false, writeCache: false };
    case 'directsync':
      return { direct: true, noFlush: false, writeCache: false };
    case 'unsafe':
      return { direct: false, noFlush: true, writeCache: true };
  }
}

/** The `blockdev-add` objects of a drive: protocol node first, then the format node on top. */
export function driveBlockdevs(drive: DriveSpec): [Record<string, unknown>, Record<string, unknown>] {
  const nodes = driveNodes(drive.id);
  const flags = cacheFlags(drive.cache);
  const cache = { direct: flags.direct, 'no-flush': flags.noFlush };
  return [
    {
      driver: 'file',
      'node-name': nodes.file,
      filename: drive.path,
      aio: drive.aio,
      cache,
      'read-only': drive.readOnly,
      'auto-read-only': true,
      discard: 'unmap',
    },
    { driver: drive.format, 'node-name': nodes.format, file: nodes.file, cache, 'read-only': drive.readOnly },
  ];
}

/** The `device_add` object of a drive. */
export function driveDevice(drive: DriveSpec, bootIndex?: number): Record<string, unknown> {
  const driver = { virtio: 'virtio-blk-pci', scsi: 'scsi-hd', ide: 'ide-hd' }[drive.interface];
  const device: Record<string, unknown> = {
    driver,
    id: drive.id,
    drive: driveNodes(drive.id).format,
    'write-cache': cacheFlags(drive.cache).writeCache ? 'on' : 'off',
  };
  if (drive.interface === 'scsi') device.bus = 'scsi0.0';
  if (drive.serial) device.serial = drive.serial;
  if (bootIndex !== undefined) device.bootindex = bootIndex;
  return device;
}

/** The `netdev_add` object of a NIC. Tap devices are opened by QEMU by name: no fd passing, no scripts. */
export function nicNetdev(nic: NicSpec): Record<string, unknown> {
  if (nic.network.type === 'tap')
    return { type: 'tap', id: `${nic.id}-net`, ifname: nic.network.ifname, script: 'no', downscript: 'no' };
  const netdev: Record<string, unknown> = { type: 'user', id: `${nic.id}-net` };
  if (nic.network.forwards.length)
    netdev.hostfwd = nic.network.forwards.map((f) => ({
      str: `${f.protocol}:${f.hostAddress}:${f.hostPort}-:${f.guestPort}`,
    }));
  return netdev;
}

/** The `device_add` object of a NIC. */
export function nicDevice(nic: NicSpec, vmName: string): Record<string, unknown> {
  return {
    driver: nic.model,
    id: nic.id,
    netdev: `${nic.id}-net`,
    mac: nic.mac ?? defaultMac(vmName, nic.id),
  };
}

function userNetdevArg(nic: NicSpec): string {
  // -netdev user has no JSON form in every QEMU we support, so it is rendered as key=value; the
  // schema restricts ids and forward fields to characters that need no escaping.
  if (nic.network.type !== 'user') throw new Error('unreachable');
  const parts = ['user', `id=${nic.id}-net`];
  for (const f of nic.network.forwards)
    parts.push(`hostfwd=${f.protocol}:${f.hostAddress}:${f.hostPort}-:${f.guestPort}`);
  return parts.join(',');
}

function escapeOption(value: string): string {
  // QEMU's option syntax doubles a comma to mean a literal one.
  return value.replaceAll(',', ',,');
}

/** The accelerator a spec resolved to on this host. */
export type Accelerator = 'kvm' | 'tcg';

/**
 * Renders a resolved spec as QEMU's argv (without the binary). Pure: no file is touched and nothing is
 * probed, so it is tested without QEMU. Devices and block nodes use the JSON forms of `-device` and
 * `-blockdev`, so paths with commas or quotes need no escaping.
 */
export function buildQemuArgv(spec: ResolvedVmSpec, paths: RunPaths, accel: Accelerator): string[] {
  const argv: string[] = ['-name', `${escapeOption(spec.name)},debug-threads=on`];
  argv.push('-machine', `${spec.machine},accel=${accel}`);
  argv.push('-nodefaults', '-no-user-config', '-display', 'none');
  // `-machine none` has no board to put a default CPU on (it is for tools and tests that need only QMP).
  const board = spec.machine !== 'none';
  if (board || spec.cpu.model) argv.push('-cpu', spec.cpu.model ?? (accel === 'kvm' ? 'host' : 'max'));
  const smp = [`cpus=${spec.cpu.count}`];
  if (spec.cpu.maxCount !== undefined) smp.push(`maxcpus=${spec.cpu.maxCount}`);
  if (spec.cpu.sockets !== undefined) smp.push(`sockets=${spec.cpu.sockets}`);
  if (spec.cpu.cores !== undefined) smp.push(`cores=${spec.cpu.cores}`);
  if (spec.cpu.threads !== undefined) smp.push(`threads=${spec.cpu.threads}`);
  if (board) argv.push('-smp', smp.join(','));
  argv.push('-m', `${spec.memoryMiB}M`);
  argv.push('-qmp', `unix:${escapeOption(paths.qmp)},server=on,wait=off`);
  argv.push('-pidfile', paths.pidfile);
  if (spec.serial) {
    argv.push(
      '-chardev',
      `socket,id=console0,path=${escapeOption(paths.console)},server=on,wait=off,logfile=${escapeOption(paths.consoleLog)},logappend=on`,
    );
    argv.push('-serial', 'chardev:console0');
  }
  if (spec.boot?.from === 'kernel') {
    argv.push('-kernel', spec.boot.kernel);
    if (spec.boot.initrd) argv.push('-initrd', spec.boot.initrd);
    if (spec.boot.cmdline !== undefined) argv.push('-append', spec.boot.cmdline);
  }
  if (spec.drives.some((d) => d.interface === 'scsi'))
    argv.push('-device', JSON.stringify({ driver: 'virtio-scsi-pci', id: 'scsi0' }));
  for (const drive of spec.drives) {
    for (const node of driveBlockdevs(drive)) argv.push('-blockdev', JSON.stringify(node));
    const boot = spec.boot?.from === 'drive' && spec.boot.drive === drive.id ? 1 : undefined;
    argv.push('-device', JSON.stringify(driveDevice(drive, boot)));
  }
  if (spec.cloudInit) {
    argv.push(
      '-blockdev',
      JSON.stringify({
        driver: 'vvfat',
        'node-name': 'cidata-fmt',
        dir: paths.cidata,
        label: 'cidata',
        'fat-type': 16,
        floppy: false,
        rw: false,
        'read-only': true,
      }),
    );
    argv.push('-device', JSON.stringify({ driver: 'virtio-blk-pci', id: 'cidata', drive: 'cidata-fmt' }));
  }
  for (const nic of spec.nics) {
    argv.push('-netdev', nic.network.type === 'tap' ? JSON.stringify(nicNetdev(nic)) : userNetdevArg(nic));
    argv.push('-device', JSON.stringify(nicDevice(nic, spec.name)));
  }
  if (spec.balloon) argv.push('-device', JSON.stringify({ driver: 'virtio-balloon-pci', id: 'balloon0' }));
  if (spec.vnc) {
    argv.push('-vga', 'std');
    argv.push(
      '-vnc',
      'socket' in spec.vnc ? `unix:${escapeOption(paths.vnc)}` : `${spec.vnc.host}:${spec.vnc.display}`,
    );
  }
  if (spec.incoming) argv.push('-incoming', 'defer');
  else if (spec.paused) argv.push('-S');
  argv.push(...spec.extraArgs);
  return argv;
}
