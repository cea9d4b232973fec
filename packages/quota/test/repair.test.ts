import type { Store } from '@nubes/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { Quota } from '../src/index.js';
import { findDrift, findTotalsDrift } from '../src/repair.js';
import { describeBackends } from './backends.js';
import { expectError } from './helpers.js';

describe('findDrift', () => {
  it('compares only the counted resources', () => {
    expect(findDrift('p', { vcpus: 4, instances: 2 }, { vcpus: 6 })).toEqual([
      { project: 'p', resource: 'vcpus', counter: 'inUse', recorded: 4, actual: 6 },
    ]);
    expect(findDrift('p', { vcpus: 4 }, { vcpus: 4, instances: 0 })).toEqual([]);
  });

  it('reports children totals that disagree', () => {
    expect(
      findTotalsDrift(
        'org',
        { inUse: { vcpus: 3 }, reserved: {} },
        { inUse: { vcpus: 5 }, reserved: { vcpus: 1 } },
      ),
    ).toEqual([
      { project: 'org', resource: 'vcpus', counter: 'children.inUse', recorded: 3, actual: 5 },
      { project: 'org', resource: 'vcpus', counter: 'children.reserved', recorded: 0, actual: 1 },
    ]);
  });
});

describeBackends('drift repair', (backend) => {
  let store: Store;
  let n = 0;

  beforeAll(() => {
    store = backend.open();
  });

  it('recomputes usage from the real counts and reports what it fixed', async () => {
    const quota = new Quota(store, { keyPrefix: `rp${n++}/` });
    await quota.commit(await quota.reserve('p1', { instances: 3, vcpus: 6 }));
    await quota.commit(await quota.reserve('p2', { instances: 1, vcpus: 2 }));
    // What the compute service really has: p1 lost an instance whose release never came; p3 was never charged.
    const real: Record<string, Record<string, number>> = {
      p1: { instances: 2, vcpus: 4 },
      p2: { instances: 1, vcpus: 2 },
      p3: { instances: 1, vcpus: 1 },
    };
    const report = await quota.repair((p) => real[p] ?? {}, { projects: ['p1', 'p2', 'p3'] });
    expect(report.checked).toBe(3);
    expect(report.skipped).toEqual([]);
    expect(report.fixed).toEqual([
      { project: 'p1', resource: 'instances', counter: 'inUse', recorded: 3, actual: 2 },
      { project: 'p1', resource: 'vcpus', counter: 'inUse', recorded: 6, actual: 4 },
      { project: 'p3', resource: 'instances', counter: 'inUse', recorded: 0, actual: 1 },
      { project: 'p3', resource: 'vcpus', counter: 'inUse', recorded: 0, actual: 1 },
    ]);
    expect((await quota.usage('p1')).resources.instances?.inUse).toBe(2);
    expect((await quota.usage('p3')).resources.vcpus?.inUse).toBe(1);
    expect((await quota.repair((p) => real[p] ?? {})).fixed).toEqual([]);
  });

  it('skips projects with pending reservations and leaves uncounted resources alone', async () => {
    const quota = new Quota(store, { keyPrefix: `rp${n++}/` });
    await quota.commit(await quota.reserve('p1', { instances: 1, volumes: 2 }));
    await quota.reserve('p2', { instances: 1 });
    const report = await quota.repair(() => ({ instances: 5 }));
    expect(report.skipped).toEqual([{ project: 'p2', reason: 'reservations pending' }]);
    expect((await quota.usage('p1')).resources.instances?.inUse).toBe(5);
    expect((await quota.usage('p1')).resources.volumes?.inUse).toBe(2);
  });

  it('rejects counts of unknown resources without changing anything', async () => {
    const quota = new Quota(store, { keyPrefix: `rp${n++}/` });
    await quota.commit(await quota.reserve('p1', { instances: 1 }));
    await expectError(
      quota.repair(() => ({ widgets: 3 })),
      'InvalidInput',
      'counts.widgets',
    );
    await expectError(
      quota.repair(() => ({ instances: -3 })),
      'InvalidInput',
      'counts.instances',
    );
    expect((await quota.usage('p1')).resources.instances?.inUse).toBe(1);
  });

  it('repairs a strict parent total that went wrong, and child fixes reach the parent', async () => {
    const keyPrefix = `rp${n++}/`;
    const quota = new Quota(store, { keyPrefix });
    await quota.setEnforcementModel('strict-two-level');
    await quota.setParent('team', 'org');
    await quota.commit(await quota.reserve('team', { vcpus: 4 }));
    // Simulate a bug or a hand edit that broke the stored total.
    const key = `${keyPrefix}projects/org`;
    const org = await store.get<Record<string, unknown>>(key);
    await store.put(key, { ...(org?.value ?? {}), children: { inUse: { vcpus: 1 }, reserved: {} } });
    const report = await quota.repair(() => ({ vcpus: 4 }), { projects: ['team'] });
    expect(report.fixed).toEqual([
      { project: 'org', resource: 'vcpus', counter: 'children.inUse', recorded: 1, actual: 4 },
    ]);
    await quota.repair((p): Record<string, number> => (p === 'team' ? { vcpus: 7 } : {}), {
      projects: ['team'],
    });
    expect((await quota.treeUsage('org')).total.vcpus).toMatchObject({ inUse: 7 });
    expect((await quota.repair(() => ({}))).fixed).toEqual([]);
  });
});
