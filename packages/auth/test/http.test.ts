import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MemoryStore } from '@nubes/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AuthService,
  authContextOf,
  authenticate,
  authMiddleware,
  RemoteTokenVerifier,
  tokenApiHandler,
} from '../src/index.js';
import { openAuth } from './helpers.js';

describe('Keystone v3 token API, middleware and remote verifier over node:http', () => {
  let auth: AuthService;
  let server: Server;
  let base: string;
  let projectId: string;

  beforeAll(async () => {
    auth = await openAuth(new MemoryStore());
    const alice = await auth.identity.createUser({ name: 'alice', password: 'alice-pw' });
    const project = await auth.identity.createProject({ name: 'web' });
    projectId = project.id;
    await auth.identity.assignRole({
      role: 'member',
      actor: { user: alice.id },
      scope: { project: project.id },
    });
    const api = tokenApiHandler(auth);
    const guard = authMiddleware(auth);
    server = createServer(async (req, res) => {
      if (await api(req, res)) return;
      guard(req, res, () => res.writeHead(200).end(JSON.stringify({ user: authContextOf(req)?.userName })));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    auth.close();
    await new Promise((resolve) => server.close(resolve));
  });

  const passwordBody = (scope?: unknown) => ({
    auth: {
      identity: {
        methods: ['password'],
        password: { user: { name: 'alice', domain: { name: 'Default' }, password: 'alice-pw' } },
      },
      ...(scope ? { scope } : {}),
    },
  });
  const post = (body: unknown) =>
    fetch(`${base}/v3/auth/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('issues, validates, rescopes and revokes tokens the Keystone way', async () => {
    const created = await post(passwordBody({ project: { name: 'web', domain: { id: 'default' } } }));
    expect(created.status).toBe(201);
    const token = created.headers.get('x-subject-token') as string;
    const body = (await created.json()) as {
      token: { project: { id: string }; roles: { name: string }[]; methods: string[] };
    };
    expect(body.token.project.id).toBe(projectId);
    expect(body.token.roles.map((r) => r.name)).toEqual(['member', 'reader']);

    const unscoped = (await post(passwordBody())).headers.get('x-subject-token') as string;
    const rescoped = await post({
      auth: {
        identity: { methods: ['token'], token: { id: unscoped } },
        scope: { project: { id: projectId } },
      },
    });
    expect(rescoped.status).toBe(201);

    const headers = { 'x-auth-token': token, 'x-subject-token': token };
    expect((await fetch(`${base}/v3/auth/tokens`, { headers })).status).toBe(200);
    expect((await fetch(`${base}/v3/auth/tokens`, { method: 'HEAD', headers })).status).toBe(200);
    expect((await fetch(`${base}/v3/whatever`, { headers: { 'x-auth-token': token } })).status).toBe(200);
    expect((await fetch(`${base}/v3/auth/tokens`, { method: 'DELETE', headers })).status).toBe(204);
    const after = await fetch(`${base}/v3/whatever`, { headers: { authorization: `Bearer ${token}` } });
    expect(after.status).toBe(401);
    expect(((await after.json()) as { error: { details: { reason: string } } }).error.details.reason).toBe(
      'revoked',
    );
  });

  it('answers 401 for a wrong password, 400 for a malformed body, and no secret in either', async () => {
    const bad = await post({
      auth: {
        identity: { methods: ['password'], password: { user: { id: 'x', password: 'wrong-secret' } } },
      },
    });
    expect(bad.status).toBe(401);
    expect(await bad.text()).not.toContain('wrong-secret');
    const malformed = await fetch(`${base}/v3/auth/tokens`, { method: 'POST', body: '{not json' });
    expect(malformed.status).toBe(400);
    expect((await fetch(`${base}/v3/whatever`)).status).toBe(401);
    await expect(authenticate({}, auth)).rejects.toMatchObject({ code: 'Unauthorized' });
  });

  it('verifies remotely with the JWKS, refreshing on an unknown kid and following the revocation feed', async () => {
    const remote = new RemoteTokenVerifier({
      jwksUrl: `${base}/v3/auth/jwks`,
      revocationsUrl: `${base}/v3/OS-REVOKE/events`,
      issuer: 'https://auth.test',
      audience: 'nubes',
      minRefreshIntervalMs: 0,
      revocationPollMs: 0,
    });
    const token = (await post(passwordBody({ project: { id: projectId } }))).headers.get(
      'x-subject-token',
    ) as string;
    expect((await remote.verify(token)).project?.id).toBe(projectId);
    await auth.rotateKeys();
    await auth.rotateKeys();
    const fresh = (await post(passwordBody({ project: { id: projectId } }))).headers.get(
      'x-subject-token',
    ) as string;
    expect((await remote.verify(fresh)).userName).toBe('alice');
    await auth.revokeToken(fresh);
    await expect(remote.verify(fresh)).rejects.toMatchObject({ details: { reason: 'revoked' } });
    const offline = new RemoteTokenVerifier({
      jwksUrl: 'http://127.0.0.1:1/jwks',
      issuer: 'i',
      audience: 'a',
      timeoutMs: 500,
    });
    await expect(offline.verify(token)).rejects.toMatchObject({ code: 'Unavailable' });
  });
});
