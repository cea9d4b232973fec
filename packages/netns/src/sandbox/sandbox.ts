import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import {
  type CommandResult,
  type CommandRunner,
  commandRunner,
  invalidInput,
  NubesError,
  notFound,
  parseInput,
} from '@nubes/core';
import { z } from 'zod';
import { Cgroups } from '../cgroups/cgroups.js';
import { namespaceNameSchema, ownerSchema } from '../names.js';
import type { ExecOptions } from '../network.js';
import { type EnterTarget, planEnter, planSandbox, READY_MARKER } from './plan.js';
import { openTerminal, type Terminal } from './pty.js';
import {
  execOptionsSchema,
  type ParsedSandboxSpec,
  type SandboxSpec,
  sandboxArgvSchema,
  sandboxSpecSchema,
  terminalSizeSchema,
} from './spec.js';

/** Options of {@link Sandboxes}. */
export interface SandboxesOptions {
  /** Owner tag: sandbox names must start with `<owner>-`; {@link Sandboxes.gc} removes those. Default `nubes`. */
  owner?: string;
  /**
   * The cgroups every sandbox gets a group in (named like the sandbox). Default: this owner's groups
   * under the parent `nubes-sandbox`, apart from other groups so `gc` touches only sandboxes.
   */
  cgroups?: Cgroups;
  /** Runs captured execs (`nsenter`). Wrap it for logging. */
  runner?: CommandRunner;
}

/** How a sandbox's process ended. */
export interface SandboxExit {
  /** Exit code, or `null` when a signal ended it. */
  exitCode: number | null;
  /** The signal that ended it, if one did. */
  signal: NodeJS.Signals | null;
}

/** Options of {@link Sandbox.terminal} and {@link Sandboxes.terminal}. */
export interface TerminalOptions {
  /** Columns (default 80). */
  cols?: number;
  /** Rows (default 24). */
  rows?: number;
  /** TERM (default `xterm-256color`). */
  term?: string;
  /** Environment inside, over the sandbox's own (the caller's environment is never passed in). */
  env?: Record<string, string>;
  /** Working directory inside (default: the target's). */
  cwd?: string;
}

/** Where {@link Sandboxes.exec} and {@link Sandboxes.terminal} go. */
export type ExecTarget =
  | Sandbox
  /** Every namespace and the root of a running process, like `kubectl exec` into a container's pid. */
  | { pid: number }
  /** A named network namespace (`/run/netns/<namespace>`), like `ip netns exec`. */
  | { namespace: string };

const targetSchema = z.union([
  z.object({ pid: z.number().int().positive() }).strict(),
  z.object({ namespace: namespaceNameSchema }).strict(),
]);
const termSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, 'must be a terminfo name');
const stopSchema = z.object({ graceMs: z.number().int().min(0).max(600_000).default(2000) }).strict();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Sandboxes: processes in new PID, mount, UTS, IPC and network namespaces (through `unshare`), with
 * a hostname, an optional chroot or overlay root and a cgroup; and execs into them, captured or on
 * an interactive terminal. Needs root.
 */
export class Sandboxes {
  /** The owner tag. */
  readonly owner: string;
  /** The cgroups sandboxes are placed in. */
  readonly cgroups: Cgroups;
  private readonly runner: CommandRunner;

  /** Validates the options; touches nothing on the host. */
  constructor(options: SandboxesOptions = {}) {
    this.owner = parseInput(ownerSchema, options.owner ?? 'nubes', 'owner');
    this.cgroups = options.cgroups ?? new Cgroups({ owner: this.owner, parent: 'nubes-sandbox' });
    this.runner = options.runner ?? commandRunner;
  }

  /**
   * Starts a sandbox and resolves once it is set up (hostname set, root mounted, `/proc` of the new
   * PID namespace mounted) and its program is about to run as PID 1. The whole spec is checked
   * first, so bad input changes nothing; a failed start removes the group it created.
   */
  async start(spec: SandboxSpec): Promise<Sandbox> {
    const parsed = parseInput(sandboxSpecSchema, spec, 'spec');
    if (!parsed.name.startsWith(`${this.owner}-`))
      throw invalidInput('spec.name', `must start with the owner prefix "${this.owner}-"`);
    this.checkHostPaths(parsed);
    if (await this.cgroups.exists(parsed.name)) {
      if ((await this.cgroups.processes(parsed.name)).length > 0)
        throw new NubesError('Conflict', `sandbox ${parsed.name} is already running`, {
          details: { name: parsed.name },
        });
    }
    const plan = planSandbox(parsed);
    await this.cgroups.create(parsed.name, spec.resources ?? {});
    let child: ChildProcess | undefined;
    try {
      const [program, ...args] = (await this.cgroups.launchArgv(parsed.name, plan.argv)) as [
        string,
        ...string[],
      ];
      // fd 3 is the control pipe of the setup script: its errors, then the ready marker.
      child = spawn(program, args, { env: plan.env, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
      const pid = await waitUntilReady(child, parsed.startTimeoutMs);
      return new Sandbox(this, parsed, child, pid, plan.root);
    } catch (error) {
      child?.kill('SIGKILL');
      await this.cgroups.delete(parsed.name).catch(() => undefined);
      throw error;
    }
  }

  private checkHostPaths(spec: ParsedSandboxSpec): void {
    const dir = (path: string, field: string) => {
      if (!isDirectory(path)) throw invalidInput(field, `${path} is not a directory`);
    };
    if (spec.root && 'chroot' in spec.root) dir(spec.root.chroot, 'spec.root.chroot');
    if (spec.root && 'overlay' in spec.root) {
      const o = spec.root.overlay;
      o.lower.forEach((p, i) => {
        dir(p, `spec.root.overlay.lower.${i}`);
      });
      dir(o.upper, 'spec.root.overlay.upper');
      dir(o.work, 'spec.root.overlay.work');
      if (o.target) dir(o.target, 'spec.root.overlay.target');
    }
    if (spec.network && !existsSync(`/run/netns/${spec.network.namespace}`))
      throw notFound('network namespace', spec.network.namespace);
  }

  /**
   * Runs a command inside a sandbox, a process's namespaces or a named network namespace, and
   * captures its output (`CommandFailed` on a non-zero exit, `Timeout`). The program sees only the
   * sandbox's environment plus `options.env`; in a sandbox it also joins the sandbox's cgroup.
   */
  async exec(target: ExecTarget, argv: readonly string[], options: ExecOptions = {}): Promise<CommandResult> {
    const command = await this.enterArgv(target, argv, { env: options.env, cwd: options.cwd });
    const [program, ...args] = command as [string, ...string[]];
    return this.runner.run(program, args, {
      ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
      ...(options.input !== undefined && { input: options.input }),
      ...(options.okExitCodes !== undefined && { okExitCodes: options.okExitCodes }),
    });
  }

  /**
   * Opens an interactive terminal inside a sandbox, a process's namespaces or a named network
   * namespace, the way `kubectl exec -it` does: `nsenter` on a node-pty pseudo-terminal. Needs the
   * optional peer dependency node-pty (`Unavailable` without it).
   */
  async terminal(
    target: ExecTarget,
    argv: readonly string[] = ['/bin/sh'],
    options: TerminalOptions = {},
  ): Promise<Terminal> {
    const size = parseInput(
      terminalSizeSchema,
      { cols: options.cols ?? 80, rows: options.rows ?? 24 },
      'options',
    );
    const term = parseInput(termSchema, options.term ?? 'xterm-256color', 'options.term');
    const command = await this.enterArgv(target, argv, {
      env: { TERM: term, ...options.env },
      cwd: options.cwd,
    });
    return openTerminal(
      command,
      { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      { ...size, term },
    );
  }

  private async enterArgv(
    target: ExecTarget,
    argv: readonly string[],
    options: { env?: Record<string, string> | undefined; cwd?: string | undefined },
  ): Promise<string[]> {
    const program = parseInput(sandboxArgvSchema, [...argv], 'argv');
    const opts = parseInput(execOptionsSchema, options, 'options');
    if (target instanceof Sandbox) {
      if (target.exitStatus) throw new NubesError('Conflict', `sandbox ${target.name} has exited`);
      const command = planEnter({ pid: target.pid }, program, {
        env: { ...target.env, ...opts.env },
        cwd: opts.cwd,
      });
      // Like a container exec, the new process is counted against the sandbox's limits.
      return this.cgroups.launchArgv(target.name, command);
    }
    const where = parseInput(targetSchema, target, 'target') as EnterTarget;
    if ('namespace' in where && !existsSync(`/run/netns/${where.namespace}`))
      throw notFound('network namespace', where.namespace);
    if ('pid' in where && !existsSync(`/proc/${where.pid}`)) throw notFound('process', String(where.pid));
    return planEnter(where, program, { env: opts.env ?? {}, cwd: opts.cwd });
  }

  /** Names of this owner's sandboxes that have a group (running, or not yet cleaned up). */
  list(): Promise<string[]> {
    return this.cgroups.list();
  }

  /**
   * Kills every sandbox of this owner and removes its group; returns their names. Mounts and
   * namespaces need no cleanup: they belong to the sandbox's processes and go with them.
   */
  async gc(): Promise<string[]> {
    // Each sandbox's PID 1 dies first so its unshare reaps it; killing the whole group at once
    // could kill unshare first and leave PID 1 a zombie for the host's init.
    const names = await this.cgroups.list();
    const killed: number[] = [];
    for (const name of names) {
      for (const pid of await this.cgroups.processes(name).catch(() => [] as number[])) {
        if (!isNamespaceInit(pid)) continue;
        try {
          process.kill(pid, 'SIGKILL');
          killed.push(pid);
        } catch {
          // gone already
        }
      }
    }
    const deadline = Date.now() + 1000;
    while (killed.some((pid) => existsSync(`/proc/${pid}`)) && Date.now() < deadline) await sleep(10);
    for (const name of names) await this.cgroups.delete(name);
    await this.cgroups.gc();
    return names;
  }
}

/** True when `pid` is PID 1 of a PID namespace below ours (its NSpid line ends in 1). */
function isNamespaceInit(pid: number): boolean {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('NSpid:'));
    const ids = line?.split(/\s+/).slice(1).filter(Boolean) ?? [];
    return ids.length > 1 && ids.at(-1) === '1';
  } catch {
    return false;
  }
}

async function waitUntilReady(child: ChildProcess, timeoutMs: number): Promise<number> {
  const control = child.stdio[3] as Readable;
  return new Promise<number>((resolve, reject) => {
    let text = '';
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const fail = (error: NubesError) => {
      clearTimeout(timer);
      control.destroy();
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new NubesError('Timeout', `the sandbox was not ready after ${timeoutMs} ms`)),
      timeoutMs,
    );
    const failed = () =>
      fail(
        new NubesError(
          'CommandFailed',
          `the sandbox failed to start${text.trim() ? `: ${text.trim().split('\n').at(-1)}` : ''}`,
          {
            details: {
              stderr: text.slice(-8192),
              exitCode: exit?.code ?? null,
              signal: exit?.signal ?? null,
            },
          },
        ),
      );
    control.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const match = new RegExp(`^${READY_MARKER} (\\d+)$`, 'm').exec(text);
      if (!match) return;
      clearTimeout(timer);
      // unshare keeps its copy of the pipe open; nothing more is written to it.
      control.destroy();
      resolve(Number(match[1]));
    });
    child.once('error', (cause) =>
      fail(new NubesError('CommandFailed', `the sandbox could not be started: ${cause.message}`, { cause })),
    );
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      // Give the pipe a moment to deliver what the script wrote before it died.
      setTimeout(failed, 50);
    });
  });
}

/**
 * A running sandbox. Its program is PID 1 of its own PID namespace; {@link Sandbox.pid} is that
 * process's pid on the host. When the program ends, the sandbox's group is removed; {@link
 * Sandbox.exited} resolves after that.
 */
export class Sandbox {
  /** The sandbox's name (also its cgroup's name). */
  readonly name: string;
  /** Host pid of the sandbox's PID 1: the target of `nsenter`. */
  readonly pid: number;
  /** Its hostname. */
  readonly hostname: string;
  /** Its root directory as seen from the host (`/` when it shares the host's). */
  readonly root: string;
  /** Resolves when the program has ended and the group is removed. */
  readonly exited: Promise<SandboxExit>;
  /** @internal The environment execs inherit. */
  readonly env: Record<string, string>;
  private exit: SandboxExit | undefined;
  private ended = false;
  private killedByStop = false;
  private cleanupError: unknown;

  /** @internal Use {@link Sandboxes.start}. */
  constructor(
    private readonly sandboxes: Sandboxes,
    spec: ParsedSandboxSpec,
    private readonly child: ChildProcess,
    pid: number,
    root: string,
  ) {
    this.name = spec.name;
    this.pid = pid;
    this.hostname = spec.hostname ?? spec.name;
    this.root = root;
    this.env = spec.env;
    this.exited = new Promise((resolve) => {
      const done = async (code: number | null, signal: NodeJS.Signals | null) => {
        this.ended = true;
        // The group may still hold processes that escaped the PID namespace's teardown (an exec's
        // host-side nsenter): delete kills them.
        await sandboxes.cgroups.delete(this.name).catch((error: unknown) => {
          this.cleanupError = error;
        });
        // util-linux 2.38's unshare cannot re-raise a child's SIGKILL ("sigprocmask unblock
        // failed") and exits 1 instead; when stop() sent that SIGKILL, say so.
        this.exit =
          this.killedByStop && code === 1
            ? { exitCode: null, signal: 'SIGKILL' }
            : { exitCode: code, signal };
        resolve(this.exit);
      };
      if (child.exitCode !== null || child.signalCode !== null) void done(child.exitCode, child.signalCode);
      else child.once('exit', (code, signal) => void done(code, signal));
    });
  }

  /** The exit status once the sandbox has ended and been cleaned up, else `undefined`. */
  get exitStatus(): SandboxExit | undefined {
    return this.exit;
  }

  /** The program's standard input. */
  get stdin(): Writable {
    return this.child.stdin as Writable;
  }

  /** The program's standard output. */
  get stdout(): Readable {
    return this.child.stdout as Readable;
  }

  /** The program's standard error. */
  get stderr(): Readable {
    return this.child.stderr as Readable;
  }

  /** Runs a command inside and captures its output (see {@link Sandboxes.exec}). */
  exec(argv: readonly string[], options: ExecOptions = {}): Promise<CommandResult> {
    return this.sandboxes.exec(this, argv, options);
  }

  /** Opens an interactive terminal inside (see {@link Sandboxes.terminal}). */
  terminal(argv: readonly string[] = ['/bin/sh'], options: TerminalOptions = {}): Promise<Terminal> {
    return this.sandboxes.terminal(this, argv, options);
  }

  /**
   * Stops the sandbox: SIGTERM to its PID 1 (which, as a namespace's init, ignores it unless it
   * handles it), then after `graceMs` (default 2000) SIGKILL, and waits until everything is gone.
   * Idempotent.
   */
  async stop(options: { graceMs?: number } = {}): Promise<SandboxExit> {
    const { graceMs } = parseInput(stopSchema, options, 'options');
    if (!this.ended && graceMs > 0) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        // PID 1 is gone already; unshare follows on its own.
      }
      await Promise.race([this.exited, sleep(graceMs)]);
    }
    // SIGKILL goes to PID 1 so that unshare reaps it (killing unshare first would leave PID 1 a
    // zombie for the host's init to reap, which not every host's init does).
    if (!this.ended) {
      this.killedByStop = true;
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        this.child.kill('SIGKILL');
      }
    }
    const exit = await this.exited;
    if (this.cleanupError)
      throw new NubesError('CommandFailed', `cleaning up sandbox ${this.name} failed`, {
        cause: this.cleanupError,
      });
    return exit;
  }
}
