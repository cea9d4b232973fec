import { type CommandOptions, type CommandRunner, NubesError } from '@nubes/core';

/** One `ip` or `tc` command as argv after the program name, e.g. `['link', 'set', 'dev', 'a', 'up']`. */
export type Argv = readonly string[];

/** Where a command runs: the root namespace when `namespace` is undefined. */
export interface InNamespace {
  namespace?: string | undefined;
}

function namespaceArgs(namespace: string | undefined): string[] {
  return namespace === undefined ? [] : ['-n', namespace];
}

/** Renders argv lines for `ip -batch` / `tc -batch`, refusing tokens that batch mode would split. */
export function renderBatch(lines: readonly Argv[]): string {
  return lines
    .map((line) => {
      for (const token of line) {
        // Every token comes from a validated schema; this guards the invariant, not user input.
        if (token === '' || /[\s"'\\#]/.test(token)) {
          throw new NubesError('Internal', `batch token ${JSON.stringify(token)} cannot be written unquoted`);
        }
      }
      return line.join(' ');
    })
    .join('\n')
    .concat('\n');
}

/**
 * The thin edge over `ip`, `tc` and `bridge`: namespace selection, JSON output and batch input.
 * Everything goes through the caller's {@link CommandRunner}, as argv, never a shell.
 */
export class Iproute {
  constructor(readonly runner: CommandRunner) {}

  /** Runs `ip [-n ns] ...argv`. */
  ip(argv: Argv, where: InNamespace = {}, options?: CommandOptions) {
    return this.runner.run('ip', [...namespaceArgs(where.namespace), ...argv], options);
  }

  /** Runs `ip -json [-n ns] ...argv` and parses the output (empty output is `[]`). */
  async ipJson<T>(argv: Argv, where: InNamespace = {}): Promise<T[]> {
    const result = await this.ip(['-json', ...argv], where);
    return parseJsonList<T>(result.stdout, 'ip', argv);
  }

  /** Runs many `ip` commands in one process (`ip -batch -`): one fork instead of one per line. */
  async ipBatch(lines: readonly Argv[], where: InNamespace = {}): Promise<void> {
    if (lines.length === 0) return;
    if (lines.length === 1) {
      await this.ip(lines[0] as Argv, where);
      return;
    }
    await this.runner.run('ip', [...namespaceArgs(where.namespace), '-batch', '-'], {
      input: renderBatch(lines),
    });
  }

  /** Runs `tc [-n ns] ...argv`. */
  tc(argv: Argv, where: InNamespace = {}, options?: CommandOptions) {
    return this.runner.run('tc', [...namespaceArgs(where.namespace), ...argv], options);
  }

  /** Runs `tc -json [-s] [-n ns] ...argv`. */
  async tcJson<T>(argv: Argv, where: InNamespace = {}, stats = false): Promise<T[]> {
    const result = await this.tc(['-json', ...(stats ? ['-s'] : []), ...argv], where);
    return parseJsonList<T>(result.stdout, 'tc', argv);
  }

  /** Runs many `tc` commands in one process (`tc -batch -`). */
  async tcBatch(lines: readonly Argv[], where: InNamespace = {}): Promise<void> {
    if (lines.length === 0) return;
    await this.runner.run('tc', [...namespaceArgs(where.namespace), '-batch', '-'], {
      input: renderBatch(lines),
    });
  }

  /** Runs `bridge [-n ns] ...argv` (FDB entries). */
  bridge(argv: Argv, where: InNamespace = {}) {
    return this.runner.run('bridge', [...namespaceArgs(where.namespace), ...argv]);
  }
}

function parseJsonList<T>(stdout: string, program: string, argv: Argv): T[] {
  const text = stdout.trim();
  if (text === '') return [];
  try {
    const parsed = JSON.parse(text) as unknown;
    return (Array.isArray(parsed) ? parsed : [parsed]) as T[];
  } catch (cause) {
    throw new NubesError('CommandFailed', `${program} ${argv.join(' ')}: output is not JSON`, {
      cause,
      details: { command: program, args: [...argv], stdout: text.slice(0, 2048) },
    });
  }
}

/** True when a failed command says the object already exists (EEXIST). */
export function isExistsError(error: unknown): boolean {
  return (
    error instanceof NubesError &&
    /File exists|already exists/i.test(String(error.details.stderr ?? error.message))
  );
}

/** True when a failed command says the object is missing. */
export function isMissingError(error: unknown): boolean {
  return (
    error instanceof NubesError &&
    /Cannot find device|does not exist|No such file|No such process|Cannot open network namespace|not found/i.test(
      String(error.details.stderr ?? error.message),
    )
  );
}
