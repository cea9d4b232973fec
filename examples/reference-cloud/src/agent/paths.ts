/**
 * Where a compute agent keeps a server's files under the shared data directory, so that the compute API
 * (console output) and every agent (migration, clean-up after a crash) find them without asking each other.
 *
 * ```
 * <dataDir>/instances/<serverId>/
 *   console.log      -> <host>/console.log (a symlink re-pointed when the server moves)
 *   kernel, ramdisk  copies of the kernel_id / ramdisk_id images (Nova keeps them there too)
 *   <host>/          @nubes/kvm run directory of the QEMU on that host: qmp.sock, qemu.pid, qemu.log, ...
 * ```
 *
 * The disk itself is an instance disk of the image store (`<dataDir>/images/instances/<serverId>.qcow2`).
 */
import { join } from 'node:path';

/** The directory of one server's files: `<dataDir>/instances/<serverId>`. */
export function instanceDir(dataDir: string, serverId: string): string {
  return join(dataDir, 'instances', serverId);
}

/**
 * The serial console log of a server: everything the guest wrote to ttyS0 since its QEMU last started,
 * on whichever host it runs. This is what `openstack console log show` (Nova's `os-getConsoleOutput`)
 * returns; read it with `readFile` (a missing file means the server never booted here).
 */
export function consoleLogPath(dataDir: string, serverId: string): string {
  return join(instanceDir(dataDir, serverId), 'console.log');
}

/** The @nubes/kvm run directory of a server's QEMU on one host. */
export function runDir(dataDir: string, serverId: string, host: string): string {
  return join(instanceDir(dataDir, serverId), host);
}
