import { NubesError, parseInput } from '@nubes/core';
import { terminalSizeSchema } from './spec.js';

/**
 * Interactive terminals through node-pty, loaded on first use. node-pty is a native addon and an
 * optional peer dependency: users who never open a terminal install and build nothing for it.
 */

/** The subset of node-pty's `IPty` this package uses; declared here so the public types need no node-pty. */
export interface NodePty {
  /** Host pid of the program. */
  readonly pid: number;
  /** Subscribes to output. */
  onData(listener: (data: string) => void): { dispose(): void };
  /** Subscribes to the exit. */
  onExit(listener: (event: { exitCode: number; signal?: number }) => void): { dispose(): void };
  /** Writes input. */
  write(data: string): void;
  /** Sets the window size. */
  resize(cols: number, rows: number): void;
  /** Sends a signal. */
  kill(signal?: string): void;
}

/** The subset of the node-pty module this package uses. */
export interface NodePtyModule {
  /** Starts a program on a new pseudo-terminal. */
  spawn(
    file: string,
    args: string[],
    options: { name: string; cols: number; rows: number; cwd: string; env: Record<string, string> },
  ): NodePty;
}

let loading: Promise<NodePtyModule> | undefined;

/** Loads node-pty once; `Unavailable` with the install command when it is missing or failed to build. */
export function loadNodePty(): Promise<NodePtyModule> {
  loading ??= import('node-pty').then(
    (m) => {
      // CJS module seen through ESM: the functions may sit on the namespace or on `default`.
      const mod = m as unknown as Partial<NodePtyModule> & { default?: NodePtyModule };
      return typeof mod.spawn === 'function' ? (mod as NodePtyModule) : (mod.default as NodePtyModule);
    },
    (cause: unknown) => {
      loading = undefined;
      throw new NubesError('Unavailable', 'interactive exec needs node-pty: npm install node-pty@^1.1.0', {
        cause,
      });
    },
  );
  return loading;
}

/** How a terminal's program ended. */
export interface TerminalExit {
  /** Exit code (for a signal, what the pty layer reports, usually 0). */
  exitCode: number;
  /** The signal number that ended it, if one did. */
  signal?: number;
}

/**
 * An interactive program on a pseudo-terminal, like `kubectl exec -it`: what it prints arrives
 * through {@link Terminal.onData}, keystrokes go in through {@link Terminal.write}, and
 * {@link Terminal.resize} sends the window size (the program gets SIGWINCH).
 */
export class Terminal {
  /** Resolves when the program ends, with its exit code. */
  readonly exited: Promise<TerminalExit>;
  private exitInfo: TerminalExit | undefined;

  /** @internal Use `Sandbox.terminal` or `Sandboxes.terminal`. */
  constructor(private readonly pty: NodePty) {
    this.exited = new Promise((resolve) => {
      pty.onExit((event) => {
        this.exitInfo = event.signal
          ? { exitCode: event.exitCode, signal: event.signal }
          : { exitCode: event.exitCode };
        resolve(this.exitInfo);
      });
    });
  }

  /** Host pid of the program's host-side process (`nsenter`). */
  get pid(): number {
    return this.pty.pid;
  }

  /** Subscribes to output (UTF-8 text, with the terminal's escape sequences); returns an unsubscribe handle. */
  onData(listener: (data: string) => void): { dispose(): void } {
    return this.pty.onData(listener);
  }

  /** Sends input, as keystrokes: end a line with `\r`, like a terminal does. */
  write(data: string): void {
    if (this.exitInfo) throw new NubesError('Conflict', 'the terminal has exited');
    this.pty.write(data);
  }

  /** Changes the window size. Bad sizes are `InvalidInput` (`cols`, `rows`). */
  resize(cols: number, rows: number): void {
    const size = parseInput(terminalSizeSchema, { cols, rows }, 'size');
    if (this.exitInfo) return;
    this.pty.resize(size.cols, size.rows);
  }

  /** Sends a signal to the host-side process (default SIGHUP, as when a terminal closes). */
  kill(signal = 'SIGHUP'): void {
    if (!this.exitInfo) this.pty.kill(signal);
  }
}

/** Opens a terminal running `argv` on the host with exactly `env`. */
export async function openTerminal(
  argv: readonly string[],
  env: Record<string, string>,
  size: { cols: number; rows: number; term: string },
): Promise<Terminal> {
  const pty = await loadNodePty();
  const [file, ...args] = argv as [string, ...string[]];
  return new Terminal(
    pty.spawn(file, args, {
      name: size.term,
      cols: size.cols,
      rows: size.rows,
      cwd: '/',
      env: { ...env, TERM: size.term },
    }),
  );
}
