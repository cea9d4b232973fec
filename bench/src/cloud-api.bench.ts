import { once } from 'node:events';
import { Agent, createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SqliteStore } from '@nubes/core';
import { ReferenceCloud } from '../../examples/reference-cloud/src/cloud.js';
import { type ServerRecord, serverKey } from '../../examples/reference-cloud/src/compute/model.js';
import { type BenchGroup, defineBenchmarks } from './harness.js';

// The reference cloud's API hot path, as the openstack CLI drives it: a token validated, a server list
// answered. The reference is a bare node:http server sending the very same response bytes without doing
// anything, through the same client with the same concurrency: the ratio is what authentication, policy,
// the Store reads and JSON rendering cost on top of node:http itself.

const CONCURRENCY = 16;
const SERVERS = 20;
const ADMIN = { user: 'admin', password: 'bench-admin-pw', project: 'admin' };

interface Reply {
  status: number;
  body: Buffer;
  headers: Record<string, string>;
}

function call(
  agent: Agent,
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks),
          headers: Object.fromEntries(Object.entries(res.headers).map(([k, v]) => [k, String(v)])),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A server that answers every request with `reply` and does nothing else. */
async function bareServer(reply: Reply): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => {
    res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': reply.body.length });
    res.end(reply.body);
  });
  server.keepAliveTimeout = 5000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

/** `CONCURRENCY` requests in flight at once: one bench run. */
function burst(agent: Agent, port: number, path: string, headers: Record<string, string>, expect: number) {
  return async (): Promise<void> => {
    const replies = await Promise.all(
      Array.from({ length: CONCURRENCY }, () => call(agent, port, 'GET', path, headers)),
    );
    for (const r of replies) if (r.status !== expect) throw new Error(`${path}: HTTP ${r.status} ${r.body}`);
  };
}

export default defineBenchmarks({
  name: `Reference cloud API hot path: token validation and a ${SERVERS}-server list, ${CONCURRENCY} requests in flight, against a bare node:http server sending the same bytes`,
  async setup(context) {
    const store = new SqliteStore({ path: join(context.tmpDir, 'cloud-api.db'), durability: 'normal' });
    const cloud = await ReferenceCloud.open({
      store,
      dataDir: join(context.tmpDir, 'cloud-api-data'),
      admin: ADMIN,
    });
    const port = await cloud.listen(0);
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const login = await call(
      agent,
      port,
      'POST',
      '/v3/auth/tokens',
      { 'content-type': 'application/json' },
      JSON.stringify({
        auth: {
          identity: {
            methods: ['password'],
            password: { user: { name: ADMIN.user, domain: { name: 'Default' }, password: ADMIN.password } },
          },
          scope: { project: { name: ADMIN.project, domain: { name: 'Default' } } },
        },
      }),
    );
    const token = login.headers['x-subject-token'];
    if (login.status !== 201 || !token) throw new Error(`login failed: HTTP ${login.status}`);
    const now = new Date().toISOString();
    for (let i = 0; i < SERVERS; i++) {
      const record: ServerRecord = {
        id: `bench-${String(i).padStart(4, '0')}`,
        name: `web-${i}`,
        projectId: cloud.adminProjectId,
        userId: 'bench',
        flavorId: 'bench',
        flavor: { name: 'm1.nano', vcpus: 1, ramMiB: 128, diskGiB: 1 },
        imageId: 'bench-image',
        status: 'ACTIVE',
        task: null,
        powerState: 1,
        host: `cn-${i % 3}`,
        availabilityZone: 'nova',
        ports: [],
        metadata: {},
        created: now,
        updated: now,
      };
      await store.put(serverKey(record.id), record);
    }
    const auth = { 'x-auth-token': token, 'x-subject-token': token, accept: 'application/json' };
    const listPath = '/compute/v2.1/servers/detail';
    const validatePath = '/v3/auth/tokens';
    const validated = await call(agent, port, 'GET', validatePath, auth);
    const listed = await call(agent, port, 'GET', listPath, auth);
    if (validated.status !== 200 || listed.status !== 200)
      throw new Error(`warm-up failed: validate ${validated.status}, list ${listed.status} ${listed.body}`);
    const bareValidate = await bareServer(validated);
    const bareList = await bareServer(listed);
    const groups: BenchGroup[] = [
      {
        name: 'token validation (GET /v3/auth/tokens)',
        cases: [
          {
            name: 'bare node:http, same bytes',
            fn: burst(agent, bareValidate.port, validatePath, auth, 200),
            opsPerRun: CONCURRENCY,
            reference: true,
          },
          {
            name: 'reference cloud',
            fn: burst(agent, port, validatePath, auth, 200),
            opsPerRun: CONCURRENCY,
          },
        ],
      },
      {
        name: `server list (GET /servers/detail, ${SERVERS} servers)`,
        cases: [
          {
            name: 'bare node:http, same bytes',
            fn: burst(agent, bareList.port, listPath, auth, 200),
            opsPerRun: CONCURRENCY,
            reference: true,
          },
          { name: 'reference cloud', fn: burst(agent, port, listPath, auth, 200), opsPerRun: CONCURRENCY },
        ],
      },
    ];
    return {
      groups,
      async teardown() {
        agent.destroy();
        bareValidate.server.close();
        bareList.server.close();
        await cloud.close();
        await store.close();
      },
    };
  },
});
