import type { Store } from '@nubes/core';
import { beforeAll, expect, it } from 'vitest';
import { Quota } from '../src/index.js';
import { describeBackends, fakeClock, startWorker } from './backends.js';
import { expectError } from './helpers.js';

describeBackends('sweeper', (backend) => {
  let store: Store;
  let n = 0;

  beforeAll(() => {
    store = backend.open();
  });

  it('expires reservations past their ttl and releases their amounts', async () => {
    const clock = fakeClock();
    const quota = new Quota(store, { keyPrefix: `sw${n++}/`, now: clock.now });
    await quota.setLimits('p1', { vcpus: 10 });
    const early = await quota.reserve('p1', { vcpus: 4 }, { ttlMs: 1000 });
    const late = await quota.reserve('p1', { vcpus: 6 }, { ttlMs: 5000 });
    await expectError(quota.reserve('p1', { vcpus: 1 }), 'QuotaExceeded');
    clock.advance(999);
    expect((await quota.sweep()).expired).toEqual([]);
    clock.advance(1);
    expect((await quota.sweep()).expired).toEqual([early]);
    expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ reserved: 6, available: 4 });
    await quota.commit(late);
    clock.advance(10_000);
    expect((await quota.sweep()).expired).toEqual([]);
    expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ inUse: 6, reserved: 0 });
    // The caller that held `early` learns what happened when it finally settles.
    await expectError(quota.commit(early), 'Conflict');
    expect(await quota.rollback(early)).toMatchObject({ outcome: 'expired', replayed: true });
  });

  it('forgets idempotency receipts after their retention', async () => {
    const clock = fakeClock();
    const quota = new Quota(store, { keyPrefix: `sw${n++}/`, now: clock.now, receiptTtlMs: 60_000 });
    const id = await quota.reserve('p1', { vcpus: 1 }, { idempotencyKey: 'k1' });
    await quota.commit(id);
    await quota.release('p1', { vcpus: 1 }, { idempotencyKey: 'k2' });
    expect((await quota.sweep()).forgotten).toBe(0);
    clock.advance(60_000);
    expect((await quota.sweep()).forgotten).toBe(3);
    await expectError(quota.commit(id), 'NotFound');
  });

  it('a background sweeper reclaims reservations on its own', async () => {
    const clock = fakeClock();
    const quota = new Quota(store, { keyPrefix: `sw${n++}/`, now: clock.now });
    await quota.reserve('p1', { instances: 10 }, { ttlMs: 50 });
    const errors: unknown[] = [];
    const sweeper = quota.startSweeper({ intervalMs: 10, onError: (e) => errors.push(e) });
    clock.advance(50);
    for (let i = 0; i < 200 && (await quota.usage('p1')).resources.instances?.reserved !== 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await sweeper.stop();
    expect((await quota.usage('p1')).resources.instances?.reserved).toBe(0);
    expect(errors).toEqual([]);
  });

  // A MemoryStore cannot be shared with another process.
  it.skipIf(backend.name === 'memory')(
    'a process killed between reserve and commit leaves a reservation that expires and is reclaimed',
    async () => {
      const args = backend.processArgs(store) as string[];
      const keyPrefix = `crash${n++}/`;
      const worker = startWorker(['hang', ...args, keyPrefix, 'p1', '1000']);
      const line = await worker.waitFor((l) => l.startsWith('reserved '));
      worker.kill();
      await worker.done.catch(() => {});
      const id = line.slice('reserved '.length);
      // Our clock runs 2 s ahead of the dead worker's: its 1 s ttl has passed without waiting for it.
      const quota = new Quota(store, { keyPrefix, now: () => Date.now() + 2000 });
      expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ reserved: 4 });
      expect((await quota.sweep()).expired).toEqual([id]);
      expect((await quota.usage('p1')).resources.vcpus).toMatchObject({ inUse: 0, reserved: 0 });
      expect((await quota.usage('p1')).resources.instances).toMatchObject({ inUse: 0, reserved: 0 });
    },
  );
});
