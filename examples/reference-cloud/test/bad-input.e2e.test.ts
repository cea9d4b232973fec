import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  ADMIN,
  createMember,
  describeCloud,
  startTestCloud,
  type TestCloud,
  type Who,
} from './helpers/cloud.js';

// Raw HTTP against every service of the running cloud: what a broken or hostile client sends. Each refusal must
// be the status OpenStack answers, with a JSON body, and must leave nothing changed.

/** One create endpoint per service, with a valid body for it and the list that shows what exists. */
const CREATES = [
  {
    service: 'identity',
    path: '/v3/projects',
    list: '/v3/projects',
    key: 'projects',
    body: { project: { name: 'p-ok' } },
  },
  {
    service: 'image',
    path: '/image/v2/images',
    list: '/image/v2/images',
    key: 'images',
    body: { name: 'img-ok', disk_format: 'raw', container_format: 'bare' },
  },
  {
    service: 'network',
    path: '/network/v2.0/networks',
    list: '/network/v2.0/networks',
    key: 'networks',
    body: { network: { name: 'net-ok' } },
  },
  {
    service: 'compute',
    path: '/compute/v2.1/flavors',
    list: '/compute/v2.1/flavors',
    key: 'flavors',
    body: { flavor: { name: 'f-ok', vcpus: 1, ram: 64, disk: 1 } },
  },
] as const;

describeCloud('reference cloud: bad input and hostile requests over raw HTTP', () => {
  let t: TestCloud;
  let adminToken: string;
  let aliceToken: string;
  let alice: Who;

  beforeAll(async () => {
    t = await startTestCloud();
    adminToken = await t.token(ADMIN);
    alice = await createMember(t, 'tenant-a', 'alice');
    aliceToken = await t.token(alice);
  });

  afterAll(async () => {
    await t?.close();
  });

  const http = async (
    method: string,
    path: string,
    token: string | undefined,
    body?: string | Buffer,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; json: unknown; text: string }> => {
    const response = await fetch(`${t.base}${path}`, {
      method,
      headers: {
        ...(token ? { 'x-auth-token': token } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      ...(body !== undefined ? { body } : {}),
    });
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: response.status, json, text };
  };

  const snapshot = async (): Promise<unknown[]> => {
    const out = [];
    for (const c of CREATES) {
      const r = await http('GET', c.list, adminToken);
      expect(r.status, `${c.list}: ${r.text}`).toBe(200);
      out.push((r.json as Record<string, unknown>)[c.key]);
    }
    return out;
  };

  it('refuses a missing, tampered or foreign-signed token on every service with 401 and a challenge', async () => {
    const [header, payload, signature] = adminToken.split('.') as [string, string, string];
    const flipped = `${header}.${payload}.${signature.startsWith('A') ? 'B' : 'A'}${signature.slice(1)}`;
    const otherPayload = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), roles: ['admin'] }),
    ).toString('base64url');
    for (const token of [undefined, 'not-a-token', flipped, `${header}.${otherPayload}.${signature}`]) {
      for (const c of CREATES) {
        const r = await http('GET', c.list, token);
        expect(r.status, `${c.service} with ${String(token).slice(0, 12)}`).toBe(401);
      }
    }
    const r = await fetch(`${t.base}/compute/v2.1/servers`, { headers: { 'x-auth-token': flipped } });
    expect(r.headers.get('www-authenticate')).toContain('Keystone');
  });

  it('answers malformed JSON with 400 and an oversized body with 413, changing nothing', async () => {
    const before = await snapshot();
    for (const c of CREATES) {
      const malformed = await http('POST', c.path, adminToken, '{"not json');
      expect(malformed.status, `${c.service}: ${malformed.text}`).toBe(400);
      expect(malformed.json, c.service).toBeTypeOf('object');
      const array = await http('POST', c.path, adminToken, '[1, 2]');
      expect(array.status, `${c.service}: ${array.text}`).toBe(400);
      const huge = await http(
        'POST',
        c.path,
        adminToken,
        JSON.stringify({ ...c.body, padding: 'x'.repeat(2 * 1024 * 1024) }),
      );
      expect(huge.status, `${c.service}: ${huge.text.slice(0, 200)}`).toBe(413);
    }
    expect(await snapshot()).toEqual(before);
  });

  it('answers unknown routes with 404 and wrong methods with 404 or 405, never a crash', async () => {
    for (const path of [
      '/nowhere',
      '/v3/nothing',
      '/image/v2/nothing',
      '/network/v2.0/nothing',
      '/compute/v2.1/nothing',
    ]) {
      const r = await http('GET', path, adminToken);
      expect(r.status, path).toBe(404);
    }
    for (const c of CREATES) {
      const r = await http('PATCH', c.list, adminToken, '{}');
      expect([404, 405], `${c.service}: ${r.status} ${r.text}`).toContain(r.status);
    }
  });

  it("hides another project's resources (404) and refuses admin-only creates (403)", async () => {
    const net = await http(
      'POST',
      '/network/v2.0/networks',
      adminToken,
      JSON.stringify({ network: { name: 'admins' } }),
    );
    expect(net.status, net.text).toBe(201);
    const netId = (net.json as { network: { id: string } }).network.id;
    expect((await http('GET', `/network/v2.0/networks/${netId}`, aliceToken)).status).toBe(404);
    expect((await http('DELETE', `/network/v2.0/networks/${netId}`, aliceToken)).status).toBe(404);
    expect((await http('GET', `/network/v2.0/networks/${netId}`, adminToken)).status).toBe(200);

    const before = await snapshot();
    const flavor = await http('POST', '/compute/v2.1/flavors', aliceToken, JSON.stringify(CREATES[3].body));
    expect(flavor.status, flavor.text).toBe(403);
    const project = await http('POST', '/v3/projects', aliceToken, JSON.stringify(CREATES[0].body));
    expect(project.status, project.text).toBe(403);
    expect(await snapshot()).toEqual(before);
  });
});
