import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { runCommand } from '@nubes/core';
import { createDisk, Vm } from '@nubes/kvm';
import { describeWith } from '@nubes/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildGuest, GUEST_MARKER, guestMissing } from './fixtures/guest.js';
import { scratchDir, sleep } from './helpers.js';

const MiB = 1024 * 1024;
const missing = guestMissing();
if (missing) console.warn(`[nubes] kvm guest tests: ${missing}`);

// One guest for the whole file (TCG: nested KVM hangs guest kernels on this machine), driven through
// every operation in order.
// It also has a NIC on a tap device made here (`nbk-<pid>-t0`, removed afterwards) and a VGA device (the one
// `vnc` adds) for screendump.
describeWith(
  ['qemu-system', 'qemu-img', 'busybox', 'root', 'ip'],
  'a tiny guest under supervision (TCG)',
  () => {
    const scratch = scratchDir('vm');
    let vm: Vm;
    const disk = join(scratch.dir, 'root.qcow2');
    const tap = `nbk-${process.pid}-t0`;
    const tapMac = '52:54:00:6e:62:6b';
    let tapCreated = false;
    const hostLink = async () => {
      const [link] = JSON.parse((await runCommand('ip', ['-j', 'link', 'show', 'dev', tap])).stdout) as {
        flags: string[];
      }[];
      return link?.flags ?? [];
    };

    beforeAll(async () => {
      const guest = await buildGuest();
      await createDisk(disk, { sizeBytes: 64 * MiB });
      await runCommand('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
      tapCreated = true;
      await runCommand('ip', ['link', 'set', 'dev', tap, 'up']);
      // Up, but nothing holds the tap yet: no carrier.
      expect(await hostLink()).not.toContain('LOWER_UP');
      vm = Vm.define(
        {
          name: 'guest1',
          accel: 'tcg',
          memoryMiB: 128,
          boot: { from: 'kernel', ...guest },
          drives: [{ id: 'disk0', path: disk, format: 'qcow2' }],
          nics: [
            { id: 'net0', network: { type: 'user' } },
            { id: 'tap0', network: { type: 'tap', ifname: tap }, mac: tapMac },
          ],
          vnc: { socket: true },
        },
        { runRoot: scratch.dir },
      );
      await vm.start();
    });
    afterAll(async () => {
      if (vm?.pid !== undefined) await vm.kill();
      if (tapCreated) await runCommand('ip', ['link', 'del', 'dev', tap]).catch(() => {});
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

    it('attaches a real terminal (a pty from node-pty) in raw mode, and detaches on Ctrl-]', async () => {
      // node-pty is only a test tool here (hoisted from @nubes/netns's dev dependencies); see the README.
      const pty = await import('node-pty').catch(() => undefined);
      if (!pty) {
        console.warn('[nubes] node-pty is not installed: skipping the real-terminal attach');
        return;
      }
      // QEMU takes one client per console socket and the supervisor holds it, so a relay socket stands in for
      // console.sock: the script under the pty connects to it exactly as it would to QEMU's.
      const relayPath = join(scratch.dir, 'relay.sock');
      const clients = new Set<Socket>();
      const relay = createServer((socket) => {
        clients.add(socket);
        const toClient = (text: string) => socket.write(text);
        vm.console.on('data', toClient);
        socket.on('data', (bytes) => vm.console.write(bytes));
        socket.on('error', () => {});
        socket.on('close', () => {
          vm.console.off('data', toClient);
          clients.delete(socket);
        });
      });
      await new Promise<void>((resolve) => relay.listen(relayPath, resolve));
      const script = fileURLToPath(new URL('./fixtures/attach-tty.ts', import.meta.url));
      const repo = fileURLToPath(new URL('../../..', import.meta.url));
      const term = pty.spawn(process.execPath, ['--import', 'tsx', script, relayPath], {
        name: 'xterm',
        cols: 100,
        rows: 30,
        cwd: repo,
        env: { ...process.env } as Record<string, string>,
      });
      let screen = '';
      term.onData((text) => {
        screen += text;
      });
      const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
      try {
        await expect.poll(() => screen, { timeout: 20_000 }).toMatch(/nbk-attach-ready tty=true/);
        // Enter on a terminal is \r: raw mode hands it over untranslated and the guest's tty makes it \n.
        term.write('echo pty-$((6*7))\r');
        await expect.poll(() => screen, { timeout: 10_000 }).toMatch(/pty-42/);
        // In raw mode Ctrl-C is a byte for the guest (it interrupts the guest's sleep), not SIGINT for us.
        term.write('sleep 30\r');
        await sleep(300);
        term.write('\x03');
        term.write('echo after-$((1+1))\r');
        await expect.poll(() => screen, { timeout: 10_000 }).toMatch(/after-2/);
        term.write('\x1d');
        expect(await exited).toBe(0);
        expect(screen).toMatch(/nbk-attach-ended-detached raw=false/);
      } finally {
        term.kill();
        for (const socket of clients) socket.destroy();
        await new Promise((resolve) => relay.close(resolve));
      }
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
      vm.console.write(
        'dd if=/dev/urandom of=/dev/vda bs=64k count=4 conv=fsync 2>/dev/null; echo wrote-$?\n',
      );
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
      expect(vm.spec.nics.map((n) => n.id)).toEqual(['net0', 'tap0']);
    });

    it('has a NIC on a tap device: carrier on the host, eth up in the guest, set_link down and up', async () => {
      // QEMU opened the tap by name at start-up, so the host side now has carrier.
      expect(await hostLink()).toContain('LOWER_UP');
      let from = vm.console.position;
      vm.console.write(
        `for d in /sys/class/net/*; do [ "$(cat $d/address)" = ${tapMac} ] && t=\${d##*/}; done; ip link set $t up; sleep 1; echo "tapnic-$t-$(cat /sys/class/net/$t/carrier)"\n`,
      );
      const [, ifname] = (await vm.console.waitFor(/tapnic-(eth\d)-1/, { from, timeoutMs: 15_000 })) ?? [];
      expect(ifname).toMatch(/^eth\d$/);
      const carrier = async (up: 0 | 1) => {
        from = vm.console.position;
        vm.console.write('echo "tapcarrier-$(cat /sys/class/net/$t/carrier)"\n');
        await vm.console.waitFor(new RegExp(`tapcarrier-${up}`), { from, timeoutMs: 10_000 });
      };
      await vm.setLink('tap0', false);
      await expect.poll(() => carrier(0).then(() => true), { timeout: 15_000 }).toBe(true);
      await vm.setLink('tap0', true);
      await expect.poll(() => carrier(1).then(() => true), { timeout: 15_000 }).toBe(true);
    });

    it('writes a screendump of the VGA device as a PPM', async () => {
      const file = join(scratch.dir, 'screen.ppm');
      await vm.qmp.screendump(file);
      const ppm = readFileSync(file);
      const header = /^P6\s+(\d+)\s+(\d+)\s+(\d+)\s/.exec(ppm.subarray(0, 32).toString('latin1'));
      expect(header).not.toBeNull();
      const [text, width, height, max] = header as RegExpExecArray;
      expect(Number(width)).toBeGreaterThan(0);
      expect(Number(height)).toBeGreaterThan(0);
      expect(Number(max)).toBe(255);
      expect(ppm.length).toBe(text.length + Number(width) * Number(height) * 3);
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
      // Generous: under TCG on a loaded 2-core machine the guest's power-button handling can take a while.
      const how = await vm.shutdown({ timeoutMs: 60_000 });
      expect(how).toBe('powerdown');
      expect(vm.state).toBe('stopped');
      expect(vm.lastExit).toMatchObject({ exitCode: 0, expected: true });
      expect(existsSync(vm.paths.console)).toBe(false);
      expect(existsSync(vm.paths.qmp)).toBe(false);
    }, 90_000);
  },
);
