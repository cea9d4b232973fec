/**
 * The real `openstack` command-line client pointed at a cloud, as the demo and the end-to-end tests run it:
 * one process per command, logging in anew each time, exactly as a user's shell would.
 */
import { type CommandResult, NubesError, runCommand } from '@nubes/core';

/** A user the CLI logs in as (password auth, project scope, Default domain). */
export interface Credentials {
  user: string;
  password: string;
  project: string;
}

/** Runs `openstack` against the cloud whose Keystone is at `authUrl` (`http://host:port/v3`). */
export class OpenstackCli {
  constructor(
    readonly authUrl: string,
    private readonly options: { timeoutMs?: number } = {},
  ) {}

  /** The environment variables that point the CLI at this cloud as `who` (what `openrc` would export). */
  env(who: Credentials): Record<string, string> {
    return {
      OS_AUTH_URL: this.authUrl,
      OS_USERNAME: who.user,
      OS_PASSWORD: who.password,
      OS_PROJECT_NAME: who.project,
      OS_USER_DOMAIN_NAME: 'Default',
      OS_PROJECT_DOMAIN_NAME: 'Default',
      OS_IDENTITY_API_VERSION: '3',
      OS_AUTH_TYPE: 'password',
      OS_REGION_NAME: 'RegionOne',
    };
  }

  /** Runs `openstack <args> [-f json]` as `who`; a refusal (exit 1 or 2) resolves too, so callers can read it. */
  run(who: Credentials, args: string[], json = true): Promise<CommandResult> {
    return runCommand('openstack', [...args, ...(json ? ['-f', 'json'] : [])], {
      env: this.env(who),
      okExitCodes: [0, 1, 2],
      timeoutMs: this.options.timeoutMs ?? 60_000,
    });
  }

  /** Runs a command that must succeed and returns its parsed JSON output (`{}` when it prints nothing). */
  async json<T = Record<string, unknown>>(who: Credentials, args: string[]): Promise<T> {
    const r = await this.run(who, args);
    if (r.exitCode !== 0)
      throw new NubesError('CommandFailed', `openstack ${args.join(' ')} failed: ${r.stderr.trim()}`, {
        details: { args, exitCode: r.exitCode, stderr: r.stderr },
      });
    return (r.stdout.trim() ? JSON.parse(r.stdout) : {}) as T;
  }

  /** Runs a command that must succeed and prints no table (`role add`, `server delete`...). */
  async quiet(who: Credentials, args: string[]): Promise<void> {
    const r = await this.run(who, args, false);
    if (r.exitCode !== 0)
      throw new NubesError('CommandFailed', `openstack ${args.join(' ')} failed: ${r.stderr.trim()}`, {
        details: { args, exitCode: r.exitCode, stderr: r.stderr },
      });
  }
}
