import { isNubesError } from '@nubes/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_POLICY_RULES, Policy, type PolicyCredentials } from '../src/index.js';

const member: PolicyCredentials = { user_id: 'u1', project_id: 'p1', roles: ['member', 'reader'] };
const admin: PolicyCredentials = {
  user_id: 'root',
  system_scope: 'all',
  roles: ['admin', 'member', 'reader'],
};

function loadError(rules: Record<string, string>): { field: string; position: number; message: string } {
  try {
    Policy.load(rules);
  } catch (e) {
    expect(isNubesError(e, 'InvalidInput')).toBe(true);
    const err = e as { message: string; details: { field: string; position: number } };
    return { field: err.details.field, position: err.details.position, message: err.message };
  }
  throw new Error('expected the policy to be rejected');
}

describe('policy language', () => {
  it('evaluates role, target substitutions, rule references, and/or/not with precedence, @ and !', () => {
    const policy = Policy.load({
      is_member: 'role:member and project_id:%(target.project_id)s',
      owner: 'user_id:%(user_id)s',
      'a:x': 'rule:is_member or rule:owner',
      'a:y': 'not role:admin and (rule:owner or role:reader)',
      'a:always': '@',
      'a:never': '!',
      'a:empty': '',
      'a:prec': 'role:nobody and role:nobody or role:member',
      'a:literal': "system_scope:all or 'public':%(target.visibility)s",
    });
    expect(policy.authorize(member, 'a:x', { project_id: 'p1' }).allowed).toBe(true);
    expect(policy.authorize(member, 'a:x', { project_id: 'p2' }).allowed).toBe(false);
    expect(policy.authorize(member, 'a:x', { project_id: 'p2', user_id: 'u1' }).allowed).toBe(true);
    expect(policy.authorize(member, 'a:y', {}).allowed).toBe(true);
    expect(policy.authorize(admin, 'a:y', {}).allowed).toBe(false);
    expect(policy.authorize(member, 'a:always').allowed).toBe(true);
    expect(policy.authorize(admin, 'a:never').allowed).toBe(false);
    expect(policy.authorize(member, 'a:empty').allowed).toBe(true);
    expect(policy.authorize(member, 'a:prec').allowed).toBe(true);
    expect(policy.authorize(member, 'a:literal', { visibility: 'public' }).allowed).toBe(true);
    expect(policy.authorize(member, 'a:literal', { visibility: 'private' }).allowed).toBe(false);
    expect(policy.authorize(admin, 'a:literal', {}).allowed).toBe(true);
  });

  it('explains decisions and throws Forbidden on enforce', () => {
    const policy = Policy.load({
      'compute:servers:create': 'role:member and project_id:%(target.project_id)s',
    });
    const denied = policy.authorize(member, 'compute:servers:create', { project_id: 'p9' });
    expect(denied).toMatchObject({ allowed: false, rule: 'compute:servers:create' });
    expect(denied.reason).toContain('project_id:%(target.project_id)s');
    expect(policy.authorize(member, 'compute:servers:create', { project_id: 'p1' }).reason).toContain(
      'allowed',
    );
    try {
      policy.enforce(member, 'compute:servers:create', { project_id: 'p9' });
      throw new Error('expected Forbidden');
    } catch (e) {
      expect(isNubesError(e, 'Forbidden')).toBe(true);
    }
  });

  it('matches actions by wildcard, most specific first, then default', () => {
    const policy = Policy.load({
      'compute:*': 'role:admin',
      'compute:servers:*': 'role:member',
      default: '!',
    });
    expect(policy.authorize(member, 'compute:servers:delete').rule).toBe('compute:servers:*');
    expect(policy.authorize(member, 'compute:hosts:list')).toMatchObject({
      allowed: false,
      rule: 'compute:*',
    });
    expect(policy.authorize(member, 'image:images:get')).toMatchObject({ allowed: false, rule: 'default' });
    expect(Policy.load({}).authorize(admin, 'x:y').allowed).toBe(false);
  });

  it('rejects syntax errors, unknown rules and cycles at load time with the position', () => {
    expect(loadError({ r: 'role:admin and' })).toMatchObject({ field: 'policy.r', position: 14 });
    expect(loadError({ r: 'role:admin or (role:x' })).toMatchObject({ field: 'policy.r', position: 21 });
    expect(loadError({ r: 'role:a rule:b' })).toMatchObject({ position: 7 });
    expect(loadError({ r: 'role:a or rule:missing' })).toMatchObject({ field: 'policy.r', position: 10 });
    expect(loadError({ a: 'rule:b', b: 'rule:a' }).message).toContain('refers back');
    expect(loadError({ r: 'admin' }).position).toBe(0);
    expect(loadError({ r: 'project_id:%(target' }).message).toContain('unterminated');
  });

  it('never throws anything but InvalidInput on random rule text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (text) => {
        try {
          Policy.load({ r: text, known: '@' }).authorize(member, 'r', {});
        } catch (e) {
          expect(isNubesError(e, 'InvalidInput')).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('default policy', () => {
  const policy = Policy.load({ ...DEFAULT_POLICY_RULES });
  const reader: PolicyCredentials = { user_id: 'u2', project_id: 'p1', roles: ['reader'] };
  const projectAdmin: PolicyCredentials = {
    user_id: 'u3',
    project_id: 'p1',
    roles: ['admin', 'member', 'reader'],
  };

  it('gives readers read, members write, and the cloud admin everything', () => {
    const t = { project_id: 'p1' };
    expect(policy.authorize(reader, 'compute:servers:list', t).allowed).toBe(true);
    expect(policy.authorize(reader, 'compute:servers:create', t).allowed).toBe(false);
    expect(policy.authorize(member, 'compute:servers:create', t).allowed).toBe(true);
    expect(policy.authorize(member, 'compute:servers:create', { project_id: 'p2' }).allowed).toBe(false);
    expect(policy.authorize(member, 'compute:servers:live_migrate', t).allowed).toBe(false);
    expect(policy.authorize(admin, 'compute:servers:live_migrate', t).allowed).toBe(true);
    expect(policy.authorize(projectAdmin, 'quota:limits:set', t).allowed).toBe(false);
    expect(policy.authorize(admin, 'quota:limits:set', t).allowed).toBe(true);
    expect(policy.authorize(member, 'network:routers:create', t).allowed).toBe(true);
    expect(
      policy.authorize(reader, 'image:images:get', { project_id: 'p9', visibility: 'public' }).allowed,
    ).toBe(true);
    expect(policy.authorize(member, 'identity:domains:create', {}).allowed).toBe(false);
    expect(policy.authorize(projectAdmin, 'identity:role_assignments:create', t).allowed).toBe(true);
    expect(policy.authorize(projectAdmin, 'identity:role_assignments:any_role', t).allowed).toBe(false);
  });

  it('can be extended by a deployment', () => {
    const custom = policy.extend({ 'compute:servers:create': 'role:admin' });
    expect(custom.authorize(member, 'compute:servers:create', { project_id: 'p1' }).allowed).toBe(false);
    expect(custom.authorize(member, 'compute:servers:list', { project_id: 'p1' }).allowed).toBe(true);
  });
});
