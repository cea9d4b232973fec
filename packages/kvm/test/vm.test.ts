import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { runCommand } from '@nubes/core';
import { createDisk, Vm } from '@nubes/kvm';
import { describeWith } from '@nubes/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildGuest, GUEST_MARKER, guestMissing } from './fixtures/guest.js';
import { scratchDir } from './helpers.js';

const MiB = 1024 * 1024;
const missing = guestMissing();
if (missing) console.warn(`[nubes] kvm guest tests: ${missing}`);

// One guest for the whole file (TCG: nested KVM hangs guest kernels on this machine), driven through
// every operation in order.
describeWith(['qemu-system', 'qemu-img', 'busybox'], 'a tiny guest under supervision (TCG)', () => {
  const scratch = scratchDir('vm');
  let vm: Vm;
  const disk = join(scratch.dir, 'root.qcow2');

  beforeAll(async () => {
    const guest = buildGuest();
    await createDisk(disk, { sizeBytes: 64 * MiB });
    vm = Vm.define(
      {
        name: 'guest1',
        accel: 'tcg',
        memoryMiB: 128,
        boot: { from: 'kernel', ...guest },
        drives: [{ id: 'disk0', path: disk, format: 'qcow2' }],
        nics: [{ id: 'net0', network: { type: 'user' } }],
      },
      { runRoot: scratch.dir },
    );
    await vm.start();
  });
  afterAll(async () => {
    if (vm?.pid !== undefined) await vm.kill();
    scratch.remove();
  });

  it('boots to the marker on the serial console, which answers input', async () => {
    expect(vm.state).toBe('running');
    await vm.console.waitFor(new RegExp(GUEST_MARKER), { timeoutMs: 30_000 });
    const from = vm.console.position;
    vm.console.write('echo nubes-$((6*7))\n');
    await vm.console.waitFor(/nubes-42/, { from, timeoutMs: 10_000 });
    expect(await vm.qmp.queryCpusFast()).toHaveLength(1);
  });

  it('attaches a terminal to the console and detaches on Ctrl-]', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    let seen = '';
    output.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
    });
    const session = vm.console.attach({ input, output });
    input.write('echo attached-$((1+1))\n');
    await expect.poll(() => seen, { timeout: 10_000 }).toMatch(/attached-2/);
    input.write(Buffer.from([0x1d]));
    expect(await session).toBe('detached');
  });

  it('pauses and resumes: the tick counter stops while paused', async () => {
    await vm.console.waitFor(/nubes-tick 1\b/, { timeoutMs: 10_000 });
    await vm.pause();
    expect(vm.state).toBe('paused');
    const at = vm.console.position;
    await new Promise((r) => setTimeout(r, 1500));
    expect(vm.console.position).toBe(at);
    await vm.resume();
    expect(vm.state).toBe('running');
    await vm.console.waitFor(/nubes-tick \d+/, { from: at, timeoutMs: 10_000 });
  });

  it('takes an external snapshot and commits it back down', async () => {
    const overlay = join(scratch.dir, 'root-snap1.qcow2');
    const snap = await vm.snapshot('disk0', { overlay });
    expect(snap.backingNode).toBe('disk0-fmt');
    expect(existsSync(overlay)).toBe(true);
    const info = await runCommand('qemu-img', ['info', '--output=json', '-U', overlay]);
    expect(JSON.parse(info.stdout)['backing-filename']).toBe(disk);
    // Write through the guest so the overlay has something to commit.
    vm.console.write('dd if=/dev/urandom of=/dev/vda bs=64k count=4 conv=fsync 2>/dev/null; echo wrote-$?\n');
    await vm.console.waitFor(/wrote-0/, { timeoutMs: 15_000 });
    const [stats] = await vm.driveStats();
    expect(stats).toMatchObject({ id: 'disk0' });
    expect(stats?.writtenBytes).toBeGreaterThanOrEqual(256 * 1024);
    await vm.commit('disk0');
    const block = (await vm.qmp.queryBlock()).find((b) => b.qdev?.includes('disk0'));
    expect(block?.inserted?.['node-name']).toBe('disk0-fmt');
    expect(block?.inserted?.backing_file).toBeUndefined();
  });

  it('mirrors a drive to a new file and pivots onto it', async () => {
    const copy = join(scratch.dir, 'root-copy.qcow2');
    await vm.mirror('disk0', { target: copy });
    const block = (await vm.qmp.queryBlock()).find((b) => b.qdev?.includes('disk0'));
    expect(block?.inserted?.file).toBe(copy);
    expect(vm.spec.drives[0]?.path).toBe(copy);
  });

  it('hot-plugs a disk and unplugs it with the guest’s DEVICE_DELETED', async () => {
    const extra = join(scratch.dir, 'extra.qcow2');
    await createDisk(extra, { sizeBytes: 16 * MiB });
    await vm.attachDisk({ id: 'disk1', path: extra, format: 'qcow2' });
    vm.console.write('sleep 1; cat /sys/block/vdb/size\n');
    await vm.console.waitFor(/^32768\s*$/m, { timeoutMs: 20_000 });
    await expect(vm.attachDisk({ id: 'disk1', path: extra, format: 'qcow2' })).rejects.toMatchObject({
      code: 'InvalidInput',
      details: { field: 'drive.id' },
    });
    await vm.detachDisk('disk1', { timeoutMs: 30_000 });
    expect(vm.spec.drives.map((d) => d.id)).toEqual(['disk0']);
    expect((await vm.qmp.queryBlock()).some((b) => b.qdev?.includes('disk1'))).toBe(false);
  });

  it('hot-plugs a NIC, sets its link, and unplugs it', async () => {
    await vm.attachNic({ id: 'net1', network: { type: 'user' } });
    await vm.setLink('net1', false);
    await vm.setLink('net1', true);
    await vm.detachNic('net1', { timeoutMs: 30_000 });
    expect(vm.spec.nics.map((n) => n.id)).toEqual(['net0']);
  });

  it('inflates the balloon', async () => {
    expect(await vm.memoryMiB()).toBe(128);
    await vm.setMemory(96);
    await expect.poll(() => vm.memoryMiB(), { timeout: 20_000, interval: 200 }).toBe(96);
    await expect(vm.setMemory(0)).rejects.toMatchObject({
      code: 'InvalidInput',
      details: { field: 'targetMiB' },
    });
  });

  it('shuts down gracefully through the ACPI power button', async () => {
    const how = await vm.shutdown({ timeoutMs: 20_000 });
    expect(how).toBe('powerdown');
    expect(vm.state).toBe('stopped');
    expect(vm.lastExit).toMatchObject({ exitCode: 0, expected: true });
    expect(existsSync(vm.paths.console)).toBe(false);
    expect(existsSync(vm.paths.qmp)).toBe(false);
  });
});
