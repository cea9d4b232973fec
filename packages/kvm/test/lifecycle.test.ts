import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isNubesError } from '@nubes/core';
import { Vm, type VmState, type VmTransition } from '@nubes/kvm';
import { describeWith } from '@nubes/testing';
import { afterAll, afterEach, expect, it } from 'vitest';
import { scratchDir, sleep } from './helpers.js';

// These need no guest: a `-machine none` QEMU has QMP, a pid and a run directory, which is all the
// supervisor's state machine, crash detection and re-attach look at.
describeWith(['qemu-system'], 'VM supervisor lifecycle (-machine none)', () => {
  const scratch = scratchDir('life');
  const vms: Vm[] = [];
  const bare = (name: string, extra: object = {}) => {
    const vm = Vm.define(
      { name, machine: 'none', accel: 'tcg', memoryMiB: 16, balloon: false, serial: false, ...extra },
      { runRoot: scratch.dir },
    );
    vms.push(vm);
    return vm;
  };
  afterEach(async () => {
    for (const vm of vms.splice(0)) if (vm.pid !== undefined) await vm.kill();
  });
  afterAll(() => scratch.remove());

  it('starts, reports transitions, pauses, resumes and quits', async () => {
    const vm = bare('life1');
    const seen: string[] = [];
    vm.on('state', (t: VmTransition) => seen.push(`${t.from}->${t.to}`));
    expect(vm.state).toBe('defined');
    await vm.start();
    expect(vm.state).toBe('running');
    expect(vm.accel).toBe('tcg');
    expect(existsSync(vm.paths.pidfile)).toBe(true);
    await vm.pause();
    expect((await vm.qmp.queryStatus()).status).toBe('paused');
    await vm.resume();
    await vm.quit();
    expect(vm.state).toBe('stopped');
    expect(vm.lastExit).toMatchObject({ exitCode: 0, expected: true });
    expect(seen).toEqual([
      'defined->starting',
      'starting->running',
      'running->paused',
      'paused->running',
      'running->stopping',
      'stopping->stopped',
    ]);
    expect(readdirSync(vm.paths.dir).filter((f) => f.endsWith('.sock'))).toEqual([]);
  });

  it('reports a crash with the signal and the log tail, and restarts by policy', async () => {
    const vm = Vm.define(
      { name: 'life2', machine: 'none', accel: 'tcg', memoryMiB: 16, balloon: false, serial: false },
      { runRoot: scratch.dir, restart: { policy: 'on-crash', maxRestarts: 1, delayMs: 10 } },
    );
    vms.push(vm);
    await vm.start();
    const crash = new Promise((resolve) => vm.once('crash', resolve));
    process.kill(vm.pid as number, 'SIGKILL');
    expect(await crash).toMatchObject({ exitCode: null, signal: 'SIGKILL', expected: false });
    expect(vm.lastExit?.logTail).toBeInstanceOf(Array);
    await vm.waitForState('running', 10_000);
    expect(vm.pid).toBeDefined();
    await vm.kill();
    expect(vm.state).toBe('stopped');
  });

  it('re-attaches to a running VM from its run directory and detects a stale pidfile', async () => {
    const vm = bare('life3');
    await vm.start();
    const pid = vm.pid as number;
    // A second supervisor, as after a restart of the controlling process (QEMU allows one QMP client,
    // so the first lets go of it).
    await vm.qmp.client.close();
    const again = await Vm.attach('life3', { runRoot: scratch.dir });
    expect(again.pid).toBe(pid);
    expect(again.state).toBe('running');
    const states: VmState[] = [];
    again.on('state', (t) => states.push(t.to));
    process.kill(pid, 'SIGKILL');
    await again.waitForState('crashed', 10_000);
    expect(again.lastExit).toMatchObject({ exitCode: null, expected: false });
    await vm.waitForExit();
    const stale = await Vm.attach('life3', { runRoot: scratch.dir }).catch((e: unknown) => e);
    expect(stale).toMatchObject({ code: 'NotFound', details: { stale: true } });
    await vm.remove();
    expect(existsSync(vm.paths.dir)).toBe(false);
  });

  it('reports QEMU’s own message when it exits at start-up', async () => {
    const vm = bare('life4', { extraArgs: ['-device', 'no-such-device'] });
    const error = await vm.start().catch((e: unknown) => e);
    expect(isNubesError(error, 'CommandFailed')).toBe(true);
    expect((error as Error).message).toMatch(/no-such-device/);
    expect(vm.state).toBe('crashed');
  });

  it('refuses bad specs before starting anything', async () => {
    const unknownMachine = await bare('life5', { machine: 'no-such-machine' })
      .start()
      .catch((e: unknown) => e);
    expect(unknownMachine).toMatchObject({ code: 'InvalidInput', details: { field: 'spec.machine' } });
    const missingDrive = await bare('life6', {
      drives: [{ id: 'd0', path: join(scratch.dir, 'none.qcow2'), format: 'qcow2' }],
    })
      .start()
      .catch((e: unknown) => e);
    expect(missingDrive).toMatchObject({ code: 'InvalidInput', details: { field: 'spec.drives.0.path' } });
    expect(existsSync(join(scratch.dir, 'life5'))).toBe(false);
    expect(() => Vm.define({ name: 'x', memoryMiB: 0 })).toThrow(/spec.memoryMiB/);
    const running = bare('life7');
    await running.start();
    const twice = await bare('life7')
      .start()
      .catch((e: unknown) => e);
    expect(twice).toMatchObject({ code: 'Conflict' });
    await expect(running.pause()).resolves.toBeUndefined();
    await expect(running.start()).rejects.toMatchObject({ code: 'Conflict' });
  });
});

// Placement in a caller's cgroup: a cgroup v1 directory made here (unique `nbk-<pid>-` name), given as a
// path and as a callback; QEMU's pid must be in its cgroup.procs, and the directory is removed afterwards.
describeWith(['qemu-system', 'root', 'cgroup-v1'], 'VM placement in a cgroup (v1)', () => {
  const scratch = scratchDir('cg');
  const controller = ['/sys/fs/cgroup/pids', '/sys/fs/cgroup/cpu'].find((c) =>
    existsSync(join(c, 'cgroup.procs')),
  );
  const groups: string[] = [];
  const vms: Vm[] = [];
  const group = (tag: string) => {
    const dir = join(controller as string, `nbk-${process.pid}-${tag}-${Date.now().toString(36)}`);
    mkdirSync(dir);
    groups.push(dir);
    return dir;
  };
  const procs = (dir: string) =>
    readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  afterAll(async () => {
    for (const vm of vms) if (vm.pid !== undefined) await vm.kill();
    // A cgroup can only go once its last process has; an exited QEMU can take a moment to be reaped.
    for (const dir of groups)
      for (let i = 0; i < 50 && existsSync(dir); i++) {
        try {
          rmdirSync(dir);
        } catch {
          await sleep(20);
        }
      }
    scratch.remove();
  });

  it('writes QEMU’s pid to cgroup.procs of a directory, or hands it to a callback', async () => {
    expect(controller).toBeDefined();
    const byPath = group('path');
    const vm = Vm.define(
      { name: 'cg1', machine: 'none', accel: 'tcg', memoryMiB: 16, balloon: false, serial: false },
      { runRoot: scratch.dir, cgroup: byPath },
    );
    vms.push(vm);
    await vm.start();
    expect(procs(byPath)).toContain(vm.pid);
    const line = readFileSync(`/proc/${vm.pid}/cgroup`, 'utf8')
      .split('\n')
      .find((l) => l.includes(byPath.slice(byPath.lastIndexOf('/'))));
    expect(line).toBeDefined();

    const byCallback = group('cb');
    const placed: number[] = [];
    const vm2 = Vm.define(
      { name: 'cg2', machine: 'none', accel: 'tcg', memoryMiB: 16, balloon: false, serial: false },
      {
        runRoot: scratch.dir,
        cgroup: async (pid) => {
          placed.push(pid);
          await writeFile(join(byCallback, 'cgroup.procs'), `${pid}\n`);
        },
      },
    );
    vms.push(vm2);
    await vm2.start();
    expect(placed).toEqual([vm2.pid]);
    expect(procs(byCallback)).toEqual([vm2.pid]);

    await vm.quit();
    await vm2.kill();
    expect(procs(byPath)).toEqual([]);
    expect(procs(byCallback)).toEqual([]);
  });

  it('kills QEMU and fails start() when the cgroup cannot take it', async () => {
    const vm = Vm.define(
      { name: 'cg3', machine: 'none', accel: 'tcg', memoryMiB: 16, balloon: false, serial: false },
      { runRoot: scratch.dir, cgroup: join(controller as string, `nbk-${process.pid}-missing`) },
    );
    vms.push(vm);
    await expect(vm.start()).rejects.toThrow();
    expect(vm.state).toBe('crashed');
    expect(vm.pid).toBeUndefined();
    expect(readdirSync(vm.paths.dir).filter((f) => f.endsWith('.sock'))).toEqual([]);
  });
});
