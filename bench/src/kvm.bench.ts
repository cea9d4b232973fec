import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { createDisk, type MigrationResult, migrate, type QmpClient, Vm, type VmSpec } from '@nubes/kvm';
import { buildGuest, GUEST_MARKER } from '../../packages/kvm/test/fixtures/guest.js';
import { type BenchGroup, defineBenchmarks } from './harness.js';

// @nubes/kvm against the same work done by hand: spawn QEMU with the very argv the library builds and
// talk to it with a minimal socket client. The ratios are the library's overhead (validation, run
// directory, supervision, QMP layering). Guests use TCG, as in the tests.

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A minimal line client: connect, read lines, write JSON. */
async function rawConnect(path: string): Promise<{ socket: Socket; next: () => Promise<string> }> {
  const deadline = Date.now() + 30_000;
  for (let delay = 2; ; delay = Math.min(delay * 2, 50)) {
    if (Date.now() > deadline) throw new Error(`nothing listens on ${path}`);
    const socket = await new Promise<Socket | undefined>((resolve) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (socket) {
      let buffer = '';
      const lines: string[] = [];
      const waiters: ((line: string) => void)[] = [];
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        let at = buffer.indexOf('\n');
        while (at >= 0) {
          const line = buffer.slice(0, at);
          buffer = buffer.slice(at + 1);
          const waiter = waiters.shift();
          if (waiter) waiter(line);
          else lines.push(line);
          at = buffer.indexOf('\n');
        }
      });
      const next = () => {
        const line = lines.shift();
        return line !== undefined ? Promise.resolve(line) : new Promise<string>((r) => waiters.push(r));
      };
      return { socket, next };
    }
    await sleep(delay);
  }
}

/** Launches argv by hand, negotiates QMP with the raw client, and returns a way to stop it. */
async function handLaunch(
  argv: string[],
  qmpPath: string,
): Promise<{ child: ChildProcess; qmp: Awaited<ReturnType<typeof rawConnect>> }> {
  rmSync(qmpPath, { force: true });
  // The run directory exists only once the library has started the VM; the hand-rolled side makes its own.
  mkdirSync(dirname(qmpPath), { recursive: true });
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: 'ignore' });
  const qmp = await rawConnect(qmpPath);
  await qmp.next();
  qmp.socket.write('{"execute":"qmp_capabilities"}\n');
  await qmp.next();
  return { child, qmp };
}

async function handStop(run: { child: ChildProcess; qmp: { socket: Socket } }): Promise<void> {
  const gone = new Promise((resolve) => run.child.once('exit', resolve));
  run.qmp.socket.write('{"execute":"quit"}\n');
  await gone;
  run.qmp.socket.destroy();
}

export default defineBenchmarks({
  name: 'QEMU/KVM: start to QMP ready, QMP round trip, guest boot and live migration, against hand-rolled QEMU control',
  async setup(ctx) {
    const runRoot = join(ctx.tmpDir, 'kvm');
    const groups: BenchGroup[] = [];
    const cleanups: (() => Promise<void>)[] = [];
    const bare: VmSpec = {
      name: 'bench-bare',
      machine: 'none',
      accel: 'tcg',
      memoryMiB: 16,
      balloon: false,
      serial: false,
    };

    // 1. start() to QMP ready (and quit, in both cases).
    const startVm = Vm.define(bare, { runRoot });
    const startArgv = startVm.argv('tcg');
    groups.push({
      name: 'start to QMP ready (-machine none), then quit',
      iterations: 20,
      timeMs: 2000,
      cases: [
        {
          name: 'spawn + minimal QMP client',
          reference: true,
          fn: async () => handStop(await handLaunch(startArgv, startVm.paths.qmp)),
        },
        {
          name: 'Vm.start() + Vm.quit()',
          fn: async () => {
            await startVm.start();
            await startVm.quit();
          },
        },
      ],
    });

    // 2. QMP round trip for query-status on one long-lived QEMU.
    const rtt = Vm.define({ ...bare, name: 'bench-rtt' }, { runRoot });
    await rtt.start();
    cleanups.push(() => rtt.kill());
    const rawSocket = join(ctx.tmpDir, 'raw-qmp.sock');
    const rawRun = await handLaunch(
      [
        ...rtt
          .argv('tcg')
          .map((a) => a.replace(rtt.paths.qmp, rawSocket).replace(rtt.paths.pidfile, `${rawSocket}.pid`)),
      ],
      rawSocket,
    );
    cleanups.push(() => handStop(rawRun));
    const client: QmpClient = rtt.qmp.client;
    groups.push({
      name: 'QMP round trip: query-status',
      cases: [
        {
          name: 'raw socket write + read line',
          reference: true,
          fn: async () => {
            rawRun.qmp.socket.write('{"execute":"query-status"}\n');
            await rawRun.qmp.next();
          },
        },
        { name: 'QmpClient.execute', fn: () => client.execute('query-status') },
        { name: 'QmpCommands.queryStatus', fn: () => rtt.qmp.queryStatus() },
      ],
    });

    // 3. Boot the test guest to its marker (TCG).
    const guest = await buildGuest();
    const bootVm = Vm.define(
      { name: 'bench-boot', accel: 'tcg', memoryMiB: 128, boot: { from: 'kernel', ...guest } },
      { runRoot },
    );
    const bootArgv = bootVm.argv('tcg');
    groups.push({
      name: 'boot the test guest to its console marker (TCG)',
      // Each boot takes seconds: a few real runs, no warm-up.
      iterations: 3,
      timeMs: 1,
      noWarmup: true,
      cases: [
        {
          name: 'spawn + raw console socket',
          reference: true,
          fn: async () => {
            rmSync(bootVm.paths.console, { force: true });
            const run = await handLaunch(bootArgv, bootVm.paths.qmp);
            const console = await rawConnect(bootVm.paths.console);
            const deadline = Date.now() + 60_000;
            while (!(await console.next()).includes(GUEST_MARKER)) {
              if (Date.now() > deadline) throw new Error('the guest never printed its marker');
            }
            console.socket.destroy();
            run.child.kill('SIGKILL');
            await new Promise((resolve) => run.child.once('exit', resolve));
            run.qmp.socket.destroy();
          },
        },
        {
          name: 'Vm.start() + console.waitFor(marker)',
          fn: async () => {
            await bootVm.start();
            await bootVm.console.waitFor(new RegExp(GUEST_MARKER), { timeoutMs: 60_000 });
            await bootVm.kill();
          },
        },
      ],
    });

    // 4. Live migration of a 256 MiB guest, back and forth between fresh destinations (unix socket, shared disk).
    const disk = join(ctx.tmpDir, 'mig.qcow2');
    await createDisk(disk, { sizeBytes: 64 * 1024 * 1024 });
    const migSpec: VmSpec = {
      name: 'bench-mig-0',
      accel: 'tcg',
      memoryMiB: 256,
      boot: { from: 'kernel', ...guest },
      drives: [{ id: 'disk0', path: disk, format: 'qcow2' }],
    };
    let current = await Vm.create(migSpec, { runRoot });
    await current.console.waitFor(new RegExp(GUEST_MARKER), { timeoutMs: 60_000 });
    cleanups.push(() => current.kill());
    const results: MigrationResult[] = [];
    let n = 0;
    groups.push({
      name: 'live migration, 256 MiB guest, shared storage, unix socket',
      iterations: 3,
      timeMs: 1,
      noWarmup: true,
      cases: [
        {
          name: 'start destination + migrate()',
          fn: async () => {
            n++;
            const next = await Vm.create({ ...migSpec, name: `bench-mig-${n}`, incoming: true }, { runRoot });
            results.push(await migrate(current, next, { downtimeLimitMs: 300 }));
            await current.remove();
            current = next;
          },
        },
      ],
    });

    return {
      groups,
      teardown: async () => {
        if (results.length) {
          const mean = (f: (r: MigrationResult) => number) =>
            results.reduce((s, r) => s + f(r), 0) / results.length;
          const max = (f: (r: MigrationResult) => number) => Math.max(...results.map(f));
          console.log(
            `migration over ${results.length} runs: total ${mean((r) => r.totalTimeMs).toFixed(0)} ms mean, ` +
              `downtime ${mean((r) => r.downtimeMs).toFixed(0)} ms mean / ${max((r) => r.downtimeMs)} ms max, ` +
              `${(mean((r) => r.transferredBytes) / 2 ** 20).toFixed(1)} MiB sent mean`,
          );
        }
        for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
      },
    };
  },
});
