/**
 * The cloud's processes as the demo runs them: one API process and one compute agent per host, each its own
 * Node process sharing the Store (PostgreSQL) and the data directory, as they would on separate machines.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { NubesError } from '@nubes/core';

const here = dirname(fileURLToPath(import.meta.url));

/**
 * The tsx loader, so children run the TypeScript sources as `npm start` does. Loaded with `--import` into one
 * node process (the tsx CLI would run the program in a child of its own, which a SIGKILL would not reach).
 */
function tsxLoader(): string {
  return pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
}

/** A child process of the demo, with its output kept and optionally echoed. */
export class CloudProcess {
  private output = '';
  private readonly exited: Promise<number | null>;

  private constructor(
    /** Short name for logs (`api`, `agent h1`). */
    readonly name: string,
    readonly child: ChildProcess,
    echo: ((line: string) => void) | undefined,
  ) {
    const take = (chunk: Buffer) => {
      const text = chunk.toString();
      this.output += text;
      if (echo) for (const line of text.split('\n')) if (line.trim()) echo(`[${name}] ${line}`);
    };
    child.stdout?.on('data', take);
    child.stderr?.on('data', take);
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Starts `src/<entry>` under tsx with `env` added to this process's environment. */
  static start(
    name: string,
    entry: string,
    env: Record<string, string>,
    echo?: (line: string) => void,
  ): CloudProcess {
    const child = spawn(process.execPath, ['--import', tsxLoader(), join(here, '..', entry)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new CloudProcess(name, child, echo);
  }

  /** Everything it printed so far. */
  log(): string {
    return this.output;
  }

  /** Resolves with the first match of `pattern` in its output; fails if it exits or `timeoutMs` passes. */
  async waitFor(pattern: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.output.match(pattern);
      if (m) return m;
      if (this.child.exitCode !== null)
        throw new NubesError(
          'Unavailable',
          `${this.name} exited (${this.child.exitCode}): ${this.output.slice(-2000)}`,
        );
      if (Date.now() > deadline)
        throw new NubesError(
          'Timeout',
          `${this.name} did not print ${pattern} in ${timeoutMs} ms: ${this.output.slice(-2000)}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL now (a crash). */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}
