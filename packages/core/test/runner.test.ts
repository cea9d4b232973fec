import { describe, expect, it } from 'vitest';
import { type CommandEvent, createCommandRunner, isNubesError, runCommand } from '../src/index.js';

async function failure(promise: Promise<unknown>) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isNubesError(error)) throw new Error(`expected a NubesError, got ${String(error)}`);
  return error;
}

describe('command runner', () => {
  it('runs argv without a shell, with stdin, and captures output', async () => {
    const result = await runCommand('cat', [], { input: 'hello $HOME; `id`' });
    expect(result.stdout).toBe('hello $HOME; `id`');
    expect(result.exitCode).toBe(0);
    const echoed = await runCommand('printf', ['%s|', 'a b', '$(whoami)']);
    expect(echoed.stdout).toBe('a b|$(whoami)|');
  });

  it('parses JSON output', async () => {
    expect(await createCommandRunner().json('printf', ['{"a":[1,2]}'])).toEqual({ a: [1, 2] });
    expect((await failure(createCommandRunner().json('printf', ['not json']))).code).toBe('CommandFailed');
  });

  it('throws CommandFailed with the command, exit code and stderr', async () => {
    const error = await failure(runCommand('sh', ['-c', 'echo broken >&2; exit 3']));
    expect(error.code).toBe('CommandFailed');
    expect(error.details).toMatchObject({
      command: 'sh',
      args: ['-c', 'echo broken >&2; exit 3'],
      exitCode: 3,
    });
    expect(error.details.stderr).toContain('broken');
    expect(error.message).toContain('exited with 3: broken');
  });

  it('accepts listed exit codes', async () => {
    const result = await runCommand('sh', ['-c', 'exit 2'], { okExitCodes: [0, 2] });
    expect(result.exitCode).toBe(2);
  });

  it('reports a missing program as CommandFailed with notFound', async () => {
    const error = await failure(runCommand('nubes-no-such-tool', ['x']));
    expect(error.code).toBe('CommandFailed');
    expect(error.details.notFound).toBe(true);
  });

  it('kills a command that outlives its timeout', async () => {
    const started = Date.now();
    const error = await failure(runCommand('sleep', ['30'], { timeoutMs: 200 }));
    expect(error.code).toBe('Timeout');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('applies a prefix and reports every command', async () => {
    const events: CommandEvent[] = [];
    const runner = createCommandRunner({ prefix: ['env', 'NUBES_X=1'], onCommand: (e) => events.push(e) });
    const result = await runner.run('sh', ['-c', 'echo $NUBES_X']);
    expect(result.stdout.trim()).toBe('1');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ command: 'env', exitCode: 0 });
  });

  it('refuses an empty command with InvalidInput', async () => {
    const error = await failure(runCommand('', []));
    expect(error.code).toBe('InvalidInput');
    expect(error.details.field).toBe('command.command');
  });
});
