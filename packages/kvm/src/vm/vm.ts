import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { closeSync, constants, openSync } from 'node:fs';
import { access, mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type CommandRunner,
  commandRunner,
  invalidInput,
  NubesError,
  notFound,
  parseInput,
} from '@nubes/core';
import { z } from 'zod';
import { SerialConsole } from '../console/serial.js';
import {
  awaitReady,
  blockInfo,
  concludeJob,
  type DriveStats,
  driveStats,
  topNode,
  waitForJobStatus,
} from '../disks/block.js';
import { timeoutError } from '../errors.js';
import {
  type Accelerator,
  buildQemuArgv,
  driveBlockdevs,
  driveDevice,
  driveNodes,
  nicDevice,
  nicNetdev,
  type RunPaths,
  runPaths,
} from '../qemu/argv.js';
import { checkSpecOnHost, DEFAULT_QEMU_BINARY, resolveAccelerator } from '../qemu/host.js';
import {
  type DriveSpec,
  driveSpecSchema,
  type NicSpec,
  nicSpecSchema,
  type ResolvedVmSpec,
  type VmSpec,
  vmSpecSchema,
} from '../qemu/spec.js';
import { QmpClient } from '../qmp/client.js';
import { QmpCommands } from '../qmp/commands.js';
import { canTransition, requireState, type VmState } from './state.js';

/** How the supervisor restarts a VM on its own. */
export interface RestartPolicy {
  /** `on-crash`: after a crash only; `always`: also after the guest powers off. Default `never`. */
  policy: 'never' | 'on-crash' | 'always';
  /** Give up after this many restarts in a row. Default 3. */
  maxRestarts?: number;
  /** Wait this long before restarting. Default 1000 ms. */
  delayMs?: number;
}

/** Options of a supervised VM. */
export interface VmOptions {
  /** Directory holding one run directory per VM (`<runRoot>/<name>`). Default {@link defaultRunRoot}. */
  runRoot?: string;
  /** QEMU binary. Default `qemu-system-x86_64`. */
  qemuBinary?: string;
  /** Runs host tools (the `-machine help` probe). Default: @nubes/core's runner. */
  runner?: CommandRunner;
  /**
   * Places the QEMU process in a cgroup right after it is spawned: a cgroup directory (the pid is written
   * to its `cgroup.procs`) or a callback that does it. QEMU has not started its vCPUs by then.
   */
  cgroup?: string | ((pid: number) => void | Promise<void>);
  /** Restart policy. Default `{ policy: 'never' }`. */
  restart?: RestartPolicy;
  /** Give up when QMP is not ready after this long. Default 30 000 ms. */
  startTimeoutMs?: number;
  /** Characters of console output kept in memory. Default 256 KiB. */
  consoleBufferSize?: number;
}

/** Options for {@link Vm.shutdown}. */
export interface ShutdownOptions {
  /** How long the guest gets after the ACPI power button. Default 30 000 ms. */
  timeoutMs?: number;
  /** How long QEMU gets after `quit`. Default 5 000 ms. */
  quitTimeoutMs?: number;
}

/** How a VM's QEMU process ended. */
export interface VmExit {
  /** Exit code, or `null` when killed by a signal or when unknown (a re-attached VM). */
  exitCode: number | null;
  /** The signal that killed it, if known. */
  signal: NodeJS.Signals | null;
  /** The last lines of QEMU's log. */
  logTail: string[];
  /** Whether the supervisor expected it (shutdown, quit, migration done, guest power-off). */
  expected: boolean;
}

/** A state change. */
export interface VmTransition {
  from: VmState;
  to: VmState;
  /** What caused it (`start`, `STOP`, `RESUME`, `SHUTDOWN`, `exit`, `restart`...). */
  reason: string;
}

/** Events of a {@link Vm}. */
export interface VmEvents {
  /** Every state transition. */
  state: [transition: VmTransition];
  /** QEMU exited unexpectedly. */
  crash: [exit: VmExit];
  /** QEMU exited (expected or not). */
  exit: [exit: VmExit];
  /** A restart by the restart policy failed. */
  error: [error: Error];
}

/** The result of {@link Vm.snapshot}. */
export interface SnapshotResult {
  /** The drive. */
  drive: string;
  /** The new overlay file the guest now writes to. */
  overlay: string;
  /** The overlay's block node. */
  nodeName: string;
  /** The node that became its backing. */
  backingNode: string;
}

const optionsSchema = z
  .object({
    runRoot: z.string().min(1).optional(),
    qemuBinary: z.string().min(1).optional(),
    runner: z.custom<CommandRunner>((v) => typeof v === 'object' && v !== null && 'run' in v).optional(),
    cgroup: z
      .union([z.string().min(1), z.custom<(pid: number) => void>((v) => typeof v === 'function')])
      .optional(),
    restart: z
      .object({
        policy: z.enum(['never', 'on-crash', 'always']),
        maxRestarts: z.number().int().min(0).optional(),
        delayMs: z.number().int().min(0).optional(),
      })
      .strict()
      .optional(),
    startTimeoutMs: z.number().int().positive().optional(),
    consoleBufferSize: z.number().int().positive().optional(),
  })
  .strict();

const shutdownSchema = z
  .object({
    timeoutMs: z.number().int().min(0).optional(),
    quitTimeoutMs: z.number().int().min(0).optional(),
  })
  .strict();
const jobOptionsSchema = z.object({ timeoutMs: z.number().int().positive().optional() }).strict();
const snapshotSchema = z
  .object({ overlay: z.string().min(1), timeoutMs: z.number().int().positive().optional() })
  .strict();
const mirrorSchema = z
  .object({
    target: z.string().min(1),
    format: z.enum(['qcow2', 'raw']).default('qcow2'),
    pivot: z.boolean().default(true),
    timeoutMs: z.number().int().positive().optional(),
  })
  .strict();

/** Where run directories go by default: /run/nubes-kvm as root, otherwise under XDG_RUNTIME_DIR or the temp dir. */
export function defaultRunRoot(): string {
  if (process.getuid?.() === 0) return '/run/nubes-kvm';
  return join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), `nubes-kvm-${process.getuid?.() ?? 'user'}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The pid in a run directory's pidfile if that process is the QEMU of this directory, else `undefined`. */
export async function livePid(paths: RunPaths): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number.parseInt((await readFile(paths.pidfile, 'utf8')).trim(), 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined;
  try {
    // A recycled pid belongs to some other program: only trust it if it runs with our QMP socket.
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(paths.qmp) ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function tailLines(path: string, count: number): Promise<string[]> {
  try {
    const text = await readFile(path, 'utf8');
    return text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .slice(-count);
  } catch {
    return [];
  }
}

/**
 * A QEMU virtual machine under supervision, in the model of a libvirt domain: a validated spec, a run
 * directory (`qmp.sock`, `qemu.pid`, `qemu.log`, `console.sock`, `console.log`, `spec.json`), a state
 * machine with events, graceful shutdown, crash detection, an optional restart policy and re-attach after
 * the controlling process restarts.
 *
 * @example
 * ```ts
 * const vm = Vm.define({ name: 'web1', accel: 'auto', memoryMiB: 512,
 *   boot: { from: 'kernel', kernel: '/boot/vmlinuz', initrd: '/tmp/initrd', cmdline: 'console=ttyS0' } });
 * await vm.start();
 * await vm.console.waitFor(/login:/);
 * await vm.shutdown();
 * ```
 */
export class Vm extends EventEmitter<VmEvents> {
  /** The spec with defaults filled in (hot-plugged drives and NICs are added to it). */
  readonly spec: ResolvedVmSpec;
  /** The run directory's files. */
  readonly paths: RunPaths;
  private currentState: VmState = 'defined';
  private client: QmpCommands | undefined;
  private serial: SerialConsole | undefined;
  private processId: number | undefined;
  private accelerator: Accelerator | undefined;
  private exitInfo: VmExit | undefined;
  private expectingExit = false;
  private stopRequested = false;
  private exited: Promise<VmExit> | undefined;
  private restarts = 0;
  private readonly opts: z.output<typeof optionsSchema>;

  private constructor(spec: ResolvedVmSpec, options: z.output<typeof optionsSchema>) {
    super();
    this.spec = spec;
    this.opts = options;
    this.paths = runPaths(join(options.runRoot ?? defaultRunRoot(), spec.name));
    if (Buffer.byteLength(this.paths.console) > 107)
      throw invalidInput('options.runRoot', `run directory ${this.paths.dir} is too long for unix sockets`);
  }

  /** Validates a spec and returns a VM in state `defined`. Throws `InvalidInput` naming the field. */
  static define(spec: VmSpec, options: VmOptions = {}): Vm {
    const resolved = parseInput(vmSpecSchema, spec, 'spec');
    return new Vm(resolved, parseInput(optionsSchema, options, 'options'));
  }

  /** Defines and starts a VM. */
  static async create(spec: VmSpec, options: VmOptions = {}): Promise<Vm> {
    const vm = Vm.define(spec, options);
    await vm.start();
    return vm;
  }

  /**
   * Re-attaches to a VM started earlier (by this or another process) from its run directory. Throws
   * `NotFound` when the directory has no spec or the pidfile is stale (`details.stale`).
   */
  static async attach(name: string, options: VmOptions = {}): Promise<Vm> {
    const opts = parseInput(optionsSchema, options, 'options');
    const paths = runPaths(join(opts.runRoot ?? defaultRunRoot(), name));
    let saved: { spec: ResolvedVmSpec; accel: Accelerator };
    try {
      saved = JSON.parse(await readFile(paths.spec, 'utf8'));
    } catch {
      throw notFound('vm run directory', paths.dir);
    }
    const vm = new Vm(parseInput(vmSpecSchema, saved.spec, 'spec'), opts);
    const pid = await livePid(paths);
    if (pid === undefined)
      throw new NubesError('NotFound', `VM "${name}" is not running (stale or missing pidfile)`, {
        details: { kind: 'vm', id: name, stale: true },
      });
    vm.accelerator = saved.accel;
    vm.processId = pid;
    vm.currentState = 'starting';
    await vm.connect(undefined, true);
    return vm;
  }

  /** The VM's name. */
  get name(): string {
    return this.spec.name;
  }
  /** The current state. */
  get state(): VmState {
    return this.currentState;
  }
  /** QEMU's pid while it runs. */
  get pid(): number | undefined {
    return this.processId;
  }
  /** The accelerator in use (`kvm` or `tcg`) once started. */
  get accel(): Accelerator | undefined {
    return this.accelerator;
  }
  /** How QEMU last exited, if it has. */
  get lastExit(): VmExit | undefined {
    return this.exitInfo;
  }
  /** Typed QMP commands and events of the running VM. Throws `Conflict` when QEMU is not running. */
  get qmp(): QmpCommands {
    if (!this.client)
      throw new NubesError('Conflict', `VM "${this.name}" is ${this.state}: no QMP connection`);
    return this.client;
  }
  /** The serial console of the running VM. Throws `Conflict` when there is none. */
  get console(): SerialConsole {
    if (!this.serial)
      throw new NubesError(
        'Conflict',
        `VM "${this.name}" has no serial console connected (state ${this.state})`,
      );
    return this.serial;
  }
  /** The argv this VM runs (or would run) QEMU with, binary first. */
  argv(accel: Accelerator = this.accelerator ?? 'tcg'): string[] {
    return [this.opts.qemuBinary ?? DEFAULT_QEMU_BINARY, ...buildQemuArgv(this.spec, this.paths, accel)];
  }

  /**
   * Starts QEMU and resolves once QMP is connected (state `running`, or `paused` for `paused: true` and
   * incoming-migration VMs). Host checks (machine type, files) run first and throw `InvalidInput`; a QEMU
   * that exits during start-up rejects with `CommandFailed` carrying QEMU's own message.
   */
  async start(): Promise<void> {
    requireState(this.name, this.state, ['defined', 'stopped', 'crashed'], 'start');
    const binary = this.opts.qemuBinary ?? DEFAULT_QEMU_BINARY;
    await checkSpecOnHost(this.spec, binary, this.opts.runner ?? commandRunner);
    const accel = await resolveAccelerator(this.spec.accel);
    await mkdir(this.paths.dir, { recursive: true, mode: 0o700 });
    if (await livePid(this.paths))
      throw new NubesError('Conflict', `VM "${this.name}" is already running from ${this.paths.dir}`, {
        details: { vm: this.name, runDir: this.paths.dir },
      });
    // Whatever is left is stale: a previous QEMU that was killed does not clean up after itself.
    for (const stale of [this.paths.qmp, this.paths.console, this.paths.pidfile, this.paths.vnc])
      await rm(stale, { force: true });
    await writeFile(this.paths.log, '');
    await writeFile(this.paths.consoleLog, '');
    await writeFile(this.paths.spec, `${JSON.stringify({ spec: this.spec, accel }, null, 2)}\n`);
    if (this.spec.cloudInit) {
      await mkdir(this.paths.cidata, { recursive: true });
      await writeFile(join(this.paths.cidata, 'user-data'), this.spec.cloudInit.userData);
      await writeFile(
        join(this.paths.cidata, 'meta-data'),
        this.spec.cloudInit.metaData ?? `instance-id: ${this.name}\nlocal-hostname: ${this.name}\n`,
      );
      if (this.spec.cloudInit.networkConfig)
        await writeFile(join(this.paths.cidata, 'network-config'), this.spec.cloudInit.networkConfig);
    }
    this.accelerator = accel;
    this.exitInfo = undefined;
    this.expectingExit = false;
    this.stopRequested = false;
    this.transition('starting', 'start');
    const log = openSync(this.paths.log, 'a');
    let child: ChildProcess;
    try {
      // Detached, in its own process group: the VM must outlive this Node process (re-attach).
      child = spawn(binary, buildQemuArgv(this.spec, this.paths, accel), {
        detached: true,
        stdio: ['ignore', log, log],
      });
    } finally {
      closeSync(log);
    }
    child.unref();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    if (child.pid === undefined) {
      const failure = await exited;
      this.transition('crashed', 'spawn failed');
      throw new NubesError('CommandFailed', `${binary} could not be started`, { details: { ...failure } });
    }
    this.processId = child.pid;
    try {
      if (this.opts.cgroup) {
        if (typeof this.opts.cgroup === 'string')
          await writeFile(join(this.opts.cgroup, 'cgroup.procs'), `${child.pid}\n`);
        else await this.opts.cgroup(child.pid);
      }
      await this.connect(exited, false);
    } catch (error) {
      if (alive(child.pid)) child.kill('SIGKILL');
      const result = await exited;
      await this.cleanupSockets();
      const tail = await tailLines(this.paths.log, 20);
      this.client = undefined;
      this.serial?.close();
      this.serial = undefined;
      this.processId = undefined;
      this.exitInfo = { exitCode: result.code, signal: result.signal, logTail: tail, expected: false };
      this.transition('crashed', 'start failed');
      if (error instanceof NubesError && error.code !== 'Unavailable' && error.code !== 'Timeout')
        throw error;
      const qemuSays = tail.filter((l) => l.includes('qemu')).at(-1) ?? tail.at(-1);
      throw new NubesError(
        error instanceof NubesError && error.code === 'Timeout' ? 'Timeout' : 'CommandFailed',
        `QEMU for VM "${this.name}" did not start: ${qemuSays ?? (error as Error).message}`,
        { cause: error, details: { exitCode: result.code, signal: result.signal, logTail: tail } },
      );
    }
  }

  private async connect(
    exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined,
    reattach: boolean,
  ): Promise<void> {
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 30_000);
    let early: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    exited?.then((r) => {
      early = r;
    });
    let client: QmpClient | undefined;
    // QEMU creates its QMP socket during start-up; polling for it is the only signal it gives.
    for (let delay = 2; !client; delay = Math.min(delay * 2, 50)) {
      if (early) throw new NubesError('Unavailable', `QEMU exited with ${early.code ?? early.signal}`);
      try {
        client = await QmpClient.connect({ path: this.paths.qmp });
      } catch (error) {
        if (Date.now() > deadline)
          throw timeoutError(`QMP of VM "${this.name}"`, this.opts.startTimeoutMs ?? 30_000);
        if (!(error instanceof NubesError) || error.code !== 'Unavailable') throw error;
        await sleep(delay);
      }
    }
    const qmp = new QmpCommands(client);
    this.client = qmp;
    if (this.spec.serial) {
      const history = reattach ? await readFile(this.paths.consoleLog, 'utf8').catch(() => '') : '';
      this.serial = await SerialConsole.connect(this.paths.console, {
        history,
        bufferSize: this.opts.consoleBufferSize,
      });
    }
    qmp.events.on(['STOP', 'RESUME', 'SHUTDOWN'], (event) => {
      if (event.event === 'STOP' && this.state === 'running') this.transition('paused', 'STOP');
      if (event.event === 'RESUME' && (this.state === 'paused' || this.state === 'starting'))
        this.transition('running', 'RESUME');
      if (event.event === 'SHUTDOWN') {
        this.expectingExit = true;
        if (this.state !== 'stopping') this.transition('stopping', `SHUTDOWN (${String(event.data.reason)})`);
      }
    });
    this.exited = this.watchExit(exited, client);
    const status = await qmp.queryStatus();
    if (this.state === 'starting')
      this.transition(status.running ? 'running' : 'paused', `status ${status.status}`);
  }

  private async watchExit(
    exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined,
    client: QmpClient,
  ): Promise<VmExit> {
    let result: { code: number | null; signal: NodeJS.Signals | null };
    if (exited) result = await exited;
    else {
      // Not our child: QMP's EOF is the first sign, then the pid must go away.
      await client.closed;
      const pid = this.processId as number;
      while (alive(pid)) await sleep(50);
      result = { code: null, signal: null };
    }
    client.close().catch(() => {});
    this.serial?.close();
    await this.cleanupSockets();
    const tail = await tailLines(this.paths.log, 20);
    const cleanExit = result.code === 0 && this.expectingExit;
    const expected = this.stopRequested || cleanExit || (exited === undefined && this.expectingExit);
    const exit: VmExit = { exitCode: result.code, signal: result.signal, logTail: tail, expected };
    this.exitInfo = exit;
    this.client = undefined;
    this.serial = undefined;
    this.processId = undefined;
    if (this.state !== 'crashed' && this.state !== 'stopped') {
      this.transition(expected ? 'stopped' : 'crashed', 'exit');
      this.emit('exit', exit);
      if (!expected) this.emit('crash', exit);
      this.maybeRestart(exit);
    }
    return exit;
  }

  private maybeRestart(exit: VmExit): void {
    const policy = this.opts.restart?.policy ?? 'never';
    if (policy === 'never' || this.stopRequested) return;
    if (policy === 'on-crash' && exit.expected) return;
    if (this.restarts >= (this.opts.restart?.maxRestarts ?? 3)) return;
    this.restarts++;
    setTimeout(() => {
      this.start().catch((error: Error) => {
        if (this.listenerCount('error') > 0) this.emit('error', error);
      });
    }, this.opts.restart?.delayMs ?? 1000);
  }

  private async cleanupSockets(): Promise<void> {
    for (const path of [this.paths.qmp, this.paths.console, this.paths.vnc, this.paths.pidfile])
      await rm(path, { force: true });
  }

  private transition(to: VmState, reason: string): void {
    const from = this.currentState;
    if (from === to) return;
    if (!canTransition(from, to))
      throw new NubesError('Internal', `illegal VM state transition ${from} → ${to} (${reason})`);
    this.currentState = to;
    this.emit('state', { from, to, reason });
  }

  /**
   * Resolves when the VM reaches `state` (at once if it is there). Rejects with `Timeout`.
   */
  waitForState(state: VmState, timeoutMs = 30_000): Promise<void> {
    if (this.state === state) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onState = (t: VmTransition) => {
        if (t.to !== state) return;
        clearTimeout(timer);
        this.off('state', onState);
        resolve();
      };
      const timer = setTimeout(() => {
        this.off('state', onState);
        reject(timeoutError(`waiting for VM "${this.name}" to be ${state} (it is ${this.state})`, timeoutMs));
      }, timeoutMs);
      this.on('state', onState);
    });
  }

  /** Pauses every vCPU (`stop`). */
  async pause(): Promise<void> {
    requireState(this.name, this.state, ['running', 'paused'], 'pause');
    const stopped = this.waitForState('paused', 10_000);
    await this.qmp.stop();
    await stopped;
  }

  /** Resumes a paused VM (`cont`). */
  async resume(): Promise<void> {
    requireState(this.name, this.state, ['running', 'paused'], 'resume');
    const running = this.waitForState('running', 10_000);
    await this.qmp.cont();
    await running;
  }

  /** Hard-resets the guest (`system_reset`). */
  async reset(): Promise<void> {
    requireState(this.name, this.state, ['running', 'paused'], 'reset');
    await this.qmp.systemReset();
  }

  /**
   * Stops the VM the way libvirt's `shutdown` then `destroy` would: ACPI power button, then `quit` after
   * `timeoutMs`, then SIGKILL after `quitTimeoutMs`. Resolves with the step that ended it.
   */
  async shutdown(options: ShutdownOptions = {}): Promise<'powerdown' | 'quit' | 'kill'> {
    const opts = parseInput(shutdownSchema, options, 'options');
    requireState(this.name, this.state, ['running', 'paused', 'stopping'], 'shut down');
    this.stopRequested = true;
    if (this.state !== 'stopping') this.transition('stopping', 'shutdown');
    const exited = this.awaitExit();
    const within = (ms: number) => Promise.race([exited.then(() => true), sleep(ms).then(() => false)]);
    await this.client?.systemPowerdown().catch(() => {});
    if (await within(opts.timeoutMs ?? 30_000)) return 'powerdown';
    await this.client?.quit().catch(() => {});
    if (await within(opts.quitTimeoutMs ?? 5_000)) return 'quit';
    await this.kill();
    return 'kill';
  }

  /** Kills QEMU with SIGKILL at once (libvirt's `destroy`) and waits for it to be gone. */
  async kill(): Promise<void> {
    if (this.processId === undefined || !this.exited) return;
    this.stopRequested = true;
    if (this.state === 'running' || this.state === 'paused') this.transition('stopping', 'kill');
    try {
      process.kill(this.processId, 'SIGKILL');
    } catch {
      // already gone
    }
    await this.awaitExit();
  }

  /** Asks QEMU to exit now (`quit`) without asking the guest, and waits for the process to end. */
  async quit(): Promise<void> {
    requireState(this.name, this.state, ['running', 'paused', 'stopping'], 'quit');
    this.stopRequested = true;
    if (this.state !== 'stopping') this.transition('stopping', 'quit');
    const exited = this.awaitExit();
    await this.qmp.quit().catch(() => {});
    await exited;
  }

  /** Resolves with the exit once QEMU has exited (a VM that is not running resolves with its last exit). */
  async waitForExit(): Promise<VmExit | undefined> {
    return this.exited ? await this.awaitExit() : this.exitInfo;
  }

  private async awaitExit(): Promise<VmExit> {
    // QEMU's child handle is unref'd so a running VM never keeps Node alive; whoever waits for the exit
    // must, or a script that ends with `await vm.quit()` would exit before QEMU is reaped.
    const keepAlive = setInterval(() => {}, 1000);
    try {
      return await (this.exited as Promise<VmExit>);
    } finally {
      clearInterval(keepAlive);
    }
  }

  /** Removes the run directory of a VM that is not running (logs included). */
  async remove(): Promise<void> {
    requireState(this.name, this.state, ['defined', 'stopped', 'crashed'], 'remove');
    await rm(this.paths.dir, { recursive: true, force: true });
  }

  // ---- disks ---------------------------------------------------------------------------------

  /** I/O statistics of every drive of the spec. */
  driveStats(): Promise<DriveStats[]> {
    return driveStats(
      this.qmp,
      this.spec.drives.map((d) => d.id),
    );
  }

  /**
   * Takes an external snapshot of a drive: QEMU creates the qcow2 file `overlay` on top of the drive's
   * current image (which becomes read-only backing) and the guest writes to the overlay from then on.
   */
  async snapshot(driveId: string, options: { overlay: string; timeoutMs?: number }): Promise<SnapshotResult> {
    const opts = parseInput(snapshotSchema, options, 'options');
    this.requireDrive(driveId);
    const backingNode = await topNode(this.qmp, driveId);
    const nodeName = `${driveId}-s${Date.now().toString(36).slice(-6)}`;
    await this.qmp.blockdevSnapshotSync(
      {
        'node-name': backingNode,
        'snapshot-file': opts.overlay,
        'snapshot-node-name': nodeName,
        format: 'qcow2',
        mode: 'absolute-paths',
      },
      { timeoutMs: opts.timeoutMs ?? 30_000 },
    );
    return { drive: driveId, overlay: opts.overlay, nodeName, backingNode };
  }

  /**
   * Commits the drive's active overlay back into its backing image (an active `block-commit`, completed
   * when ready) and makes the backing image the active one again. The overlay file is left for the caller.
   */
  async commit(driveId: string, options: { timeoutMs?: number } = {}): Promise<void> {
    const opts = parseInput(jobOptionsSchema, options, 'options');
    this.requireDrive(driveId);
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const top = await topNode(this.qmp, driveId);
    const info = await blockInfo(this.qmp, driveId);
    if (!info.inserted?.backing_file)
      throw new NubesError('Conflict', `drive "${driveId}" has no snapshot to commit`, {
        details: { drive: driveId },
      });
    const jobId = `commit-${driveId}`;
    const ready = waitForJobStatus(this.qmp, jobId, ['ready', 'concluded'], timeoutMs);
    await this.qmp.blockCommit({ 'job-id': jobId, device: top, 'auto-dismiss': false });
    await awaitReady(this.qmp, jobId, ready);
    const concluded = waitForJobStatus(this.qmp, jobId, ['concluded'], timeoutMs);
    await this.qmp.blockJobComplete(jobId);
    await concludeJob(this.qmp, jobId, concluded);
  }

  /**
   * Copies a drive to a new file with `drive-mirror` and, once the job is ready, pivots the guest onto the
   * copy (`pivot: true`, the default) or leaves the guest where it was with a consistent copy
   * (`pivot: false`, `block-job-cancel` on a ready job).
   */
  async mirror(
    driveId: string,
    options: { target: string; format?: 'qcow2' | 'raw'; pivot?: boolean; timeoutMs?: number },
  ): Promise<void> {
    const opts = parseInput(mirrorSchema, options, 'options');
    this.requireDrive(driveId);
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const jobId = `mirror-${driveId}`;
    const ready = waitForJobStatus(this.qmp, jobId, ['ready', 'concluded'], timeoutMs);
    await this.qmp.driveMirror({
      'job-id': jobId,
      device: await topNode(this.qmp, driveId),
      target: opts.target,
      format: opts.format,
      sync: 'full',
      mode: 'absolute-paths',
      'auto-dismiss': false,
    });
    await awaitReady(this.qmp, jobId, ready);
    const concluded = waitForJobStatus(this.qmp, jobId, ['concluded'], timeoutMs);
    if (opts.pivot) await this.qmp.blockJobComplete(jobId);
    else await this.qmp.blockJobCancel(jobId);
    await concludeJob(this.qmp, jobId, concluded);
    if (opts.pivot) {
      const drive = this.spec.drives.find((d) => d.id === driveId) as DriveSpec;
      drive.path = opts.target;
      drive.format = opts.format;
      await this.saveSpec();
    }
  }

  /** Hot-plugs a drive (`blockdev-add` twice, then `device_add`); rolls back on failure. */
  async attachDisk(drive: z.input<typeof driveSpecSchema>): Promise<void> {
    const spec = parseInput(driveSpecSchema, drive, 'drive');
    requireState(this.name, this.state, ['running', 'paused'], 'attach a disk to');
    if (this.deviceIds().includes(spec.id))
      throw invalidInput('drive.id', `device id "${spec.id}" is already in use`);
    try {
      await access(spec.path, spec.readOnly ? constants.R_OK : constants.R_OK | constants.W_OK);
    } catch {
      throw invalidInput('drive.path', `${spec.path} does not exist or is not accessible`);
    }
    if (spec.interface !== 'virtio')
      throw invalidInput('drive.interface', 'only virtio drives can be hot-plugged');
    const [file, format] = driveBlockdevs(spec);
    await this.qmp.blockdevAdd(file as { driver: string });
    try {
      await this.qmp.blockdevAdd(format as { driver: string });
      try {
        await this.qmp.deviceAdd(driveDevice(spec) as { driver: string });
      } catch (error) {
        await this.qmp.blockdevDel(driveNodes(spec.id).format).catch(() => {});
        throw error;
      }
    } catch (error) {
      await this.qmp.blockdevDel(driveNodes(spec.id).file).catch(() => {});
      throw error;
    }
    this.spec.drives.push(spec);
    await this.saveSpec();
  }

  /**
   * Unplugs a drive: `device_del`, then waits for the guest to release it (`DEVICE_DELETED`), then
   * removes its block nodes. Rejects with `Timeout` when the guest does not let go in time.
   */
  async detachDisk(id: string, options: { timeoutMs?: number } = {}): Promise<void> {
    const opts = parseInput(jobOptionsSchema, options, 'options');
    this.requireDrive(id);
    await this.unplug(id, opts.timeoutMs ?? 30_000);
    const nodes = driveNodes(id);
    await this.qmp.blockdevDel(nodes.format);
    await this.qmp.blockdevDel(nodes.file);
    this.spec.drives = this.spec.drives.filter((d) => d.id !== id);
    await this.saveSpec();
  }

  /** Hot-plugs a NIC (`netdev_add`, then `device_add`). */
  async attachNic(nic: z.input<typeof nicSpecSchema>): Promise<void> {
    const spec = parseInput(nicSpecSchema, nic, 'nic');
    requireState(this.name, this.state, ['running', 'paused'], 'attach a NIC to');
    if (this.deviceIds().includes(spec.id))
      throw invalidInput('nic.id', `device id "${spec.id}" is already in use`);
    await this.qmp.netdevAdd(nicNetdev(spec) as { type: string; id: string });
    try {
      await this.qmp.deviceAdd(nicDevice(spec, this.name) as { driver: string });
    } catch (error) {
      await this.qmp.netdevDel(`${spec.id}-net`).catch(() => {});
      throw error;
    }
    this.spec.nics.push(spec);
    await this.saveSpec();
  }

  /** Unplugs a NIC, waiting for `DEVICE_DELETED`, then removes its backend. */
  async detachNic(id: string, options: { timeoutMs?: number } = {}): Promise<void> {
    const opts = parseInput(jobOptionsSchema, options, 'options');
    if (!this.spec.nics.some((n) => n.id === id)) throw notFound('nic', id);
    await this.unplug(id, opts.timeoutMs ?? 30_000);
    await this.qmp.netdevDel(`${id}-net`);
    this.spec.nics = this.spec.nics.filter((n) => n.id !== id);
    await this.saveSpec();
  }

  /** Sets a NIC's link up or down. */
  async setLink(id: string, up: boolean): Promise<void> {
    if (!this.spec.nics.some((n) => n.id === id)) throw notFound('nic', id);
    await this.qmp.setLink(id, up);
  }

  /** Asks the balloon driver to give the guest `targetMiB` of memory. */
  async setMemory(targetMiB: number): Promise<void> {
    const mib = parseInput(z.number().int().min(1).max(this.spec.memoryMiB), targetMiB, 'targetMiB');
    if (!this.spec.balloon) throw new NubesError('Conflict', `VM "${this.name}" has no balloon device`);
    await this.qmp.balloon(mib * 1024 * 1024);
  }

  /** The memory the guest has now according to the balloon, in MiB. */
  async memoryMiB(): Promise<number> {
    return (await this.qmp.queryBalloon()).actual / (1024 * 1024);
  }

  private async unplug(id: string, timeoutMs: number): Promise<void> {
    requireState(this.name, this.state, ['running', 'paused'], 'unplug a device from');
    const deleted = this.qmp.events.waitFor('DEVICE_DELETED', {
      timeoutMs,
      match: (e) => e.data.device === id,
    });
    try {
      await this.qmp.deviceDel(id);
    } catch (error) {
      deleted.catch(() => {});
      throw error;
    }
    await deleted;
  }

  private requireDrive(id: string): void {
    if (!this.spec.drives.some((d) => d.id === id)) throw notFound('drive', id);
  }

  private deviceIds(): string[] {
    return [...this.spec.drives.map((d) => d.id), ...this.spec.nics.map((n) => n.id)];
  }

  private async saveSpec(): Promise<void> {
    await writeFile(
      this.paths.spec,
      `${JSON.stringify({ spec: this.spec, accel: this.accelerator }, null, 2)}\n`,
    );
  }

  /** @internal Marks the coming exit as expected (used by migration before quitting the source). */
  expectExit(): void {
    this.stopRequested = true;
  }

  /** @internal Removes the stale socket files a killed QEMU leaves (used by tests and migration). */
  async unlinkSockets(): Promise<void> {
    for (const path of [this.paths.qmp, this.paths.console]) await unlink(path).catch(() => {});
  }
}

export type { DriveSpec, NicSpec };
