/**
 * Microversion negotiation and the other pure pieces of the compute API: request parsing, Nova's quota
 * wording, the views' version gates.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, NubesError } from '@nubes/core';
import { describe, expect, it } from 'vitest';
import { flavorJson, SEED_FLAVORS } from '../src/compute/flavors.js';
import { hypervisorIntId, hypervisorUuid } from '../src/compute/hypervisors.js';
import {
  MAX_MICROVERSION,
  MIN_MICROVERSION,
  Microversion,
  negotiate,
  versionHeaders,
} from '../src/compute/microversion.js';
import { type ServerRecord, serverKey } from '../src/compute/model.js';
import { novaQuotaError, parseQuotaSetUpdate } from '../src/compute/quota-sets.js';
import { parseServerGroupCreate, serverGroupJson } from '../src/compute/server-groups.js';
import { parseServerCreate } from '../src/compute/server-input.js';
import { type ComputeParts, Servers } from '../src/compute/servers.js';

const v = (s: string) => Microversion.parse(s) as Microversion;

describe('microversion negotiation', () => {
  it('serves 2.1 without a header and the maximum for latest', () => {
    expect(negotiate({})).toEqual({ ok: true, version: MIN_MICROVERSION });
    expect(negotiate({ 'openstack-api-version': 'compute latest' })).toEqual({
      ok: true,
      version: MAX_MICROVERSION,
    });
    expect(String(MAX_MICROVERSION)).toBe('2.73');
  });

  it('reads the compute entry of OpenStack-API-Version before the legacy header', () => {
    const r = negotiate({
      'openstack-api-version': 'image 2.5, compute 2.61',
      'x-openstack-nova-api-version': '2.3',
    });
    expect(r.ok && String(r.version)).toBe('2.61');
    const legacy = negotiate({ 'x-openstack-nova-api-version': '2.47' });
    expect(legacy.ok && String(legacy.version)).toBe('2.47');
    // A header for another service only: the legacy one (or the default) decides.
    const other = negotiate({ 'openstack-api-version': 'volume 3.5' });
    expect(other.ok && String(other.version)).toBe('2.1');
  });

  it('answers 406 (not ok) outside the range and InvalidInput for a malformed string', () => {
    const r = negotiate({ 'openstack-api-version': 'compute 2.200' });
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.message).toBe(
        'Version 2.200 is not supported by the API. Minimum is 2.1 and maximum is 2.73.',
      );
    expect(negotiate({ 'x-openstack-nova-api-version': '3.0' }).ok).toBe(false);
    expect(negotiate({ 'x-openstack-nova-api-version': '2.0' }).ok).toBe(false);
    for (const bad of ['2', 'two.one', '2.01', '-2.1'])
      expect(() => negotiate({ 'x-openstack-nova-api-version': bad })).toThrow(/invalid format/);
  });

  it('compares versions numerically and echoes them in headers with Vary', () => {
    expect(v('2.10').atLeast('2.9')).toBe(true);
    expect(v('2.9').atLeast('2.10')).toBe(false);
    expect(versionHeaders(v('2.64'))).toEqual({
      'openstack-api-version': 'compute 2.64',
      'x-openstack-nova-api-version': '2.64',
      vary: 'OpenStack-API-Version, X-OpenStack-Nova-API-Version',
    });
  });
});

describe('version-gated views', () => {
  it('shows flavor extra_specs from 2.61 and description from 2.55', () => {
    const f = {
      ...(SEED_FLAVORS[0] as (typeof SEED_FLAVORS)[number]),
      ephemeralGiB: 0,
      swapMiB: 0,
      rxtxFactor: 1,
      isPublic: true,
      disabled: false,
      description: null,
      created: '',
    };
    expect(flavorJson(f, 'http://x', v('2.1'), true)).not.toHaveProperty('extra_specs');
    expect(flavorJson(f, 'http://x', v('2.1'), true)).toMatchObject({ ram: 128, swap: '' });
    expect(flavorJson(f, 'http://x', v('2.61'), true)).toMatchObject({ extra_specs: {}, description: null });
  });

  it('takes server group policies before 2.64 and policy after', () => {
    expect(parseServerGroupCreate({ name: 'g', policies: ['anti-affinity'] }, v('2.1')).policy).toBe(
      'anti-affinity',
    );
    expect(() => parseServerGroupCreate({ name: 'g', policies: ['soft-affinity'] }, v('2.14'))).toThrow(
      /policies/,
    );
    expect(parseServerGroupCreate({ name: 'g', policy: 'soft-affinity' }, v('2.64')).policy).toBe(
      'soft-affinity',
    );
    expect(() =>
      parseServerGroupCreate({ name: 'g', policy: 'affinity', rules: { max_server_per_host: 2 } }, v('2.64')),
    ).toThrow(/anti-affinity/);
    const g = {
      id: 'x',
      name: 'g',
      policy: 'affinity' as const,
      rules: {},
      projectId: 'p',
      userId: 'u',
      members: [],
      created: '',
    };
    expect(serverGroupJson(g, v('2.1'))).toEqual({
      id: 'x',
      name: 'g',
      policies: ['affinity'],
      metadata: {},
      members: [],
    });
    expect(serverGroupJson(g, v('2.64'))).toMatchObject({ policy: 'affinity', rules: {}, project_id: 'p' });
  });

  it('derives stable hypervisor ids', () => {
    expect(hypervisorIntId('cn-1')).toBe(hypervisorIntId('cn-1'));
    expect(hypervisorIntId('cn-1')).not.toBe(hypervisorIntId('cn-2'));
    expect(hypervisorUuid('cn-1')).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
  });
});

describe('server create input', () => {
  const image = '3f1c9a4e-0e3b-4c57-9d3b-7d5f3a1e2b10';
  const field = (fn: () => unknown) => {
    try {
      fn();
    } catch (error) {
      return error instanceof NubesError ? error.details.field : error;
    }
    return undefined;
  };

  it('names the field of every refusal', () => {
    const ok = { name: 'vm', imageRef: image, flavorRef: '42' };
    expect(field(() => parseServerCreate({}, v('2.1')))).toBe('server');
    expect(field(() => parseServerCreate({ server: { ...ok, flavorRef: undefined } }, v('2.1')))).toBe(
      'server.flavorRef',
    );
    expect(field(() => parseServerCreate({ server: { ...ok, imageRef: 'nope' } }, v('2.1')))).toBe(
      'server.imageRef',
    );
    expect(field(() => parseServerCreate({ server: { ...ok, networks: [{ uuid: 'bad' }] } }, v('2.1')))).toBe(
      'server.networks.0.uuid',
    );
    expect(field(() => parseServerCreate({ server: { ...ok, networks: 'auto' } }, v('2.1')))).toBe(
      'server.networks',
    );
    expect(field(() => parseServerCreate({ server: ok }, v('2.37')))).toBe('server.networks');
    expect(field(() => parseServerCreate({ server: { ...ok, min_count: 3, max_count: 2 } }, v('2.1')))).toBe(
      'server.min_count',
    );
    expect(field(() => parseServerCreate({ server: { ...ok, bogus: 1 } }, v('2.1')))).toBe('server.bogus');
    expect(
      field(() => parseServerCreate({ server: ok, 'os:scheduler_hints': { group: 'x' } }, v('2.1'))),
    ).toBe('os:scheduler_hints.group');
  });

  it('normalizes ids: networks to 32 hex digits, images and groups dashed', () => {
    const net = 'ABCDEF0123456789abcdef0123456789';
    const req = parseServerCreate(
      {
        server: { name: 'vm', imageRef: image.replaceAll('-', ''), flavorRef: 42, networks: [{ uuid: net }] },
        'os:scheduler_hints': { group: image },
      },
      v('2.1'),
    );
    expect(req).toMatchObject({
      imageRef: image,
      flavorRef: '42',
      networks: [{ networkId: net.toLowerCase() }],
      hints: { group: image },
      minCount: 1,
      maxCount: 1,
    });
  });
});

describe('quota sets', () => {
  it("rewrites QuotaExceeded in Nova's words", () => {
    const error = new NubesError('QuotaExceeded', 'quota exceeded for project p', {
      details: {
        project: 'p',
        resources: [
          {
            resource: 'instances',
            project: 'p',
            scope: 'project',
            requested: 1,
            inUse: 1,
            reserved: 1,
            limit: 2,
          },
        ],
      },
    });
    const nova = novaQuotaError(error) as NubesError;
    expect(nova.message).toBe('Quota exceeded for instances: Requested 1, but already used 2 of 2 instances');
    expect(nova.httpStatus).toBe(403);
  });

  it('maps Nova names to Quota resources and refuses unknown ones', () => {
    expect(parseQuotaSetUpdate({ instances: 2, cores: '4', ram: -1, force: true }, v('2.1'))).toEqual({
      limits: { instances: 2, vcpus: 4, memoryMiB: -1 },
      force: true,
    });
    expect(() => parseQuotaSetUpdate({ floating_ips: 2 }, v('2.36'))).toThrow(/floating_ips/);
    expect(() => parseQuotaSetUpdate({ instances: -2 }, v('2.1'))).toThrow(/instances/);
  });
});

describe('console output', () => {
  it('tails the log the agent writes by lines', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nubes-console-'));
    const store = new MemoryStore();
    try {
      const id = '5d9f1c2e-7a41-4b6e-9a0e-2f4c8d1b3e55';
      const record = { id, host: 'cn-1', status: 'ACTIVE', task: null } as unknown as ServerRecord;
      await store.put(serverKey(id), JSON.parse(JSON.stringify(record)));
      const servers = new Servers(
        { store, dataDir: dir } as unknown as ComputeParts,
        undefined as never,
        undefined as never,
      );
      expect(await servers.consoleOutput(id, 2)).toBe('');
      mkdirSync(join(dir, 'instances', id), { recursive: true });
      writeFileSync(join(dir, 'instances', id, 'console.log'), 'one\ntwo\nthree\n');
      expect(await servers.consoleOutput(id, 2)).toBe('two\nthree\n');
      expect(await servers.consoleOutput(id, undefined)).toBe('one\ntwo\nthree\n');
      expect(await servers.consoleOutput(id, 0)).toBe('');
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
