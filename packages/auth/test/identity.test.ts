import { isNubesError, MemoryStore, type Store } from '@nubes/core';
import { describeWith } from '@nubes/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_SCRYPT, hashPassword, IdentityStore, verifyPassword } from '../src/index.js';
import { backends, FAST_SCRYPT, manualClock } from './helpers.js';

async function expectCode(promise: Promise<unknown>, code: string, reason?: string): Promise<void> {
  try {
    await promise;
  } catch (error) {
    expect(isNubesError(error), String(error)).toBe(true);
    expect((error as { code: string }).code).toBe(code);
    if (reason) expect((error as { details: { reason: string } }).details.reason).toBe(reason);
    return;
  }
  throw new Error(`expected ${code}`);
}

function identitySuite(open: () => Store): void {
  let store: Store;
  afterEach(async () => store?.close());

  it('bootstraps the default domain and the reader/member/admin roles with implication', async () => {
    store = open();
    const identity = await IdentityStore.open(store, { passwordHashing: FAST_SCRYPT });
    await IdentityStore.open(store); // idempotent
    expect((await identity.getDomain('default')).name).toBe('Default');
    expect((await identity.listRoles()).map((r) => r.name).sort()).toEqual(['admin', 'member', 'reader']);
    const u = await identity.createUser({ name: 'alice', password: 's3cret!' });
    const p = await identity.createProject({ name: 'web' });
    await identity.assignRole({ role: 'admin', actor: { user: u.id }, scope: { project: p.id } });
    expect(await identity.effectiveRoles(u.id, { project: p.id })).toEqual(['admin', 'member', 'reader']);
  });

  it('logs in by password by id or by name and domain, and refuses wrong, unknown and disabled users', async () => {
    store = open();
    const identity = await IdentityStore.open(store, { passwordHashing: FAST_SCRYPT });
    const d = await identity.createDomain({ name: 'acme' });
    const u = await identity.createUser({ name: 'bob', domainId: d.id, password: 'pa55word' });
    expect((await identity.checkPassword({ user: { id: u.id }, password: 'pa55word' })).name).toBe('bob');
    expect(
      (
        await identity.checkPassword({
          user: { name: 'BOB', domain: { name: 'acme' } },
          password: 'pa55word',
        })
      ).id,
    ).toBe(u.id);
    await expectCode(
      identity.checkPassword({ user: { id: u.id }, password: 'nope' }),
      'Unauthorized',
      'invalid_credentials',
    );
    await expectCode(
      identity.checkPassword({ user: { name: 'nobody', domain: { id: d.id } }, password: 'x' }),
      'Unauthorized',
      'invalid_credentials',
    );
    await identity.updateUser(u.id, { enabled: false });
    await expectCode(
      identity.checkPassword({ user: { id: u.id }, password: 'pa55word' }),
      'Unauthorized',
      'disabled',
    );
    await identity.updateUser(u.id, { enabled: true });
    await identity.setDomainEnabled(d.id, false);
    await expectCode(
      identity.checkPassword({ user: { id: u.id }, password: 'pa55word' }),
      'Unauthorized',
      'disabled',
    );
  });

  it('gives group members the group roles, and follows user-defined implications', async () => {
    store = open();
    const identity = await IdentityStore.open(store, { passwordHashing: FAST_SCRYPT });
    const u = await identity.createUser({ name: 'carol' });
    const g = await identity.createGroup({ name: 'ops' });
    const p = await identity.createProject({ name: 'infra' });
    await identity.createRole({ name: 'operator' });
    await identity.addImpliedRole('operator', 'member');
    await identity.addUserToGroup(g.id, u.id);
    await identity.assignRole({ role: 'operator', actor: { group: g.id }, scope: { project: p.id } });
    expect(await identity.effectiveRoles(u.id, { project: p.id })).toEqual(['member', 'operator', 'reader']);
    await expectCode(identity.addImpliedRole('reader', 'operator'), 'Conflict');
    await identity.removeUserFromGroup(g.id, u.id);
    expect(await identity.effectiveRoles(u.id, { project: p.id })).toEqual([]);
  });

  it('writes revocation events with every change that takes a permission away', async () => {
    store = open();
    const seen: unknown[] = [];
    const identity = await IdentityStore.open(store, {
      passwordHashing: FAST_SCRYPT,
      onRevoke: (e) => seen.push(e),
    });
    const u = await identity.createUser({ name: 'dave', password: 'first-pass' });
    const p = await identity.createProject({ name: 'p1' });
    await identity.assignRole({ role: 'member', actor: { user: u.id }, scope: { project: p.id } });
    await identity.unassignRole({ role: 'member', actor: { user: u.id }, scope: { project: p.id } });
    await identity.updateProject(p.id, { enabled: false });
    await identity.setPassword(u.id, 'second-pass');
    await identity.updateUser(u.id, { enabled: false });
    expect(seen).toMatchObject([
      { userId: u.id, projectId: p.id },
      { projectId: p.id },
      { userId: u.id },
      { userId: u.id },
    ]);
    const stored = await store.list('auth/revocations/');
    expect(stored.items).toHaveLength(4);
  });

  it('validates input, names the field and changes nothing', async () => {
    store = open();
    const identity = await IdentityStore.open(store, { passwordHashing: FAST_SCRYPT });
    const before = await store.revision();
    await expectCode(identity.createUser({ name: 'a/b' }), 'InvalidInput');
    try {
      await identity.createProject({ name: '' });
    } catch (e) {
      expect((e as { details: { field: string } }).details.field).toBe('project.name');
    }
    await expectCode(identity.createUser({ name: 'x', domainId: 'missing' }), 'NotFound');
    await identity.createUser({ name: 'dup' });
    await expectCode(identity.createUser({ name: 'DUP' }), 'Conflict');
    expect(await store.revision()).toBe(before + 1);
  });

  it('locks a user out after N failed attempts, for a while', async () => {
    store = open();
    const clock = manualClock();
    const identity = await IdentityStore.open(store, {
      passwordHashing: FAST_SCRYPT,
      lockout: { maxFailures: 3, durationMs: 60_000 },
      clock: clock.now,
    });
    const u = await identity.createUser({ name: 'eve', password: 'right' });
    for (let i = 0; i < 3; i++)
      await expectCode(
        identity.checkPassword({ user: { id: u.id }, password: 'wrong' }),
        'Unauthorized',
        'invalid_credentials',
      );
    await expectCode(
      identity.checkPassword({ user: { id: u.id }, password: 'right' }),
      'Unauthorized',
      'locked_out',
    );
    clock.advance(60_001);
    expect((await identity.checkPassword({ user: { id: u.id }, password: 'right' })).id).toBe(u.id);
  });
}

for (const backend of backends) {
  if (backend.postgres)
    describeWith(['postgres'], `identity on ${backend.name}`, () => identitySuite(backend.open));
  else describe(`identity on ${backend.name}`, () => identitySuite(backend.open));
}

describe('password hashing', () => {
  it('hashes with scrypt at the default cost and verifies in constant time', async () => {
    const hash = await hashPassword('correct horse', DEFAULT_SCRYPT);
    expect(hash).toMatch(/^\$scrypt\$ln=16,r=8,p=1\$/);
    expect(await verifyPassword('correct horse', hash)).toBe(true);
    expect(await verifyPassword('correct horsE', hash)).toBe(false);
    expect(await verifyPassword('x', 'not a hash')).toBe(false);
  });

  it('never puts the password in an error or a returned user', async () => {
    const identity = await IdentityStore.open(new MemoryStore(), { passwordHashing: FAST_SCRYPT });
    const u = await identity.createUser({ name: 'frank', password: 'hunter2-secret' });
    expect(JSON.stringify(u)).not.toContain('hunter2');
    expect(JSON.stringify(await identity.getUser(u.id))).not.toContain('scrypt');
    try {
      await identity.checkPassword({ user: { id: u.id }, password: 'hunter3-secret' });
    } catch (e) {
      expect(JSON.stringify(e) + String(e)).not.toContain('hunter');
    }
  });
});
