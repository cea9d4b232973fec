import { join } from 'node:path';
import { createDisk, type MigrationProgress, migrate, Vm, type VmSpec } from '@nubes/kvm';
import { describeWith, freePort } from '@nubes/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildGuest, GUEST_MARKER } from './fixtures/guest.js';
import { scratchDir } from './helpers.js';

const MiB = 1024 * 1024;

async function lastTick(vm: Vm, from = 0): Promise<number> {
  await vm.console.waitFor(/nubes-tick \d+/, { from, timeoutMs: 15_000 });
  const ticks = [...vm.console.output.matchAll(/nubes-tick (\d+)/g)];
  return Number(ticks.at(-1)?.[1]);
}

// One guest booted once, then moved twice: with shared storage over a unix socket, then without shared
// storage (NBD + blockdev-mirror) over TCP on loopback.
describeWith(['qemu-system', 'qemu-img', 'busybox'], 'live migration between local QEMU processes', () => {
  const scratch = scratchDir('mig');
  const vms: Vm[] = [];
  const disk = join(scratch.dir, 'disk.qcow2');
  let spec: VmSpec;

  beforeAll(async () => {
    const guest = buildGuest();
    await createDisk(disk, { sizeBytes: 32 * MiB });
    spec = {
      name: 'src',
      accel: 'tcg',
      memoryMiB: 128,
      boot: { from: 'kernel', ...guest },
      drives: [{ id: 'disk0', path: disk, format: 'qcow2' }],
    };
  });
  afterAll(async () => {
    for (const vm of vms) if (vm.pid !== undefined) await vm.kill();
    scratch.remove();
  });

  const start = async (overrides: Partial<VmSpec>) => {
    const vm = Vm.define({ ...spec, ...overrides } as VmSpec, { runRoot: scratch.dir });
    vms.push(vm);
    await vm.start();
    return vm;
  };

  it('migrates with shared storage; the counter continues on the destination', async () => {
    const source = await start({});
    await source.console.waitFor(new RegExp(GUEST_MARKER), { timeoutMs: 30_000 });
    const before = await lastTick(source);
    const destination = await start({ name: 'dst1', incoming: true });
    expect(destination.state).toBe('paused');
    const phases = new Set<string>();
    const result = await migrate(source, destination, {
      downtimeLimitMs: 300,
      onProgress: (p: MigrationProgress) => phases.add(p.phase),
    });
    expect(result.transferredBytes).toBeGreaterThan(0);
    expect(result.elapsedMs).toBeGreaterThan(0);
    expect(result.totalTimeMs).toBeGreaterThanOrEqual(0);
    expect(result.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(phases.has('active') || phases.has('completed')).toBe(true);
    expect(source.state).toBe('stopped');
    expect(source.lastExit?.expected).toBe(true);
    expect(destination.state).toBe('running');
    const after = await lastTick(destination);
    await expect
      .poll(() => lastTick(destination), { timeout: 10_000 })
      .toBeGreaterThan(Math.max(before, after - 1));
    // The guest's memory came across: its shell still answers on the new console.
    const from = destination.console.position;
    destination.console.write('echo moved-$((40+2))\n');
    await destination.console.waitFor(/moved-42/, { from, timeoutMs: 10_000 });
  });

  it('migrates without shared storage over TCP (NBD export + blockdev-mirror), and can be cancelled', async () => {
    const source = vms.find((v) => v.name === 'dst1') as Vm;
    const copy = join(scratch.dir, 'disk-copy.qcow2');
    await createDisk(copy, { sizeBytes: 32 * MiB });
    // Cancelling before anything moved leaves the source running.
    const aborted = await start({
      name: 'dst0',
      incoming: true,
      drives: [{ id: 'disk0', path: copy, format: 'qcow2' }],
    });
    const controller = new AbortController();
    controller.abort();
    await expect(
      migrate(source, aborted, { storage: 'copy', signal: controller.signal }),
    ).rejects.toMatchObject({
      code: 'Timeout',
    });
    expect(source.state).toBe('running');
    await aborted.kill();

    const destination = await start({
      name: 'dst2',
      incoming: true,
      drives: [{ id: 'disk0', path: copy, format: 'qcow2' }],
    });
    const before = await lastTick(source);
    let mirrored = false;
    const result = await migrate(source, destination, {
      storage: 'copy',
      transport: 'tcp',
      port: await freePort(),
      maxBandwidth: 1024 * MiB,
      onProgress: (p) => {
        if (p.phase === 'mirror') mirrored = true;
      },
    });
    expect(mirrored).toBe(true);
    expect(result.diskBytes).toBeGreaterThan(0);
    expect(source.state).toBe('stopped');
    expect(destination.state).toBe('running');
    const block = (await destination.qmp.queryBlock()).find((b) => b.qdev?.includes('disk0'));
    expect(block?.inserted?.file).toBe(copy);
    await expect.poll(() => lastTick(destination), { timeout: 10_000 }).toBeGreaterThan(before);
    expect(await destination.shutdown({ timeoutMs: 20_000 })).toBe('powerdown');
  });
});
