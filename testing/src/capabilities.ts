import { accessSync, constants, existsSync, readdirSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Things on this machine that integration tests may need. */
export type Capability =
  | 'root'
  | 'qemu-system'
  | 'qemu-img'
  | 'kvm'
  | 'ip'
  | 'tc'
  | 'nft'
  | 'cgroup-v1'
  | 'cgroup-v2'
  | 'postgres'
  | 'busybox';

/** Whether one capability is present, and why not when it is not. */
export interface CapabilityStatus {
  ok: boolean;
  reason: string;
}

/** Finds an executable on PATH (plus the sbin directories a non-root PATH may lack). */
export function which(program: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, program);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The directory holding initdb and postgres from Debian's postgresql package (newest version), if any. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : undefined;
}

function cgroupMounts(): { v1: boolean; v2: boolean } {
  try {
    const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n');
    return {
      v1: mounts.some((line) => line.split(' ')[2] === 'cgroup'),
      v2: mounts.some((line) => line.split(' ')[2] === 'cgroup2'),
    };
  } catch {
    return { v1: false, v2: false };
  }
}

function tool(program: string): CapabilityStatus {
  const path = which(program);
  return path ? { ok: true, reason: path } : { ok: false, reason: `${program} is not installed` };
}

/** Probes one capability of this machine. */
export function probe(capability: Capability): CapabilityStatus {
  switch (capability) {
    case 'root': {
      const ok = process.getuid?.() === 0;
      return { ok, reason: ok ? 'running as root' : 'not running as root' };
    }
    case 'qemu-system':
      return tool('qemu-system-x86_64');
    case 'qemu-img':
      return tool('qemu-img');
    case 'kvm':
      try {
        accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
        return { ok: true, reason: '/dev/kvm is usable' };
      } catch {
        return { ok: false, reason: '/dev/kvm is missing or not accessible' };
      }
    case 'ip':
      return tool('ip');
    case 'tc':
      return tool('tc');
    case 'nft':
      return tool('nft');
    case 'busybox':
      return tool('busybox');
    case 'cgroup-v1':
    case 'cgroup-v2': {
      const mounts = cgroupMounts();
      const ok = capability === 'cgroup-v1' ? mounts.v1 : mounts.v2;
      return { ok, reason: ok ? `${capability} mounted` : `no ${capability} hierarchy is mounted` };
    }
    case 'postgres': {
      if (process.env.NUBES_TEST_POSTGRES_URL) return { ok: true, reason: 'NUBES_TEST_POSTGRES_URL is set' };
      const dir = postgresBinDir();
      return dir
        ? { ok: true, reason: dir }
        : { ok: false, reason: 'PostgreSQL server binaries are not installed' };
    }
  }
}

/** Every capability and its status: printed at the start of a test run. */
export function capabilityReport(): Record<Capability, CapabilityStatus> {
  const all: Capability[] = [
    'root',
    'qemu-system',
    'qemu-img',
    'kvm',
    'ip',
    'tc',
    'nft',
    'cgroup-v1',
    'cgroup-v2',
    'postgres',
    'busybox',
  ];
  return Object.fromEntries(all.map((c) => [c, probe(c)])) as Record<Capability, CapabilityStatus>;
}

/** True when running under CI, where a missing capability fails instead of skipping. */
export function strictCapabilities(): boolean {
  return process.env.CI === 'true' || process.env.CI === '1';
}
