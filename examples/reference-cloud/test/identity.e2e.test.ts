import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CommandResult, runCommand, SqliteStore } from '@nubes/core';
import { describeWith, strictCapabilities, which } from '@nubes/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdentityApi } from '../src/api/server.js';

// `openstack` is not one of @nubes/testing's capabilities, so check it here the way describeWith does:
// skip with the reason when it is missing, fail under CI=true.
const missing = which('openstack')
  ? undefined
  : 'the openstack CLI is not installed (apt-get install python3-openstackclient)';
const suite = (name: string, body: () => void): void => {
  if (!missing) {
    describeWith([], name, body);
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
};

/** What `openstack token issue -f json` prints. */
interface TokenRow {
  id: string;
  project_id: string;
  user_id: string;
  expires: string;
}

const ADMIN = { user: 'admin', password: 'admin-secret-1', project: 'admin' };

suite('reference cloud identity API, driven by the real openstack CLI', () => {
  let dir: string;
  let store: SqliteStore;
  let api: IdentityApi;
  let authUrl: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nubes-refcloud-'));
    store = new SqliteStore({ path: join(dir, 'cloud.db'), durability: 'normal' });
    api = await IdentityApi.open({ store, admin: ADMIN });
    authUrl = `http://127.0.0.1:${await api.listen(0)}/v3`;
  });

  afterAll(async () => {
    await api?.close();
    await store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `openstack <args> -f json` as `who`; a failure resolves too, so tests can read the refusal. */
  const openstack = (
    who: { user: string; password: string; project: string },
    args: string[],
    json = true,
  ): Promise<CommandResult> =>
    runCommand('openstack', [...args, ...(json ? ['-f', 'json'] : [])], {
      env: {
        OS_AUTH_URL: authUrl,
        OS_USERNAME: who.user,
        OS_PASSWORD: who.password,
        OS_PROJECT_NAME: who.project,
        OS_USER_DOMAIN_NAME: 'Default',
        OS_PROJECT_DOMAIN_NAME: 'Default',
        OS_IDENTITY_API_VERSION: '3',
        OS_AUTH_TYPE: 'password',
      },
      okExitCodes: [0, 1],
      timeoutMs: 30_000,
    });
  const ok = (r: CommandResult): unknown => {
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };

  it('serves Keystone v3 to openstackclient: tokens, projects, users, roles, assignments and policy', async () => {
    const token = ok(await openstack(ADMIN, ['token', 'issue'])) as TokenRow;
    expect(token.project_id).toBe(api.adminProjectId);
    expect(token.id.split('.')).toHaveLength(3);

    // Keystone puts the catalog in the token response, not in the token.
    const login = await fetch(`${authUrl}/auth/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        auth: {
          identity: {
            methods: ['password'],
            password: { user: { name: ADMIN.user, domain: { name: 'Default' }, password: ADMIN.password } },
          },
          scope: { project: { name: ADMIN.project, domain: { name: 'Default' } } },
        },
      }),
    });
    expect(login.status).toBe(201);
    const body = (await login.json()) as { token: { catalog: { type: string }[] } };
    expect(body.token.catalog.map((s) => s.type)).toContain('identity');

    const web = ok(
      await openstack(ADMIN, ['project', 'create', '--description', 'the web tier', 'web']),
    ) as Record<string, unknown>;
    expect(web).toMatchObject({
      name: 'web',
      domain_id: 'default',
      enabled: true,
      description: 'the web tier',
    });

    const list = ok(await openstack(ADMIN, ['project', 'list'])) as { Name: string }[];
    expect(list.map((p) => p.Name).sort()).toEqual(['admin', 'web']);

    // By name: the client GETs /v3/projects/web first and needs the 404 to fall back to ?name=web.
    const shown = ok(await openstack(ADMIN, ['project', 'show', 'web'])) as Record<string, unknown>;
    expect(shown.id).toBe(web.id);

    const alice = { user: 'alice', password: 'alice-secret-1', project: 'web' };
    const user = ok(
      await openstack(ADMIN, ['user', 'create', '--password', alice.password, '--project', 'web', 'alice']),
    ) as Record<string, unknown>;
    expect(user).toMatchObject({ name: 'alice', default_project_id: web.id, enabled: true });

    const added = await openstack(
      ADMIN,
      ['role', 'add', '--user', 'alice', '--project', 'web', 'member'],
      false,
    );
    expect(added.exitCode, added.stderr).toBe(0);

    const assignments = ok(
      await openstack(ADMIN, ['role', 'assignment', 'list', '--user', 'alice', '--names']),
    ) as Record<string, string>[];
    expect(assignments).toEqual([
      expect.objectContaining({ Role: 'member', User: 'alice@Default', Project: 'web@Default' }),
    ]);

    // A member is refused what only cloud admins may do.
    const refused = await openstack(alice, ['project', 'create', 'mine']);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('HTTP 403');

    // Alice revokes her own token; the API refuses it afterwards.
    const aliceToken = ok(await openstack(alice, ['token', 'issue'])) as TokenRow;
    expect(aliceToken.project_id).toBe(web.id);
    const projectUrl = `${authUrl}/projects/${web.id}`;
    expect((await fetch(projectUrl, { headers: { 'x-auth-token': aliceToken.id } })).status).toBe(200);
    const revoked = await openstack(alice, ['token', 'revoke', aliceToken.id], false);
    expect(revoked.exitCode, revoked.stderr).toBe(0);
    // The token as is, with no login in between (keystoneauth's admin_token plugin): refused as revoked.
    const after = await runCommand('openstack', ['project', 'show', web.id as string, '-f', 'json'], {
      env: { OS_AUTH_TYPE: 'admin_token', OS_ENDPOINT: authUrl, OS_TOKEN: aliceToken.id },
      okExitCodes: [0, 1],
      timeoutMs: 30_000,
    });
    expect(after.exitCode).toBe(1);
    expect(after.stderr).toContain('HTTP 401');
    expect((await fetch(projectUrl, { headers: { 'x-auth-token': aliceToken.id } })).status).toBe(401);
  });
});
