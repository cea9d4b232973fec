import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '@nubes/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  canonicalRequest,
  computeSignature,
  credentialScope,
  deriveSigningKey,
  memoryReplayGuard,
  normalizeHeaders,
  SigV4Verifier,
  sha256,
  signRequest,
  storeReplayGuard,
  stringToSign,
} from '../src/index.js';

const SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
const EMPTY_SHA = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function sign(parts: {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  signed: string[];
  payloadHash: string;
  date: string;
  region: string;
  service: string;
  secret?: string;
}): { canonical: string; key: Buffer; signature: string } {
  const canonical = canonicalRequest({
    method: parts.method,
    path: parts.path,
    query: parts.query,
    headers: normalizeHeaders(parts.headers),
    signedHeaders: parts.signed,
    payloadHash: parts.payloadHash,
    service: parts.service,
  });
  const key = deriveSigningKey(parts.secret ?? SECRET, parts.date.slice(0, 8), parts.region, parts.service);
  const toSign = stringToSign(
    parts.date,
    credentialScope(parts.date.slice(0, 8), parts.region, parts.service),
    canonical,
  );
  return { canonical, key, signature: computeSignature(key, toSign) };
}

describe('AWS Signature Version 4: the published examples', () => {
  it('derives the signing key of the "deriving the signing key" example (iam, 20120215)', () => {
    expect(deriveSigningKey(SECRET, '20120215', 'us-east-1', 'iam').toString('hex')).toBe(
      'f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d',
    );
  });

  it('reproduces the IAM ListUsers example: canonical request hash, signing key and signature', () => {
    const r = sign({
      method: 'GET',
      path: '/',
      query: 'Action=ListUsers&Version=2010-05-08',
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8',
        Host: 'iam.amazonaws.com',
        'X-Amz-Date': '20150830T123600Z',
      },
      signed: ['content-type', 'host', 'x-amz-date'],
      payloadHash: EMPTY_SHA,
      date: '20150830T123600Z',
      region: 'us-east-1',
      service: 'iam',
    });
    expect(sha256(r.canonical)).toBe('f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59');
    expect(r.key.toString('hex')).toBe('c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9');
    expect(r.signature).toBe('5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7');
  });

  it('reproduces get-vanilla of the SigV4 test suite', () => {
    const r = sign({
      method: 'GET',
      path: '/',
      query: '',
      headers: { Host: 'example.amazonaws.com', 'X-Amz-Date': '20150830T123600Z' },
      signed: ['host', 'x-amz-date'],
      payloadHash: EMPTY_SHA,
      date: '20150830T123600Z',
      region: 'us-east-1',
      service: 'service',
    });
    expect(r.signature).toBe('5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31');
  });

  it('reproduces the S3 GET Object example (Range header, x-amz-content-sha256)', () => {
    const r = sign({
      method: 'GET',
      path: '/test.txt',
      query: '',
      headers: {
        Host: 'examplebucket.s3.amazonaws.com',
        Range: 'bytes=0-9',
        'x-amz-content-sha256': EMPTY_SHA,
        'x-amz-date': '20130524T000000Z',
      },
      signed: ['host', 'range', 'x-amz-content-sha256', 'x-amz-date'],
      payloadHash: EMPTY_SHA,
      date: '20130524T000000Z',
      region: 'us-east-1',
      service: 's3',
      // The S3 documentation's example secret differs from IAM's by one character.
      secret: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    });
    expect(r.signature).toBe('f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41');
  });
});

describe('SigV4 client and server', () => {
  const creds = {
    accessKeyId: 'AKIDEXAMPLE',
    secretAccessKey: SECRET,
    region: 'us-east-1',
    service: 'service',
  };
  const lookup = async (id: string) =>
    id === 'AKIDEXAMPLE' ? { secretAccessKey: SECRET, owner: 'u1' } : undefined;

  it('produces the get-vanilla signature from the client helper', () => {
    const headers = signRequest(
      { method: 'GET', url: '/', headers: { host: 'example.amazonaws.com' } },
      creds,
      { now: Date.UTC(2015, 7, 30, 12, 36, 0) },
    );
    // The helper also signs x-amz-content-sha256, so the signature differs from get-vanilla but the format is AWS's.
    expect(headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/20150830\/us-east-1\/service\/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=[0-9a-f]{64}$/,
    );
  });

  it('verifies what it signs for arbitrary paths, queries and bodies, and rejects any change', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.webPath(),
        fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 5 }), fc.string({ maxLength: 5 })), {
          maxLength: 3,
        }),
        fc.string({ maxLength: 40 }),
        async (path, pairs, body) => {
          const now = Date.now();
          const verifier = new SigV4Verifier(lookup, { clock: () => now });
          const query = pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
          const url = `${path || '/'}${query ? `?${query}` : ''}`;
          const request = { method: 'PUT', url, headers: { host: 'h.test' }, body };
          const signed = {
            ...request,
            headers: { ...request.headers, ...signRequest(request, creds, { now }) },
          };
          expect((await verifier.verify(signed)).owner).toBe('u1');
          await expect(verifier.verify({ ...signed, method: 'POST' })).rejects.toMatchObject({
            code: 'Unauthorized',
          });
          await expect(verifier.verify({ ...signed, body: `${body}!` })).rejects.toMatchObject({
            code: 'Unauthorized',
          });
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('SigV4 replay guard', () => {
  const creds = {
    accessKeyId: 'AKIDEXAMPLE',
    secretAccessKey: SECRET,
    region: 'us-east-1',
    service: 'service',
  };
  const lookup = async (id: string) =>
    id === 'AKIDEXAMPLE' ? { secretAccessKey: SECRET, owner: 'u1' } : undefined;

  it('refuses a replay on another replica sharing the Store, and accepts it again once it could not pass skew', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nubes-sigv4-'));
    const path = join(dir, 'auth.db');
    let now = Date.UTC(2026, 0, 1, 12, 0, 0);
    const replicaA = new SqliteStore(path);
    const replicaB = new SqliteStore(path);
    try {
      const options = (store: SqliteStore) => ({
        clock: () => now,
        maxSkewMs: 60_000,
        replayGuard: storeReplayGuard(store, 'auth/sigv4-replay/', 2),
      });
      const a = new SigV4Verifier(lookup, options(replicaA));
      const b = new SigV4Verifier(lookup, options(replicaB));
      const request = { method: 'GET', url: '/x', headers: { host: 'h.test' } };
      const signed = { ...request, headers: { ...request.headers, ...signRequest(request, creds, { now }) } };
      expect((await a.verify(signed)).owner).toBe('u1');
      await expect(b.verify(signed)).rejects.toMatchObject({
        code: 'Unauthorized',
        details: { reason: 'replayed' },
      });
      await expect(a.verify(signed)).rejects.toMatchObject({ details: { reason: 'replayed' } });
      // Past the skew window the request fails on its timestamp, and the sweep forgets the signature.
      now += 61_000;
      await expect(b.verify(signed)).rejects.toMatchObject({ details: { reason: 'clock_skew' } });
      const fresh = { ...request, headers: { ...request.headers, ...signRequest(request, creds, { now }) } };
      expect((await b.verify(fresh)).owner).toBe('u1');
      expect((await replicaA.list('auth/sigv4-replay/')).items).toHaveLength(1);
    } finally {
      await replicaA.close();
      await replicaB.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('in memory: a replay is refused, a different signature is not', async () => {
    const guard = memoryReplayGuard();
    expect(await guard.claim('sig-1', 2000, 1000)).toBe(true);
    expect(await guard.claim('sig-1', 2000, 1500)).toBe(false);
    expect(await guard.claim('sig-2', 2000, 1500)).toBe(true);
    expect(await guard.claim('sig-1', 4000, 3000)).toBe(true);
  });
});
