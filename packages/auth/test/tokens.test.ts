import { createHmac, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { MemoryStore, NubesError } from '@nubes/core';
import fc from 'fast-check';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { type AuthService, KeyRepository, TokenIssuer, TokenVerifier } from '../src/index.js';
import { manualClock, openAuth } from './helpers.js';

function reason(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(NubesError);
    expect((error as NubesError).code).toBe('Unauthorized');
    return (error as NubesError).details.reason as string;
  }
  return undefined;
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

async function setup(algorithm: 'EdDSA' | 'ES256' = 'EdDSA') {
  const auth = await openAuth(new MemoryStore(), { algorithm });
  const user = await auth.identity.createUser({ name: 'alice', password: 'pw-alice' });
  const project = await auth.identity.createProject({ name: 'web' });
  await auth.identity.assignRole({
    role: 'member',
    actor: { user: user.id },
    scope: { project: project.id },
  });
  const { token, context } = await auth.loginWithPassword({
    user: { name: 'alice', domain: { id: 'default' } },
    password: 'pw-alice',
    scope: { project: { id: project.id } },
  });
  return { auth, user, project, token, context };
}

describe('PKI tokens', () => {
  for (const alg of ['EdDSA', 'ES256'] as const) {
    it(`issues ${alg} JWTs that jose verifies with the JWKS, compact and complete`, async () => {
      const { auth, user, project, token, context } = await setup(alg);
      expect(decodeProtectedHeader(token)).toMatchObject({
        alg,
        typ: 'JWT',
        kid: auth.keys.signingKey().kid,
      });
      const { payload } = await jwtVerify(token, createLocalJWKSet(auth.jwks() as never), {
        issuer: 'https://auth.test',
        audience: 'nubes',
        algorithms: [alg],
      });
      expect(payload).toMatchObject({
        sub: user.id,
        user: { name: 'alice', domain: { id: 'default', name: 'Default' } },
        scope: { project: { id: project.id, name: 'web', domain: { id: 'default' } } },
        roles: ['member', 'reader'],
        methods: ['password'],
      });
      expect((payload.exp as number) - (payload.iat as number)).toBeCloseTo(3600, -1);
      expect(token.length).toBeLessThan(1024);
      expect(context.project?.id).toBe(project.id);
      expect(auth.verify(token).userId).toBe(user.id);
    });
  }

  it('rejects tampered, truncated, expired, not-yet-valid, wrong audience/issuer, unknown kid, none and HS256 confusion', async () => {
    const clock = manualClock();
    const auth = await openAuth(new MemoryStore(), { clock: clock.now });
    const user = await auth.identity.createUser({ name: 'u', password: 'pw' });
    const { token } = await auth.loginWithPassword({ user: { id: user.id }, password: 'pw' });
    const [h, p, s] = token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    const header = JSON.parse(Buffer.from(h, 'base64url').toString());
    const verifier = new TokenVerifier({
      keys: auth.keys,
      issuer: 'https://auth.test',
      audience: 'nubes',
      clock: clock.now,
      cacheSize: 0,
    });
    const resign = (hd: object, pl: object) => {
      const input = `${b64(hd)}.${b64(pl)}`;
      const key = (auth.keys as unknown as { signingKey(): { key: Parameters<typeof sign>[2] } }).signingKey()
        .key;
      return `${input}.${sign(null, Buffer.from(input), key).toString('base64url')}`;
    };
    expect(verifier.verify(token).userId).toBe(user.id);
    expect(reason(() => verifier.verify(`${h}.${b64({ ...payload, roles: ['admin'] })}.${s}`))).toBe(
      'bad_signature',
    );
    expect(reason(() => verifier.verify(token.slice(0, -10)))).toBe('malformed');
    expect(reason(() => verifier.verify(`${h}.${p}`))).toBe('malformed');
    expect(reason(() => verifier.verify(''))).toBe('missing_token');
    expect(reason(() => verifier.verify(resign(header, { ...payload, aud: 'other' })))).toBe(
      'wrong_audience',
    );
    expect(reason(() => verifier.verify(resign(header, { ...payload, iss: 'https://evil' })))).toBe(
      'wrong_issuer',
    );
    expect(reason(() => verifier.verify(resign(header, { ...payload, nbf: payload.iat + 600 })))).toBe(
      'not_yet_valid',
    );
    expect(reason(() => verifier.verify(resign(header, { ...payload, roles: 'admin' })))).toBe(
      'invalid_claims',
    );
    expect(reason(() => verifier.verify(resign({ ...header, kid: 'nope' }, payload)))).toBe('unknown_kid');
    expect(reason(() => verifier.verify(`${b64({ alg: 'none', typ: 'JWT', kid: header.kid })}.${p}.`))).toBe(
      'alg_not_allowed',
    );
    expect(
      reason(() => verifier.verify(`${b64({ alg: 'none', typ: 'JWT', kid: header.kid })}.${p}.${s}`)),
    ).toBe('alg_not_allowed');
    // Algorithm confusion: an HMAC "signed" with the public key as the secret.
    const pub = createPublicKey({ key: auth.jwks().keys[0] as never, format: 'jwk' }).export({
      type: 'spki',
      format: 'pem',
    });
    const hsInput = `${b64({ ...header, alg: 'HS256' })}.${p}`;
    const hs = `${hsInput}.${createHmac('sha256', pub).update(hsInput).digest('base64url')}`;
    expect(reason(() => verifier.verify(hs))).toBe('alg_not_allowed');
    expect(reason(() => verifier.verify(resign({ ...header, alg: 'ES256' }, payload)))).toBe(
      'alg_not_allowed',
    );
    // A foreign key with a kid we know is still a bad signature.
    const foreign = generateKeyPairSync('ed25519').privateKey;
    const fInput = `${h}.${p}`;
    expect(
      reason(() =>
        verifier.verify(`${fInput}.${sign(null, Buffer.from(fInput), foreign).toString('base64url')}`),
      ),
    ).toBe('bad_signature');
    clock.advance(3600_000 + 31_000);
    expect(reason(() => verifier.verify(token))).toBe('expired');
  });

  it('caches verified tokens and still notices expiry', async () => {
    const clock = manualClock();
    const auth = await openAuth(new MemoryStore(), { clock: clock.now, tokenLifetimeSeconds: 60 });
    const user = await auth.identity.createUser({ name: 'u', password: 'pw' });
    const { token } = await auth.loginWithPassword({ user: { id: user.id }, password: 'pw' });
    const first = auth.verify(token);
    expect(auth.verify(token)).toBe(first);
    clock.advance(91_000);
    expect(reason(() => auth.verify(token))).toBe('expired');
  });

  describe('fuzzing the token parser', () => {
    let auth: AuthService;
    let token: string;
    let verifier: TokenVerifier;
    beforeAll(async () => {
      ({ auth, token } = await setup());
      verifier = new TokenVerifier({
        keys: auth.keys,
        issuer: 'https://auth.test',
        audience: 'nubes',
        cacheSize: 0,
      });
    });

    it('never crashes and never accepts a mutated token', () => {
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ';
      const mutation = fc.oneof(
        fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), ch: fc.constantFrom(...alphabet) }),
        fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 20 }) }),
        fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), s: fc.string({ maxLength: 8 }) }),
        fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      );
      fc.assert(
        fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
          let t = token;
          for (const m of mutations) {
            const at = m.at % (t.length + 1);
            if (m.kind === 'replace') t = t.slice(0, at) + m.ch + t.slice(at + 1);
            else if (m.kind === 'delete') t = t.slice(0, at) + t.slice(at + m.n);
            else if (m.kind === 'insert') t = t.slice(0, at) + m.s + t.slice(at);
            else {
              // Flip one bit of the decoded payload and re-encode: the signature must catch it.
              const parts = t.split('.');
              if (parts.length !== 3) continue;
              const bytes = Buffer.from(parts[1] as string, 'base64url');
              if (bytes.length === 0) continue;
              const i = at % bytes.length;
              bytes[i] = (bytes[i] as number) ^ (1 << m.bit);
              t = `${parts[0]}.${bytes.toString('base64url')}.${parts[2]}`;
            }
          }
          if (t === token) return;
          try {
            verifier.verify(t);
          } catch (error) {
            expect(error).toBeInstanceOf(NubesError);
            expect((error as NubesError).code).toBe('Unauthorized');
            expect((error as NubesError).message).not.toContain(token.slice(-20));
            return;
          }
          throw new Error(`accepted a mutated token: ${t}`);
        }),
        { numRuns: 3000 },
      );
    });

    it('never crashes on arbitrary strings', () => {
      fc.assert(
        fc.property(fc.string({ maxLength: 400 }), (s) => {
          expect(() => verifier.verify(s)).toThrow(NubesError);
        }),
        { numRuns: 2000 },
      );
    });
  });
});

describe('key repository and rotation', () => {
  it('rotates staged -> primary -> secondary without invalidating issued tokens, and prunes beyond maxActiveKeys', async () => {
    const store = new MemoryStore();
    const keys = await KeyRepository.open(store);
    const issuer = new TokenIssuer(keys, { issuer: 'iss', audience: 'aud' });
    const verifier = new TokenVerifier({ keys, issuer: 'iss', audience: 'aud', cacheSize: 0 });
    const subject = {
      userId: 'u1',
      userName: 'u',
      userDomain: { id: 'd', name: 'D' },
      roles: [],
      methods: ['password'],
    };
    expect(
      keys
        .list()
        .map((k) => k.state)
        .sort(),
    ).toEqual(['primary', 'staged']);
    const staged = keys.list().find((k) => k.state === 'staged')?.kid;
    const before = issuer.issue(subject).token;
    await keys.rotate();
    expect(keys.signingKey().kid).toBe(staged);
    expect(
      keys
        .list()
        .map((k) => k.state)
        .sort(),
    ).toEqual(['primary', 'secondary', 'staged']);
    expect(verifier.verify(before).userId).toBe('u1');
    expect(keys.jwks().keys).toHaveLength(3);
    await keys.rotate();
    // The key that signed `before` was the oldest secondary beyond max_active_keys = 3.
    expect(reason(() => verifier.verify(before))).toBe('unknown_kid');
    // A second process sees the rotation through the Store.
    const other = await KeyRepository.open(store, { watch: false });
    expect(other.signingKey().kid).toBe(keys.signingKey().kid);
    keys.close();
  });

  it('can rotate to ES256 and tokens of both algorithms verify with jose', async () => {
    const keys = await KeyRepository.open(new MemoryStore(), { watch: false });
    const issuer = new TokenIssuer(keys, { issuer: 'iss', audience: 'aud' });
    const subject = {
      userId: 'u1',
      userName: 'u',
      userDomain: { id: 'd', name: 'D' },
      roles: ['reader'],
      methods: ['password'],
    };
    const ed = issuer.issue(subject).token;
    await keys.rotate({ algorithm: 'ES256' });
    await keys.rotate();
    const es = issuer.issue(subject).token;
    expect(decodeProtectedHeader(es).alg).toBe('ES256');
    const jwks = createLocalJWKSet(keys.jwks() as never);
    await expect(jwtVerify(ed, jwks, { issuer: 'iss', audience: 'aud' })).rejects.toThrow(); // pruned by now
    expect((await jwtVerify(es, jwks, { issuer: 'iss', audience: 'aud' })).payload.sub).toBe('u1');
  });
});
