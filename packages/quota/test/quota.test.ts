import type { Store } from '@nubes/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { Quota } from '../src/index.js';
import { describeBackends, fakeClock } from './backends.js';
import { expectError } from './helpers.js';

describeBackends('Quota', (backend) => {
  let store: Store;
  let n = 0;
  const clock = fakeClock();
  // One store per backend, one key prefix per test: separate quota domains without a table per test.
  const fresh = () => new Quota(store, { keyPrefix: `q${n++}/`, now: clock.now });

  beforeAll(() => {
    store = backend.open();
  });

  describe('reserve, commit, rollback', () => {
    it('holds amounts while reserved, turns them into usage on commit', async () => {
      const quota = fresh();
      await quota.setLimits('p1', { vcpus: 8, instances: 2 });
      const id = await quota.reserve('p1', { instances: 1, vcpus: 4 });
      let report = await quota.usage('p1');
      expect(report.resources.vcpus).toEqual({ limit: 8, inUse: 0, reserved: 4, available: 4 });
      const settlement = await quota.commit(id);
      expect(settlement).toMatchObject({
        reservation: id,
        project: 'p1',
        outcome: 'committed',
        replayed: false,
      });
      report = await quota.usage('p1');
      expect(report.resources.vcpus).toEqual({ limit: 8, inUse: 4, reserved: 0, available: 4 });
      expect(report.resources.instances).toEqual({ limit: 2, inUse: 1, reserved: 0, available: 1 });
      expect(report.resources.volumes).toEqual({ limit: 10, inUse: 0, reserved: 0, available: 10 });
    });

    it('gives the amounts back on rollback', async () => {
      const quota = fresh();
      const id = await quota.reserve('p1', { vcpus: 20 });
      await expectError(quota.reserve('p1', { vcpus: 1 }), 'QuotaExceeded');
      expect(await quota.rollback(id)).toMatchObject({ outcome: 'rolledBack', replayed: false });
      expect((await quota.usage('p1')).resources.vcpus).toMatchObject({
        inUse: 0,
        reserved: 0,
        available: 20,
      });
      await quota.reserve('p1', { vcpus: 20 });
    });

    it('throws QuotaExceeded naming every resource that did not fit, and changes nothing', async () => {
      const quota = fresh();
      await quota.setLimits('p1', { vcpus: 8, memoryMiB: 4096, instances: 5 });
      await quota.commit(await quota.reserve('p1', { vcpus: 6, memoryMiB: 1024 }));
      await quota.reserve('p1', { memoryMiB: 2048 });
      const before = await store.revision();
      const error = await expectError(
        quota.reserve('p1', { instances: 1, vcpus: 4, memoryMiB: 2048 }),
        'QuotaExceeded',
      );
      expect(await store.revision()).toBe(before);
      expect(error.httpStatus).toBe(403);
      expect(error.details).toEqual({
        project: 'p1',
        resources: [
          {
            resource: 'vcpus',
            project: 'p1',
            scope: 'project',
            requested: 4,
            inUse: 6,
            reserved: 0,
            limit: 8,
          },
          {
            resource: 'memoryMiB',
            project: 'p1',
            scope: 'project',
            requested: 2048,
            inUse: 1024,
            reserved: 2048,
            limit: 4096,
          },
        ],
      });
      expect(error.message).toContain('vcpus: requested 4, in use 6, reserved 0, limit 8');
    });

    it('treats -1 as unlimited, and a limit lowered below usage refuses only what adds to it', async () => {
      const quota = fresh();
      await quota.setLimits('p1', { vcpus: -1 });
      await quota.commit(await quota.reserve('p1', { vcpus: 1_000_000 }));
      expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ limit: -1, available: -1 });
      await quota.setLimits('p1', { vcpus: 10 });
      expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ limit: 10, available: 0 });
      await expectError(quota.reserve('p1', { vcpus: 1 }), 'QuotaExceeded');
      await quota.reserve('p1', { vcpus: 0, instances: 1 });
      await quota.setLimits('p1', { vcpus: null });
      expect((await quota.limits('p1')).vcpus).toBe(20);
    });

    it('check reports the headroom of every resource without holding anything', async () => {
      const quota = fresh();
      await quota.setLimits('p1', { vcpus: 8 });
      await quota.reserve('p1', { vcpus: 3 });
      const result = await quota.check('p1', { vcpus: 6, instances: 1 });
      expect(result.fits).toBe(false);
      expect(result.checks).toEqual([
        {
          resource: 'vcpus',
          project: 'p1',
          scope: 'project',
          requested: 6,
          inUse: 0,
          reserved: 3,
          limit: 8,
          available: 5,
          fits: false,
        },
        {
          resource: 'instances',
          project: 'p1',
          scope: 'project',
          requested: 1,
          inUse: 0,
          reserved: 0,
          limit: 10,
          available: 10,
          fits: true,
        },
      ]);
      expect(result.failures.map((f) => f.resource)).toEqual(['vcpus']);
      expect((await quota.check('p1', { vcpus: 5 })).fits).toBe(true);
      expect((await quota.usage('p1')).resources.vcpus?.reserved).toBe(3);
    });

    it('releases usage when resources are deleted, never below zero', async () => {
      const quota = fresh();
      await quota.commit(await quota.reserve('p1', { instances: 2, vcpus: 4 }));
      expect(await quota.release('p1', { instances: 1, vcpus: 6 })).toEqual({
        project: 'p1',
        released: { instances: 1, vcpus: 4 },
        clamped: { vcpus: 2 },
        replayed: false,
      });
      expect((await quota.usage('p1')).resources.vcpus?.inUse).toBe(0);
      expect((await quota.usage('p1')).resources.instances?.inUse).toBe(1);
    });

    it('refuses to commit a reservation past its ttl and releases it', async () => {
      const quota = fresh();
      const id = await quota.reserve('p1', { vcpus: 4 }, { ttlMs: 1000 });
      clock.advance(1000);
      const error = await expectError(quota.commit(id), 'Conflict');
      expect(error.details).toMatchObject({ reservation: id, outcome: 'expired' });
      expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ inUse: 0, reserved: 0 });
      expect(await quota.rollback(id)).toMatchObject({ outcome: 'expired', replayed: true });
    });

    it('registers custom resources with their defaults', async () => {
      const quota = fresh();
      await expectError(quota.reserve('p1', { gpus: 1 }), 'InvalidInput', 'deltas.gpus');
      await quota.registerResources({ gpus: 2, instances: 1 });
      expect(await quota.defaults()).toMatchObject({ gpus: 2, instances: 1, vcpus: 20 });
      await quota.reserve('p1', { gpus: 2, instances: 1 });
      const error = await expectError(quota.reserve('p1', { gpus: 1, instances: 1 }), 'QuotaExceeded');
      expect((error.details.resources as { resource: string }[]).map((r) => r.resource)).toEqual([
        'gpus',
        'instances',
      ]);
    });
  });

  describe('bad input', () => {
    it('is InvalidInput naming the field, and nothing changes', async () => {
      const quota = fresh();
      const id = await quota.reserve('p1', { vcpus: 1 });
      const before = await store.revision();
      await expectError(quota.reserve('p1', { vcpus: -1 }), 'InvalidInput', 'deltas.vcpus');
      await expectError(quota.reserve('p1', { vcpus: 1.5 }), 'InvalidInput', 'deltas.vcpus');
      await expectError(quota.reserve('p1', { vcpus: Number.NaN }), 'InvalidInput', 'deltas.vcpus');
      await expectError(
        quota.reserve('p1', { instances: 1, nonsense: 1 }),
        'InvalidInput',
        'deltas.nonsense',
      );
      await expectError(quota.reserve('p1', { 'bad name': 1 }), 'InvalidInput');
      await expectError(quota.reserve('p/1', { vcpus: 1 }), 'InvalidInput', 'project');
      await expectError(quota.reserve('p1', { vcpus: 1 }, { ttlMs: 0 }), 'InvalidInput', 'options.ttlMs');
      await expectError(quota.reserve('p1', { vcpus: 1 }, { ttl: 5 } as never), 'InvalidInput', 'options');
      await expectError(quota.release('p1', { vcpus: -2 }), 'InvalidInput', 'deltas.vcpus');
      await expectError(quota.release('p1', { widgets: 2 }), 'InvalidInput', 'deltas.widgets');
      await expectError(quota.check('p1', { widgets: 2 }), 'InvalidInput', 'deltas.widgets');
      await expectError(quota.setLimits('p1', { vcpus: -2 }), 'InvalidInput', 'limits.vcpus');
      await expectError(quota.setLimits('p1', { vcpus: 2.5 }), 'InvalidInput', 'limits.vcpus');
      await expectError(quota.setLimits('p1', { widgets: 5 }), 'InvalidInput', 'limits.widgets');
      await expectError(quota.registerResources({ widgets: -5 }), 'InvalidInput', 'defaults.widgets');
      await expectError(quota.setEnforcementModel('hierarchical' as never), 'InvalidInput', 'model');
      await expectError(quota.commit('not-a-reservation'), 'InvalidInput', 'reservation');
      await expectError(quota.setParent('p1', 'p1'), 'InvalidInput', 'parent');
      expect(() => new Quota(store, { keyPrefix: 'no-slash' })).toThrow(/keyPrefix/);
      expect(await store.revision()).toBe(before);
      expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ reserved: 1 });
      await quota.commit(id);
    });

    it('an unknown reservation is NotFound', async () => {
      const quota = fresh();
      await expectError(quota.commit('00000000-0000-4000-8000-000000000000'), 'NotFound');
      await expectError(quota.rollback('00000000-0000-4000-8000-000000000000'), 'NotFound');
    });
  });

  describe('idempotency', () => {
    it('applies a retried commit once and refuses to settle it the other way', async () => {
      const quota = fresh();
      const id = await quota.reserve('p1', { vcpus: 4 });
      await quota.commit(id);
      expect(await quota.commit(id)).toMatchObject({
        outcome: 'committed',
        replayed: true,
        deltas: { vcpus: 4 },
      });
      expect((await quota.usage('p1')).resources.vcpus?.inUse).toBe(4);
      await expectError(quota.rollback(id), 'Conflict');
      const other = await quota.reserve('p1', { vcpus: 1 });
      await quota.rollback(other);
      expect(await quota.rollback(other)).toMatchObject({ outcome: 'rolledBack', replayed: true });
      await expectError(quota.commit(other), 'Conflict');
    });

    it('returns the same reservation for a retried reserve with the same key', async () => {
      const quota = fresh();
      const a = await quota.reserve('p1', { vcpus: 4 }, { idempotencyKey: 'create-vm-42' });
      const b = await quota.reserve('p1', { vcpus: 4 }, { idempotencyKey: 'create-vm-42' });
      expect(b).toBe(a);
      expect((await quota.usage('p1')).resources.vcpus?.reserved).toBe(4);
      const error = await expectError(
        quota.reserve('p1', { vcpus: 5 }, { idempotencyKey: 'create-vm-42' }),
        'Conflict',
      );
      expect(error.details.field).toBe('options.idempotencyKey');
    });

    it('applies a retried release once', async () => {
      const quota = fresh();
      await quota.commit(await quota.reserve('p1', { instances: 3 }));
      const first = await quota.release('p1', { instances: 1 }, { idempotencyKey: 'delete-vm-7' });
      const again = await quota.release('p1', { instances: 1 }, { idempotencyKey: 'delete-vm-7' });
      expect(first.replayed).toBe(false);
      expect(again).toEqual({ ...first, replayed: true });
      expect((await quota.usage('p1')).resources.instances?.inUse).toBe(2);
      await expectError(quota.release('p2', { instances: 1 }, { idempotencyKey: 'delete-vm-7' }), 'Conflict');
    });
  });

  describe('hierarchy', () => {
    it('strict two-level: a child counts against its parent, and the children never exceed it', async () => {
      const quota = fresh();
      await quota.setEnforcementModel('strict-two-level');
      await quota.setLimits('org', { vcpus: 10 });
      await quota.setLimits('team-a', { vcpus: 8 });
      await quota.setLimits('team-b', { vcpus: 8 });
      await quota.setParent('team-a', 'org');
      await quota.setParent('team-b', 'org');
      await quota.commit(await quota.reserve('team-a', { vcpus: 6 }));
      await quota.reserve('org', { vcpus: 1 });
      const error = await expectError(quota.reserve('team-b', { vcpus: 4 }), 'QuotaExceeded');
      expect(error.details.resources).toEqual([
        { resource: 'vcpus', project: 'org', scope: 'tree', requested: 4, inUse: 6, reserved: 1, limit: 10 },
      ]);
      await quota.reserve('team-b', { vcpus: 3 });
      expect((await quota.usage('team-b')).resources.vcpus).toMatchObject({
        limit: 8,
        reserved: 3,
        available: 0,
      });
      await expectError(quota.reserve('org', { vcpus: 1 }), 'QuotaExceeded');
      const tree = await quota.treeUsage('org');
      expect(tree.total.vcpus).toEqual({ limit: 10, inUse: 6, reserved: 4, available: 0 });
      expect(
        tree.children.map((c) => [c.project, c.resources.vcpus?.inUse, c.resources.vcpus?.reserved]),
      ).toEqual([
        ['team-a', 6, 0],
        ['team-b', 0, 3],
      ]);
      expect(tree.parent.resources.vcpus).toMatchObject({ inUse: 0, reserved: 1, available: 0 });
    });

    it('flat: a parent limit does not apply to its children', async () => {
      const quota = fresh();
      expect(await quota.enforcementModel()).toBe('flat');
      await quota.setLimits('org', { vcpus: 4 });
      await quota.setParent('team-a', 'org');
      await quota.setParent('team-b', 'org');
      await quota.commit(await quota.reserve('team-a', { vcpus: 20 }));
      await quota.commit(await quota.reserve('team-b', { vcpus: 20 }));
      await quota.reserve('org', { vcpus: 4 });
      const tree = await quota.treeUsage('org');
      expect(tree.total.vcpus).toEqual({ limit: -1, inUse: 40, reserved: 4, available: -1 });
    });

    it('switching to strict rebuilds the tree totals from existing usage', async () => {
      const quota = fresh();
      await quota.setParent('team-a', 'org');
      await quota.commit(await quota.reserve('team-a', { vcpus: 15 }));
      await quota.setEnforcementModel('strict-two-level');
      await expectError(quota.reserve('team-a', { vcpus: 6 }), 'QuotaExceeded');
      await quota.reserve('team-a', { vcpus: 5 });
      await quota.setEnforcementModel('flat');
      await quota.reserve('org', { vcpus: 20 });
    });

    it('keeps trees two levels deep and moves usage with a project that changes parent', async () => {
      const quota = fresh();
      await quota.setEnforcementModel('strict-two-level');
      await quota.setParent('team-a', 'org');
      await expectError(quota.setParent('sub-team', 'team-a'), 'InvalidInput', 'parent');
      await expectError(quota.setParent('org', 'other'), 'InvalidInput', 'parent');
      await quota.setLimits('small', { vcpus: 4 });
      await quota.commit(await quota.reserve('loner', { vcpus: 5 }));
      await expectError(quota.setParent('loner', 'small'), 'QuotaExceeded');
      await quota.setParent('loner', 'org');
      expect((await quota.treeUsage('org')).total.vcpus).toMatchObject({ inUse: 5 });
      await quota.setParent('loner', null);
      expect((await quota.treeUsage('org')).total.vcpus).toMatchObject({ inUse: 0 });
      expect((await quota.treeUsage('org')).children.map((c) => c.project)).toEqual(['team-a']);
    });
  });
});
