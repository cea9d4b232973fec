import { MemoryStore, NubesError, type Store } from '@nubes/core';
import { describeWith } from '@nubes/testing';
import { describe, expect, it } from 'vitest';
import { type AuthService, signRequest } from '../src/index.js';
import { backends, manualClock, openAuth } from './helpers.js';

async function failure(
  promise: Promise<unknown> | (() => unknown),
): Promise<{ code: string; reason?: string }> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (e) {
    expect(e).toBeInstanceOf(NubesError);
    return { code: (e as NubesError).code, reason: (e as NubesError).details.reason as string | undefined };
  }
  throw new Error('expected a failure');
}

async function world(auth: AuthService) {
  const alice = await auth.identity.createUser({ name: 'alice', password: 'alice-pw' });
  const web = await auth.identity.createProject({ name: 'web' });
  const db = await auth.identity.createProject({ name: 'db', parentId: web.id });
  await auth.identity.assignRole({ role: 'member', actor: { user: alice.id }, scope: { project: web.id } });
  await auth.identity.assignRole({ role: 'reader', actor: { user: alice.id }, scope: { project: db.id } });
  const login = (scope?: { project: { id: string } }) =>
    auth.loginWithPassword({ user: { id: alice.id }, password: 'alice-pw', ...(scope ? { scope } : {}) });
  return { alice, web, db, login };
}

function flows(open: () => Store): void {
  it('revokes tokens automatically when a permission is taken away, and only the matching ones', async () => {
    const clock = manualClock();
    const store = open();
    const auth = await openAuth(store, { clock: clock.now });
    try {
      const { alice, web, db, login } = await world(auth);
      const onWeb = (await login({ project: { id: web.id } })).token;
      const onDb = (await login({ project: { id: db.id } })).token;
      auth.verify(onWeb); // hot in the cache
      clock.advance(5);
      await auth.identity.unassignRole({
        role: 'member',
        actor: { user: alice.id },
        scope: { project: web.id },
      });
      expect(await failure(() => auth.verify(onWeb))).toEqual({ code: 'Unauthorized', reason: 'revoked' });
      expect(auth.verify(onDb).project?.id).toBe(db.id);
      clock.advance(5);
      await auth.identity.updateProject(db.id, { enabled: false });
      expect((await failure(() => auth.verify(onDb))).reason).toBe('revoked');
      expect((await failure(login({ project: { id: db.id } }))).reason).toBe('disabled');
      await auth.identity.updateProject(db.id, { enabled: true });
      clock.advance(5);
      const again = (await login({ project: { id: db.id } })).token;
      expect(auth.verify(again).roles).toEqual(['reader']);
      clock.advance(5);
      await auth.identity.setPassword(alice.id, 'new-pw');
      expect((await failure(() => auth.verify(again))).reason).toBe('revoked');
      expect((await failure(login())).reason).toBe('invalid_credentials');
    } finally {
      auth.close();
      await store.close();
    }
  });

  it('lets another process see revocations through the Store', async () => {
    const store = open();
    const clock = manualClock();
    const auth = await openAuth(store, { clock: clock.now });
    const other = await openAuth(store, { clock: clock.now });
    try {
      const { alice, login } = await world(auth);
      const { token } = await login();
      expect(other.verify(token).userId).toBe(alice.id);
      clock.advance(5);
      await auth.identity.updateUser(alice.id, { enabled: false });
      await other.revocations.refresh();
      expect((await failure(() => other.verify(token))).reason).toBe('revoked');
    } finally {
      auth.close();
      other.close();
      await store.close();
    }
  });
}

for (const backend of backends) {
  if (backend.postgres)
    describeWith(['postgres'], `auth flows on ${backend.name}`, () => flows(backend.open));
  else describe(`auth flows on ${backend.name}`, () => flows(backend.open));
}

describe('login methods', () => {
  it('rescopes an unscoped token, keeping the audit chain and the expiry, and refuses to rescope a scoped one', async () => {
    const clock = manualClock();
    const auth = await openAuth(new MemoryStore(), { clock: clock.now });
    const { web, login } = await world(auth);
    const unscoped = await login();
    expect(unscoped.context.scopeType).toBe('unscoped');
    expect(unscoped.context.roles).toEqual([]);
    clock.advance(60_000);
    const scoped = await auth.loginWithToken({
      token: unscoped.token,
      scope: { project: { name: 'web', domain: { name: 'Default' } } },
    });
    expect(scoped.context).toMatchObject({
      scopeType: 'project',
      roles: ['member', 'reader'],
      methods: ['token', 'password'],
    });
    expect(scoped.context.auditChainId).toBe(unscoped.context.auditId);
    expect(scoped.context.expiresAt).toBeLessThanOrEqual(unscoped.context.expiresAt);
    expect(
      (await failure(auth.loginWithToken({ token: scoped.token, scope: { project: { id: web.id } } })))
        .reason,
    ).toBe('rescope_refused');
    // Revoking the chain takes both tokens.
    clock.advance(5);
    await auth.revokeToken(unscoped.token, { chain: true });
    expect((await failure(() => auth.verify(scoped.token))).reason).toBe('revoked');
    expect(
      (
        await failure(
          auth.loginWithPassword({
            user: { id: scoped.context.userId },
            password: 'alice-pw',
            scope: { system: 'all' },
          }),
        )
      ).reason,
    ).toBe('not_authorized_for_scope');
  });

  it('logs in with application credentials limited to a subset of roles, with expiry', async () => {
    const clock = manualClock();
    const auth = await openAuth(new MemoryStore(), { clock: clock.now });
    const { alice, web } = await world(auth);
    expect(
      (
        await failure(
          auth.applicationCredentials.create({
            userId: alice.id,
            projectId: web.id,
            name: 'ci',
            roles: ['admin'],
          }),
        )
      ).code,
    ).toBe('Forbidden');
    const cred = await auth.applicationCredentials.create({
      userId: alice.id,
      projectId: web.id,
      name: 'ci',
      roles: ['reader'],
      expiresAt: clock.now() + 600_000,
    });
    const byId = await auth.loginWithApplicationCredential({ id: cred.id, secret: cred.secret });
    expect(byId.context).toMatchObject({
      roles: ['reader'],
      methods: ['application_credential'],
      applicationCredentialId: cred.id,
    });
    expect(byId.context.expiresAt).toBeLessThanOrEqual(cred.expiresAt as number);
    const byName = await auth.loginWithApplicationCredential({
      name: 'ci',
      user: { id: alice.id },
      secret: cred.secret,
    });
    expect(byName.context.project?.id).toBe(web.id);
    expect(
      (await failure(auth.loginWithApplicationCredential({ id: cred.id, secret: `${cred.secret}x` }))).reason,
    ).toBe('invalid_credentials');
    expect(
      (await failure(auth.loginWithToken({ token: byId.token, scope: { project: { id: web.id } } }))).reason,
    ).toBe('rescope_refused');
    clock.advance(5);
    await auth.applicationCredentials.delete(cred.id);
    expect((await failure(() => auth.verify(byName.token))).reason).toBe('revoked');
    const cred2 = await auth.applicationCredentials.create({
      userId: alice.id,
      projectId: web.id,
      name: 'short',
      expiresAt: clock.now() + 1000,
    });
    clock.advance(2000);
    expect(
      (await failure(auth.loginWithApplicationCredential({ id: cred2.id, secret: cred2.secret }))).reason,
    ).toBe('expired');
  });

  it('logs in with an access key by a SigV4-signed request; refuses skew, tampering and replay', async () => {
    const clock = manualClock();
    const auth = await openAuth(new MemoryStore(), {
      clock: clock.now,
      sigv4: { region: 'nubes-1', service: 'auth' },
    });
    const { alice, web } = await world(auth);
    const key = await auth.accessKeys.create({ userId: alice.id, projectId: web.id });
    const creds = {
      accessKeyId: key.accessKeyId,
      secretAccessKey: key.secretAccessKey,
      region: 'nubes-1',
      service: 'auth',
    };
    const body = JSON.stringify({ hello: 'world' });
    const request = {
      method: 'POST',
      url: '/v3/ec2tokens?x=1&a=b c',
      headers: { host: 'auth.test', 'content-type': 'application/json' },
      body,
    };
    const signed = {
      ...request,
      headers: { ...request.headers, ...signRequest(request, creds, { now: clock.now() }) },
    };
    const issued = await auth.loginWithAccessKey(signed);
    expect(issued.context).toMatchObject({
      userId: alice.id,
      methods: ['access_key'],
      project: { id: web.id },
    });
    expect((await failure(auth.loginWithAccessKey(signed))).reason).toBe('replayed');
    const resigned = () => ({
      ...request,
      headers: { ...request.headers, ...signRequest(request, creds, { now: clock.now() }) },
    });
    expect((await failure(auth.loginWithAccessKey({ ...resigned(), body: '{"hello":"evil"}' }))).reason).toBe(
      'signature_mismatch',
    );
    const r2 = resigned();
    expect((await failure(auth.loginWithAccessKey({ ...r2, url: '/v3/ec2tokens?x=2&a=b%20c' }))).reason).toBe(
      'signature_mismatch',
    );
    const old = resigned();
    clock.advance(301_000);
    expect((await failure(auth.loginWithAccessKey(old))).reason).toBe('clock_skew');
    const wrongSecret = {
      ...request,
      headers: {
        ...request.headers,
        ...signRequest(request, { ...creds, secretAccessKey: 'nope' }, { now: clock.now() }),
      },
    };
    expect((await failure(auth.loginWithAccessKey(wrongSecret))).reason).toBe('signature_mismatch');
    const otherRegion = {
      ...request,
      headers: {
        ...request.headers,
        ...signRequest(request, { ...creds, region: 'x' }, { now: clock.now() }),
      },
    };
    expect((await failure(auth.loginWithAccessKey(otherRegion))).reason).toBe('bad_signature_format');
    expect(
      (
        await failure(
          auth.loginWithAccessKey({
            ...request,
            headers: { ...request.headers, authorization: 'AWS4-HMAC-SHA256 junk' },
          }),
        )
      ).reason,
    ).toBe('bad_signature_format');
    await auth.accessKeys.delete(key.accessKeyId);
    expect((await failure(auth.loginWithAccessKey(resigned()))).reason).toBe('unknown_access_key');
  });

  it('prevents privilege escalation: only roles the caller holds on that scope, unless the policy says so', async () => {
    const auth = await openAuth(new MemoryStore());
    const { web, db } = await world(auth);
    const boss = await auth.identity.createUser({ name: 'boss', password: 'boss-pw' });
    const root = await auth.identity.createUser({ name: 'root', password: 'root-pw' });
    const bob = await auth.identity.createUser({ name: 'bob' });
    await auth.identity.createRole({ name: 'auditor' });
    await auth.identity.assignRole({ role: 'admin', actor: { user: boss.id }, scope: { project: web.id } });
    await auth.identity.assignRole({ role: 'admin', actor: { user: root.id }, scope: { system: 'all' } });
    const bossToken = (
      await auth.loginWithPassword({
        user: { id: boss.id },
        password: 'boss-pw',
        scope: { project: { id: web.id } },
      })
    ).context;
    await auth.assignRoleAs(bossToken, {
      role: 'member',
      actor: { user: bob.id },
      scope: { project: web.id },
    });
    expect(await auth.identity.effectiveRoles(bob.id, { project: web.id })).toEqual(['member', 'reader']);
    expect(
      (
        await failure(
          auth.assignRoleAs(bossToken, {
            role: 'auditor',
            actor: { user: bob.id },
            scope: { project: web.id },
          }),
        )
      ).code,
    ).toBe('Forbidden');
    expect(
      (
        await failure(
          auth.assignRoleAs(bossToken, {
            role: 'member',
            actor: { user: bob.id },
            scope: { project: db.id },
          }),
        )
      ).code,
    ).toBe('Forbidden');
    const rootToken = (
      await auth.loginWithPassword({ user: { id: root.id }, password: 'root-pw', scope: { system: 'all' } })
    ).context;
    await auth.assignRoleAs(rootToken, {
      role: 'auditor',
      actor: { user: bob.id },
      scope: { project: db.id },
    });
    expect(await auth.identity.effectiveRoles(bob.id, { project: db.id })).toEqual(['auditor']);
    expect(
      auth.policy.authorize(rootToken, 'compute:servers:live_migrate', { project_id: web.id }).allowed,
    ).toBe(true);
    expect(auth.policy.authorize(bossToken, 'compute:servers:create', { project_id: web.id }).allowed).toBe(
      true,
    );
  });

  it('prunes expired revocation events', async () => {
    const clock = manualClock();
    const store = new MemoryStore();
    const auth = await openAuth(store, { clock: clock.now, tokenLifetimeSeconds: 60 });
    await auth.revoke({ userId: 'someone' });
    expect(auth.revocations.list()).toHaveLength(1);
    clock.advance(60_000);
    expect(await auth.revocations.prune()).toBe(0);
    clock.advance(31_000);
    expect(await auth.revocations.prune()).toBe(1);
    expect((await store.list('auth/revocations/')).items).toHaveLength(0);
    expect((await failure(auth.revoke({} as never))).code).toBe('InvalidInput');
  });
});
