import { createHash, sign, verify } from 'node:crypto';
import { AuthService, Policy, TokenVerifier } from '@nubes/auth';
import { MemoryStore } from '@nubes/core';
import { createLocalJWKSet, importJWK, type JWK, jwtVerify } from 'jose';
import { type BenchGroup, defineBenchmarks } from './harness.js';

/** A 200-rule policy in the shape of a real deployment: personas, then actions referring to them. */
function policyOf200(): Policy {
  const rules: Record<string, string> = {
    project_member: 'role:member and project_id:%(target.project_id)s',
    project_reader: 'role:reader and project_id:%(target.project_id)s',
    cloud_admin: 'role:admin and system_scope:all',
  };
  const services = ['compute', 'image', 'network', 'volume', 'quota'];
  for (let i = 0; rules && Object.keys(rules).length < 200; i++) {
    const svc = services[i % services.length];
    rules[`${svc}:resource${i}:get`] = 'rule:project_reader or rule:cloud_admin';
    rules[`${svc}:resource${i}:create`] = '(rule:project_member and not role:banned) or rule:cloud_admin';
  }
  return Policy.load(rules);
}

export default defineBenchmarks({
  name: 'Tokens and policy: issue/verify against raw node:crypto and jose; cached verify; compiled policy decisions',
  async setup() {
    const groups: BenchGroup[] = [];
    const closers: (() => void)[] = [];
    for (const algorithm of ['EdDSA', 'ES256'] as const) {
      const auth = await AuthService.open(new MemoryStore(), {
        issuer: 'https://auth.bench',
        algorithm,
        passwordHashing: { N: 2 ** 10, r: 8, p: 1 },
      });
      closers.push(() => auth.close());
      const user = await auth.identity.createUser({ name: 'alice', password: 'pw' });
      const project = await auth.identity.createProject({ name: 'web' });
      await auth.identity.assignRole({
        role: 'member',
        actor: { user: user.id },
        scope: { project: project.id },
      });
      const { token } = await auth.loginWithPassword({
        user: { id: user.id },
        password: 'pw',
        scope: { project: { id: project.id } },
      });
      const signer = auth.keys.signingKey();
      const pub = auth.keys.verificationKey(signer.kid)?.key;
      if (!pub) throw new Error('no public key');
      const [h, p, s] = token.split('.') as [string, string, string];
      const input = Buffer.from(`${h}.${p}`);
      const sig = Buffer.from(s, 'base64url');
      const rawSign = () =>
        algorithm === 'EdDSA'
          ? sign(null, input, signer.key)
          : sign('sha256', input, { key: signer.key, dsaEncoding: 'ieee-p1363' });
      const rawVerify = () =>
        algorithm === 'EdDSA'
          ? verify(null, input, pub, sig)
          : verify('sha256', input, { key: pub, dsaEncoding: 'ieee-p1363' }, sig);
      const subject = {
        userId: user.id,
        userName: 'alice',
        userDomain: { id: 'default', name: 'Default' },
        scope: { project: { id: project.id, name: 'web', domain: { id: 'default', name: 'Default' } } },
        roles: ['member', 'reader'],
        methods: ['password'],
      };
      const cold = new TokenVerifier({
        keys: auth.keys,
        revocations: auth.revocations,
        issuer: 'https://auth.bench',
        audience: 'nubes',
        cacheSize: 0,
      });
      const jwk = auth.jwks().keys.find((k) => k.kid === signer.kid) as unknown as JWK;
      const joseKey = await importJWK(jwk, algorithm);
      const joseSet = createLocalJWKSet(auth.jwks() as never);
      const opts = { issuer: 'https://auth.bench', audience: 'nubes', algorithms: [algorithm] };
      groups.push({
        name: `${algorithm} token issue (${token.length} bytes)`,
        cases: [
          { name: 'node:crypto sign of the same bytes', reference: true, fn: rawSign },
          { name: '@nubes/auth TokenIssuer.issue', fn: () => auth.issuer.issue(subject) },
        ],
      });
      groups.push({
        name: `${algorithm} token verify`,
        cases: [
          { name: 'node:crypto verify of the same bytes', reference: true, fn: rawVerify },
          { name: '@nubes/auth verify, cache off', fn: () => cold.verify(token) },
          { name: 'jose jwtVerify (imported key)', fn: () => jwtVerify(token, joseKey, opts) },
          { name: 'jose jwtVerify (local JWKS)', fn: () => jwtVerify(token, joseSet, opts) },
          { name: '@nubes/auth verify, cache hot', fn: () => auth.verify(token) },
        ],
      });
      if (algorithm === 'EdDSA') {
        const digest = () => createHash('sha256').update(token).digest();
        groups.push({
          name: 'hot token (cached) verify',
          cases: [
            {
              name: 'sha256 of the token (a digest-keyed cache would pay this)',
              reference: true,
              fn: digest,
            },
            { name: '@nubes/auth verify, cache hot', fn: () => auth.verify(token) },
          ],
        });
      }
    }

    const policy = policyOf200();
    const member = { user_id: 'u1', project_id: 'p1', roles: ['member', 'reader'] };
    const target = { project_id: 'p1' };
    const naive = (roles: readonly string[], projectId: string, t: { project_id: string }) =>
      (roles.includes('member') && projectId === t.project_id && !roles.includes('banned')) ||
      roles.includes('admin');
    groups.push({
      name: `policy decisions (${policy.names().length} rules)`,
      cases: [
        {
          name: 'hand-written check of the same rule',
          reference: true,
          fn: () => naive(member.roles, member.project_id, target),
        },
        {
          name: 'Policy.authorize allow',
          fn: () => policy.authorize(member, 'compute:resource0:create', target),
        },
        {
          name: 'Policy.authorize allow (wildcard-free, deep)',
          fn: () => policy.authorize(member, 'quota:resource194:get', target),
        },
        {
          name: 'Policy.authorize deny (with explanation)',
          fn: () => policy.authorize(member, 'compute:resource0:create', { project_id: 'p2' }),
        },
      ],
    });
    return {
      groups,
      teardown: async () => {
        for (const close of closers) close();
      },
    };
  },
});
