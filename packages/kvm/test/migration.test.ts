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
    const guest = await buildGuest();
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
  });

  // The guest rewrites a 16 MiB file in a loop (busybox's own bytes, so not zero pages) faster than the
  // capped bandwidth sends it: pre-copy alone would not converge under the downtime limit.
  const dirtyMemory = (vm: Vm) =>
    vm.console.write(
      'while true; do cat /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox > /tmp/dirty; done & w=$!\n',
    );

  /** Stops the memory-dirtying load and waits for the shell to answer. */
  const unload = async (vm: Vm) => {
    const from = vm.console.position;
    vm.console.write('kill $w; rm -f /tmp/dirty; echo unloaded-$((40+2))\n');
    await vm.console.waitFor(/unloaded-42/, { from, timeoutMs: 30_000 });
  };

  it('auto-converge throttles the vCPUs of a guest that dirties memory, and the migration completes', async () => {
    const source = vms.find((v) => v.name === 'dst2') as Vm;
    const copy = join(scratch.dir, 'disk-copy.qcow2');
    const destination = await start({
      name: 'dst3',
      incoming: true,
      drives: [{ id: 'disk0', path: copy, format: 'qcow2' }],
    });
    dirtyMemory(source);
    const before = await lastTick(source);
    const throttles: number[] = [];
    let stopped = false;
    const result = await migrate(source, destination, {
      autoConverge: true,
      maxBandwidth: 32 * MiB,
      onProgress: (p) => {
        throttles.push(p.cpuThrottlePercentage);
        // Once QEMU throttles, end the load so the test need not wait for the throttle to win alone.
        if (p.cpuThrottlePercentage > 0 && !stopped) {
          stopped = true;
          source.console.write('kill $w; rm -f /tmp/dirty\n');
        }
      },
    });
    expect(Math.max(...throttles)).toBeGreaterThan(0);
    expect(result.maxCpuThrottlePercentage).toBeGreaterThan(0);
    expect(result.postcopy).toBe(false);
    const caps = await destination.qmp.execute('query-migrate-capabilities');
    expect(caps).toContainEqual({ capability: 'auto-converge', state: true });
    expect(source.state).toBe('stopped');
    expect(destination.state).toBe('running');
    // The load may have moved with the guest before the kill reached its shell: end it here too, which also
    // proves the destination's shell answers, before the counter is checked on a loaded CI machine.
    await unload(destination);
    await expect.poll(() => lastTick(destination), { timeout: 30_000 }).toBeGreaterThan(before);
  }, 150_000);

  it('switches to post-copy after the first pass; the counter continues on the destination', async () => {
    const source = vms.find((v) => v.name === 'dst3') as Vm;
    const copy = join(scratch.dir, 'disk-copy.qcow2');
    const destination = await start({
      name: 'dst4',
      incoming: true,
      drives: [{ id: 'disk0', path: copy, format: 'qcow2' }],
    });
    dirtyMemory(source);
    const before = await lastTick(source);
    // The destination's own MIGRATION events show whether it really ran in post-copy mode (the switch can
    // complete between two polls of the source).
    const incoming: string[] = [];
    const unsubscribe = destination.qmp.events.on('MIGRATION', (e) => incoming.push(String(e.data.status)));
    // A 1 ms downtime limit under a bandwidth cap with the load running: pre-copy cannot finish on its own.
    const result = await migrate(source, destination, {
      postcopy: true,
      maxBandwidth: 32 * MiB,
      downtimeLimitMs: 1,
    });
    unsubscribe();
    expect(result.postcopy).toBe(true);
    expect(incoming).toContain('postcopy-active');
    expect(incoming.at(-1)).toBe('completed');
    expect(source.state).toBe('stopped');
    expect(destination.state).toBe('running');
    await unload(destination);
    await expect.poll(() => lastTick(destination), { timeout: 30_000 }).toBeGreaterThan(before);
    // The destination must stop cleanly; whether ACPI wins within the wait depends on the machine's load under
    // TCG (graceful power-down itself is asserted in vm.test.ts), so quit is an acceptable way down here.
    expect(['powerdown', 'quit']).toContain(await destination.shutdown({ timeoutMs: 60_000 }));
    expect(destination.state).toBe('stopped');
  }, 150_000);
});
