import { spawn } from 'node:child_process';
import { z } from 'zod';
import { NubesError } from '../errors.js';
import { parseInput } from '../validation.js';

/** Options for one host command. */
export interface CommandOptions {
  /** Kill the command after this many milliseconds (SIGTERM, then SIGKILL 2 s later). Default: the runner's. */
  timeoutMs?: number;
  /** Bytes or text written to the command's standard input, which is then closed. */
  input?: string | Uint8Array;
  /** Extra environment variables, merged over the runner's and the process's. */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** Exit codes that count as success. Default `[0]`. */
  okExitCodes?: number[];
  /** Abort the command early (it is killed like on timeout, and the call rejects with `Timeout`). */
  signal?: AbortSignal;
}

/** What a finished command left behind. */
export interface CommandResult {
  /** The program that ran (after any runner prefix). */
  command: string;
  /** Its arguments, exactly as passed. */
  args: string[];
  /** Exit code (one of `okExitCodes`). */
  exitCode: number;
  /** Captured standard output, UTF-8. */
  stdout: string;
  /** Captured standard error, UTF-8. */
  stderr: string;
  /** Wall time in milliseconds. */
  durationMs: number;
}

/** Something that runs host tools. Packages take this as an option so callers can wrap it (sudo, logging, a remote host). */
export interface CommandRunner {
  /** Runs `command` with `args` (no shell) and resolves with its output, or rejects with `CommandFailed` / `Timeout`. */
  run(command: string, args: readonly string[], options?: CommandOptions): Promise<CommandResult>;
  /** Like {@link CommandRunner.run} and parses standard output as JSON (`CommandFailed` if it is not JSON). */
  json<T = unknown>(command: string, args: readonly string[], options?: CommandOptions): Promise<T>;
}

/** A record of one finished or failed command, for logging and audit. */
export interface CommandEvent {
  /** The program. */
  command: string;
  /** Its arguments. */
  args: readonly string[];
  /** Exit code, or `null` if it did not exit normally. */
  exitCode: number | null;
  /** Wall time in milliseconds. */
  durationMs: number;
  /** The error it ended with, if any. */
  error?: NubesError;
}

/** Settings shared by every command a runner starts. */
export interface CommandRunnerOptions {
  /** Default timeout in milliseconds. Default 60 000. */
  timeoutMs?: number;
  /** Environment added to every command. */
  env?: Record<string, string>;
  /** argv placed before every command, e.g. `['sudo', '-n']` or `['ip', 'netns', 'exec', 'ns1']`. */
  prefix?: string[];
  /** Called after every command, successful or not. */
  onCommand?: (event: CommandEvent) => void;
  /** Most bytes kept of stdout and of stderr each. Default 64 MiB. */
  maxOutputBytes?: number;
}

const argvSchema = z.object({
  command: z.string().min(1, 'must not be empty'),
  args: z.array(z.string()),
});

const STDERR_IN_ERROR = 8192;

function tail(text: string, max: number): string {
  return text.length > max ? `…${text.slice(-max)}` : text;
}

/** Creates a {@link CommandRunner}. Commands are always argv arrays, never shell strings. */
export function createCommandRunner(defaults: CommandRunnerOptions = {}): CommandRunner {
  const runner: CommandRunner = {
    async run(command, args, options = {}) {
      const argv = parseInput(argvSchema, { command, args: [...args] }, 'command');
      const full = [...(defaults.prefix ?? []), argv.command, ...argv.args];
      const program = full[0] as string;
      const programArgs = full.slice(1);
      return new Promise<CommandResult>((resolve, reject) => {
        const started = performance.now();
        const okCodes = options.okExitCodes ?? [0];
        const timeoutMs = options.timeoutMs ?? defaults.timeoutMs ?? 60_000;
        const maxBytes = defaults.maxOutputBytes ?? 64 * 1024 * 1024;
        const child = spawn(program, programArgs, {
          cwd: options.cwd,
          env: { ...process.env, ...defaults.env, ...options.env },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let outBytes = 0;
        let errBytes = 0;
        let stopped: 'timeout' | 'aborted' | undefined;
        let settled = false;
        child.stdout.on('data', (chunk: Buffer) => {
          if (outBytes < maxBytes) stdout.push(chunk);
          outBytes += chunk.length;
        });
        child.stderr.on('data', (chunk: Buffer) => {
          if (errBytes < maxBytes) stderr.push(chunk);
          errBytes += chunk.length;
        });
        const stop = (why: 'timeout' | 'aborted') => {
          stopped = why;
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 2000).unref();
        };
        const timer = setTimeout(() => stop('timeout'), timeoutMs);
        const onAbort = () => stop('aborted');
        options.signal?.addEventListener('abort', onAbort, { once: true });
        const finish = (exitCode: number | null, signal: NodeJS.Signals | null, spawnError?: Error) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
          const durationMs = performance.now() - started;
          const out = Buffer.concat(stdout).toString('utf8');
          const err = Buffer.concat(stderr).toString('utf8');
          const details = {
            command: program,
            args: programArgs,
            exitCode,
            signal,
            stderr: tail(err, STDERR_IN_ERROR),
          };
          let error: NubesError | undefined;
          if (spawnError) {
            const code = (spawnError as NodeJS.ErrnoException).code;
            error = new NubesError(
              'CommandFailed',
              `${program}: could not start (${code ?? spawnError.message})`,
              {
                cause: spawnError,
                details: { ...details, notFound: code === 'ENOENT' },
              },
            );
          } else if (stopped) {
            error = new NubesError(
              'Timeout',
              `${program} ${stopped === 'timeout' ? `timed out after ${timeoutMs} ms` : 'was aborted'}`,
              { details: { ...details, timeoutMs } },
            );
          } else if (exitCode === null || !okCodes.includes(exitCode)) {
            const how = exitCode === null ? `killed by ${signal}` : `exited with ${exitCode}`;
            const lastLine = err.trim().split('\n').at(-1) ?? '';
            error = new NubesError('CommandFailed', `${program} ${how}${lastLine ? `: ${lastLine}` : ''}`, {
              details,
            });
          }
          defaults.onCommand?.({ command: program, args: programArgs, exitCode, durationMs, error });
          if (error) reject(error);
          else
            resolve({
              command: program,
              args: programArgs,
              exitCode: exitCode as number,
              stdout: out,
              stderr: err,
              durationMs,
            });
        };
        child.on('error', (e) => finish(null, null, e));
        child.on('close', (code, signal) => finish(code, signal));
        child.stdin.on('error', () => {
          // A command that exits without reading its input closes the pipe; its exit status tells the story.
        });
        if (options.input !== undefined) child.stdin.end(options.input);
        else child.stdin.end();
      });
    },
    async json<T>(command: string, args: readonly string[], options?: CommandOptions): Promise<T> {
      const result = await runner.run(command, args, options);
      try {
        return JSON.parse(result.stdout) as T;
      } catch (cause) {
        throw new NubesError('CommandFailed', `${command}: output is not JSON`, {
          cause,
          details: {
            command: result.command,
            args: result.args,
            exitCode: result.exitCode,
            stdout: tail(result.stdout, 2048),
          },
        });
      }
    },
  };
  return runner;
}

/** The default runner: no prefix, 60 s timeout. */
export const commandRunner: CommandRunner = createCommandRunner();

/** Runs one host command with the default runner. See {@link CommandRunner.run}. */
export function runCommand(
  command: string,
  args: readonly string[],
  options?: CommandOptions,
): Promise<CommandResult> {
  return commandRunner.run(command, args, options);
}
