import { constants } from 'node:fs';
import { access, open } from 'node:fs/promises';
import { type CommandRunner, commandRunner, invalidInput, NubesError } from '@nubes/core';
import type { Accelerator } from './argv.js';
import type { ResolvedVmSpec } from './spec.js';

/** Default QEMU binary for x86-64 guests. */
export const DEFAULT_QEMU_BINARY = 'qemu-system-x86_64';

/**
 * True when /dev/kvm can be opened for reading and writing. That is what QEMU needs for
 * `accel=kvm`; it does not prove that a guest runs well there (nested KVM may still hang).
 */
export async function kvmAvailable(device = '/dev/kvm'): Promise<boolean> {
  try {
    const handle = await open(device, constants.O_RDWR);
    await handle.close();
    return true;
  } catch {
    return false;
  }
}

/** Resolves `auto` to `kvm` when /dev/kvm is usable and to `tcg` otherwise; `kvm` without /dev/kvm is an error. */
export async function resolveAccelerator(requested: 'auto' | Accelerator): Promise<Accelerator> {
  if (requested === 'tcg') return 'tcg';
  const kvm = await kvmAvailable();
  if (requested === 'kvm' && !kvm)
    throw invalidInput('spec.accel', '"kvm" was asked for but /dev/kvm is missing or not accessible');
  return kvm ? 'kvm' : 'tcg';
}

const machineCache = new Map<string, Promise<Set<string>>>();

/** The machine types (and aliases) `binary` supports, from `-machine help`; cached per binary. */
export function qemuMachineTypes(
  binary = DEFAULT_QEMU_BINARY,
  runner: CommandRunner = commandRunner,
): Promise<Set<string>> {
  let cached = machineCache.get(binary);
  if (!cached) {
    cached = runner.run(binary, ['-machine', 'help'], { timeoutMs: 15_000 }).then((result) => {
      const names = new Set<string>();
      for (const line of result.stdout.split('\n').slice(1)) {
        const name = line.trim().split(/\s+/)[0];
        if (name) names.add(name);
      }
      return names;
    });
    cached.catch(() => machineCache.delete(binary));
    machineCache.set(binary, cached);
  }
  return cached;
}

async function exists(path: string, mode = constants.R_OK): Promise<boolean> {
  try {
    await access(path, mode);
    return true;
  } catch {
    return false;
  }
}

/**
 * The checks of a spec that need the host: the machine type exists in this QEMU and every file the
 * spec names exists. Throws `InvalidInput` naming the field, before anything is started.
 */
export async function checkSpecOnHost(
  spec: ResolvedVmSpec,
  binary = DEFAULT_QEMU_BINARY,
  runner: CommandRunner = commandRunner,
): Promise<void> {
  let machines: Set<string>;
  try {
    machines = await qemuMachineTypes(binary, runner);
  } catch (cause) {
    throw new NubesError('Unavailable', `cannot run ${binary}: ${(cause as Error).message}`, { cause });
  }
  if (!machines.has(spec.machine))
    throw invalidInput('spec.machine', `unknown machine type "${spec.machine}" for ${binary}`, {
      known: [...machines].slice(0, 50),
    });
  if (spec.boot?.from === 'kernel') {
    if (!(await exists(spec.boot.kernel)))
      throw invalidInput('spec.boot.kernel', `${spec.boot.kernel} does not exist`);
    if (spec.boot.initrd && !(await exists(spec.boot.initrd)))
      throw invalidInput('spec.boot.initrd', `${spec.boot.initrd} does not exist`);
  }
  for (const [i, drive] of spec.drives.entries()) {
    const mode = drive.readOnly ? constants.R_OK : constants.R_OK | constants.W_OK;
    if (!(await exists(drive.path, mode)))
      throw invalidInput(
        `spec.drives.${i}.path`,
        `${drive.path} does not exist or is not ${drive.readOnly ? 'readable' : 'writable'}`,
      );
  }
}
