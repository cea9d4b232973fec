/**
 * Test harness of the reference cloud's end-to-end suites: starts the API in-process on a free loopback port
 * over a SQLite Store in a temp dir, and runs the real `openstack` CLI against it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CommandResult, SqliteStore } from '@nubes/core';
import { describeWith, strictCapabilities, which } from '@nubes/testing';
import { describe, expect, it } from 'vitest';
import { ComputeAgent } from '../../src/agent/index.js';
import { type Credentials, OpenstackCli } from '../../src/cli.js';
import { ReferenceCloud } from '../../src/cloud.js';
import { SimulatedHosts } from '../../src/hosts/index.js';

/** A user the CLI logs in as. */
export type Who = Credentials;

/** The admin every test cloud bootstraps. */
export const ADMIN: Who = { user: 'admin', password: 'admin-secret-1', project: 'admin' };

const missing = which('openstack')
  ? undefined
  : 'the openstack CLI is not installed (apt-get install python3-openstackclient)';

/**
 * `describe` for suites that need the openstack CLI (and `caps`, as `describeWith` names them): skipped with the
 * reason when it is missing, failed under `CI=true`.
 */
export function describeCloud(
  name: string,
  body: () => void,
  caps: Parameters<typeof describeWith>[0] = [],
): void {
  if (!missing) {
    describeWith(caps, name, body);
    return;
  }
  if (strictCapabilities()) {
    describe(name, () => {
      it('has the openstack CLI', () => {
        throw new Error(`CI=true and this suite cannot run: ${missing}`);
      });
    });
    return;
  }
  console.warn(`[nubes] skipping "${name}": ${missing}`);
  describe.skip(`${name} (skipped: ${missing})`, body);
}

/** A running test cloud and the CLI pointed at it. */
export interface TestCloud {
  cloud: ReferenceCloud;
  store: SqliteStore;
  dir: string;
  /** `http://127.0.0.1:<port>` */
  base: string;
  /** `<base>/v3` */
  authUrl: string;
  /** The CLI pointed at this cloud. */
  cli: OpenstackCli;
  /** Runs `openstack <args> [-f json]` as `who`; a failure resolves too, so a test can read the refusal. */
  openstack(who: Who, args: string[], json?: boolean): Promise<CommandResult>;
  /** Like {@link openstack} with JSON output, expecting success; returns the parsed output. */
  ok<T = Record<string, unknown>>(who: Who, args: string[]): Promise<T>;
  /** A project-scoped token for `who` over raw HTTP. */
  token(who: Who): Promise<string>;
  /** The simulated hosts, when started with `hosts`. */
  hosts?: SimulatedHosts;
  /** One compute agent per simulated host, in this process. */
  agents: ComputeAgent[];
  /** What the agents logged (for failure messages). */
  agentLog: string[];
  close(): Promise<void>;
}

/** Starts a test cloud, with `hosts` simulated compute hosts and their agents. Call `close()` in `afterAll`. */
export async function startTestCloud(options: { hosts?: number } = {}): Promise<TestCloud> {
  const dir = mkdtempSync(join(tmpdir(), 'nubes-refcloud-'));
  const store = new SqliteStore({ path: join(dir, 'cloud.db'), durability: 'normal' });
  const cloud = await ReferenceCloud.open({
    store,
    dataDir: join(dir, 'data'),
    admin: ADMIN,
    onServerError: (error) => console.error('[reference-cloud] internal error', error),
  });
  const base = `http://127.0.0.1:${await cloud.listen(0)}`;
  const authUrl = `${base}/v3`;
  const cli = new OpenstackCli(authUrl);
  const agents: ComputeAgent[] = [];
  const agentLog: string[] = [];
  let hosts: SimulatedHosts | undefined;
  if (options.hosts) {
    hosts = await SimulatedHosts.create({ count: options.hosts, owner: `rct-${process.pid % 100_000}` });
    for (const host of hosts.hosts) {
      const agent = new ComputeAgent({
        parts: cloud.parts,
        host,
        dataDir: join(dir, 'data'),
        accelerator: 'tcg',
        capacity: { vcpus: 4, memoryMiB: 2048, diskGiB: 20 },
        log: (line) => agentLog.push(`[${host.name}] ${line}`),
        onError: (error) => agentLog.push(`[${host.name}] error: ${(error as Error).message}`),
      });
      await agent.start();
      agents.push(agent);
    }
  }
  const openstack = (who: Who, args: string[], json = true): Promise<CommandResult> =>
    cli.run(who, args, json);
  return {
    cloud,
    store,
    cli,
    ...(hosts ? { hosts } : {}),
    agents,
    agentLog,
    dir,
    base,
    authUrl,
    openstack,
    async ok<T>(who: Who, args: string[]): Promise<T> {
      const r = await openstack(who, args);
      expect(r.exitCode, `openstack ${args.join(' ')}: ${r.stderr}`).toBe(0);
      return (r.stdout.trim() ? JSON.parse(r.stdout) : {}) as T;
    },
    async token(who: Who): Promise<string> {
      const response = await fetch(`${authUrl}/auth/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          auth: {
            identity: {
              methods: ['password'],
              password: { user: { name: who.user, domain: { name: 'Default' }, password: who.password } },
            },
            scope: { project: { name: who.project, domain: { name: 'Default' } } },
          },
        }),
      });
      expect(response.status).toBe(201);
      return response.headers.get('x-subject-token') as string;
    },
    async close(): Promise<void> {
      for (const agent of agents) await agent.stop({ killGuests: true }).catch(() => {});
      await hosts?.destroy();
      await cloud.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Creates a project and a user holding `role` on it (as admin, through the CLI); returns the user. */
export async function createMember(
  t: TestCloud,
  project: string,
  user: string,
  role = 'member',
): Promise<Who> {
  const who = { user, password: `${user}-secret-1`, project };
  await t.ok(ADMIN, ['project', 'create', project]);
  await t.ok(ADMIN, ['user', 'create', '--password', who.password, '--project', project, user]);
  const added = await t.openstack(ADMIN, ['role', 'add', '--user', user, '--project', project, role], false);
  expect(added.exitCode, added.stderr).toBe(0);
  return who;
}
