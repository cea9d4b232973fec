/**
 * The demo's tiny bootable guest, held the way Glance holds a Nova "AMI-style" image: a kernel, a ramdisk and
 * a disk whose properties name the other two (`kernel_id`, `ramdisk_id`). The kernel is Debian's cloud kernel
 * (never installed into the host: unpacked into the repository's git-ignored `.cache/guest-kernel`, as
 * `scripts/setup.sh` does); the ramdisk is a busybox initramfs whose `/init` loads the virtio drivers,
 * configures `eth0` from the kernel command line, listens on TCP port 22 and prints {@link GUEST_READY_MARKER}
 * on the serial console.
 *
 * Network configuration travels on the kernel command line (`nubes.ip=10.0.0.5/24 nubes.gw=10.0.0.1
 * nubes.hostname=web1`), appended by the compute agent: the guest needs neither a DHCP server nor a metadata
 * service, and an image without a kernel (a firmware boot) simply gets none of it.
 */
import {
  chmodSync,
  copyFileSync,
  createReadStream,
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NubesError, runCommand } from '@nubes/core';
import { createImage, type ImageStore } from '@nubes/images';
import { READY_MARKER_PROPERTY } from '../agent/agent.js';

/** What the guest prints on its serial console once its network is configured and port 22 listens. */
export const GUEST_READY_MARKER = 'NUBES-GUEST-READY';

/** The command line the guest images carry in `os_command_line` (the agent appends the `nubes.*` settings). */
export const GUEST_COMMAND_LINE = 'console=ttyS0 quiet panic=-1';

/**
 * Kernel modules the initramfs loads, in dependency order (`modinfo -F depends`: `virtio` needs
 * `virtio_ring`, so the ring comes first): Debian's cloud kernel builds virtio as modules and there is no
 * modprobe (no modules.dep) in the initramfs. `button` makes the ACPI power button visible,
 * so a graceful power-off (`system_powerdown`) is noticed without acpid.
 */
export const GUEST_MODULES = [
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
  'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
  'kernel/drivers/virtio/virtio_pci.ko',
  'kernel/drivers/block/virtio_blk.ko',
  'kernel/net/core/failover.ko',
  'kernel/drivers/net/net_failover.ko',
  'kernel/drivers/net/virtio_net.ko',
  'kernel/drivers/acpi/button.ko',
] as const;

// Values from /proc/cmdline are only ever passed as quoted arguments, never evaluated.
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${GUEST_MODULES.map((m) => m.split('/').pop()).join(' ')}; do insmod "/lib/modules/$m" || echo "nubes-guest: insmod $m failed"; done
addr=
gw=
target=
name=nubes-guest
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    nubes.ip=*) addr="\${arg#nubes.ip=}" ;;
    nubes.gw=*) gw="\${arg#nubes.gw=}" ;;
    nubes.hostname=*) name="\${arg#nubes.hostname=}" ;;
    nubes.ping=*) target="\${arg#nubes.ping=}" ;;
  esac
done
hostname "$name"
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  [ -n "$addr" ] && ip addr add "$addr" dev eth0
  [ -n "$gw" ] && ip route add default via "$gw"
fi
disk=$(cat /sys/block/vda/size 2>/dev/null)
echo "nubes-disk vda \${disk:-none}"
(while true; do echo "SSH-2.0-nubes-guest $name" | nc -l -p 22 >/dev/null 2>&1; done) &
(
  while true; do
    p=$(cat /sys/firmware/acpi/interrupts/ff_pwr_btn 2>/dev/null)
    set -- $p
    if [ "\${1:-0}" != 0 ]; then echo NUBES-POWEROFF; poweroff -f; fi
    sleep 1
  done
) &
echo "${GUEST_READY_MARKER} $name \${addr:-noaddr}"
# A server asked to ping another (metadata nubes_ping) does so for its whole life, one probe a second: each
# reply is a console line with the probe's number, so gaps show lost packets (the demo watches this across a
# live migration). One probe per ping process, because busybox ping exits on the first send error (an
# unresolved neighbour while the overlay is still being wired), which would end a long-running ping for good.
[ -n "$target" ] && (n=0; while true; do
  ping -c 1 -W 1 "$target" >/dev/null 2>&1 && echo "nubes-ping reply from $target seq=$n"
  n=$((n+1)); sleep 1
done) &
while true; do setsid cttyhack sh; done
`;

/**
 * Where `scripts/setup.sh` unpacks the guest kernel: `.cache/guest-kernel` at the repository root. The
 * environment variable `NUBES_GUEST_KERNEL_DIR` points elsewhere.
 */
export function guestKernelCache(): string {
  return (
    process.env.NUBES_GUEST_KERNEL_DIR ??
    fileURLToPath(new URL('../../../../.cache/guest-kernel', import.meta.url))
  );
}

/** A cloud kernel found on this machine. */
export interface GuestKernel {
  /** The vmlinuz file. */
  path: string;
  /** Its version (`6.1.0-56-cloud-amd64`). */
  version: string;
  /** The directory holding its modules (`…/lib/modules/<version>`). */
  modules: string;
}

/** The newest cloud kernel in the cache, else in /boot; `undefined` when there is none. */
export function findGuestKernel(cache = guestKernelCache()): GuestKernel | undefined {
  for (const root of [cache, '/']) {
    const boot = join(root, 'boot');
    if (!existsSync(boot)) continue;
    const file = readdirSync(boot)
      .filter((f) => /^vmlinuz-.*-cloud-amd64$/.test(f))
      .sort()
      .at(-1);
    if (!file) continue;
    const version = file.slice('vmlinuz-'.length);
    const usr = join(root, 'usr/lib/modules', version);
    return {
      path: join(boot, file),
      version,
      modules: existsSync(usr) ? usr : join(root, 'lib/modules', version),
    };
  }
  return undefined;
}

/** Why the guest cannot be built on this machine, or `undefined` when it can. */
export function guestMissing(): string | undefined {
  if (!existsSync('/bin/busybox')) return 'busybox-static is not installed';
  if (!findGuestKernel()) return `no cloud kernel in ${guestKernelCache()} or /boot (run scripts/setup.sh)`;
  return undefined;
}

/** The three files of the guest, before they are uploaded. */
export interface GuestFiles {
  /** The kernel (Glance `aki`). */
  kernel: string;
  /** The busybox initramfs, gzip-compressed newc cpio (Glance `ari`). */
  ramdisk: string;
  /** A small, empty qcow2 disk (the guest shows its size on the console as `nubes-disk vda <sectors>`). */
  disk: string;
}

/**
 * Builds the guest's files in `dir` (kernel copied, ramdisk and disk made). Throws `Unavailable` when no
 * cloud kernel or busybox is on this machine.
 */
export async function buildGuestFiles(
  dir: string,
  options: { diskBytes?: number } = {},
): Promise<GuestFiles> {
  const missing = guestMissing();
  const kernel = findGuestKernel();
  if (missing || !kernel) throw new NubesError('Unavailable', `cannot build the guest: ${missing}`);
  mkdirSync(dir, { recursive: true });
  const files: GuestFiles = {
    kernel: join(dir, 'vmlinuz'),
    ramdisk: join(dir, 'initrd.cpio.gz'),
    disk: join(dir, 'disk.qcow2'),
  };
  copyFileSync(kernel.path, files.kernel);
  const root = join(dir, `initramfs-${process.pid}`);
  rmSync(root, { recursive: true, force: true });
  try {
    for (const sub of ['bin', 'proc', 'sys', 'dev', 'lib/modules', 'tmp'])
      mkdirSync(join(root, sub), { recursive: true });
    copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
    for (const m of GUEST_MODULES) {
      const source = join(kernel.modules, m);
      if (!existsSync(source)) throw new NubesError('NotFound', `guest kernel module ${source} is missing`);
      copyFileSync(source, join(root, 'lib/modules', m.split('/').pop() as string));
    }
    writeFileSync(join(root, 'init'), INIT);
    chmodSync(join(root, 'init'), 0o755);
    const partial = `${files.ramdisk}.${process.pid}`;
    // cpio reads the file list on stdin (argv only, no shell); gzip then turns `partial` into `partial.gz`.
    const list = ['.', ...walk(root).map((f) => relative(root, f))];
    await runCommand('cpio', ['-o', '-H', 'newc', '--quiet', '-D', root, '-F', partial], {
      input: `${list.join('\n')}\n`,
    });
    await runCommand('gzip', ['-1', '-f', partial]);
    renameSync(`${partial}.gz`, files.ramdisk);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  rmSync(files.disk, { force: true });
  await createImage(files.disk, { size: options.diskBytes ?? 64 * 2 ** 20 });
  return files;
}

/** The ids of the uploaded guest images. */
export interface GuestImages {
  kernelId: string;
  ramdiskId: string;
  /** The bootable image: its properties name the kernel and ramdisk. */
  diskId: string;
}

/**
 * Uploads the guest trio the way `openstack image create` would for an AMI-style image: kernel and ramdisk
 * first, then the disk with `kernel_id`, `ramdisk_id`, `os_command_line` and `nubes_ready_marker` properties.
 */
export async function uploadGuestImages(
  images: ImageStore,
  files: GuestFiles,
  options: { owner: string; name?: string; visibility?: 'public' | 'private' | 'shared' | 'community' },
): Promise<GuestImages> {
  const name = options.name ?? 'nubes-guest';
  const common = { owner: options.owner, visibility: options.visibility ?? 'public' } as const;
  const kernel = await images.create({
    ...common,
    name: `${name}-kernel`,
    diskFormat: 'aki',
    containerFormat: 'aki',
  });
  await images.upload(kernel.id, createReadStream(files.kernel));
  const ramdisk = await images.create({
    ...common,
    name: `${name}-ramdisk`,
    diskFormat: 'ari',
    containerFormat: 'ari',
  });
  await images.upload(ramdisk.id, createReadStream(files.ramdisk));
  const disk = await images.create({
    ...common,
    name,
    diskFormat: 'qcow2',
    properties: {
      kernel_id: kernel.id,
      ramdisk_id: ramdisk.id,
      os_command_line: GUEST_COMMAND_LINE,
      // The agent reports ACTIVE once the guest has printed this (its network is up then).
      [READY_MARKER_PROPERTY]: GUEST_READY_MARKER,
    },
  });
  await images.upload(disk.id, createReadStream(files.disk));
  return { kernelId: kernel.id, ramdiskId: ramdisk.id, diskId: disk.id };
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? [path, ...walk(path)] : [path];
  });
}
