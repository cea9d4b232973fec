import { runCommand } from '@nubes/core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN, describeCloud, startTestCloud, type TestCloud } from './helpers/cloud.js';

/** What `openstack token issue -f json` prints. */
interface TokenRow {
  id: string;
  project_id: string;
  user_id: string;
  expires: string;
}

describeCloud('reference cloud identity API, driven by the real openstack CLI', () => {
  let t: TestCloud;
  let authUrl: string;
  const openstack = (...args: Parameters<TestCloud['openstack']>) => t.openstack(...args);
  const ok = (r: { exitCode: number; stderr: string; stdout: string }): unknown => {
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };

  beforeAll(async () => {
    t = await startTestCloud();
    authUrl = t.authUrl;
  });

  afterAll(async () => {
    await t?.close();
  });

  it('serves Keystone v3 to openstackclient: tokens, projects, users, roles, assignments and policy', async () => {
    const token = ok(await openstack(ADMIN, ['token', 'issue'])) as TokenRow;
    expect(token.project_id).toBe(t.cloud.adminProjectId);
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
    expect(body.token.catalog.map((s) => s.type).sort()).toEqual(['compute', 'identity', 'image', 'network']);

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
