import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNubesError, type Store, type WatchEvent } from '../src/index.js';

/** How the conformance suite gets stores of one backend. */
export interface BackendFactory {
  /** A new, empty store. */
  open(): Promise<Store>;
  /** `count` independent stores (separate connections or handles) over the same data as `store`. */
  peers(store: Store, count: number): Promise<Store[]>;
}

/** Reads `count` events from a watch, failing after `timeoutMs`; the watch stays open. */
export async function collect(
  watch: AsyncIterable<WatchEvent>,
  count: number,
  timeoutMs = 15_000,
): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  const iterator = watch[Symbol.asyncIterator]();
  const deadline = Date.now() + timeoutMs;
  while (out.length < count) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`watch delivered ${out.length} of ${count} events`)),
        Math.max(0, deadline - Date.now()),
      );
    });
    const next = await Promise.race([iterator.next(), timeout]).finally(() => clearTimeout(timer));
    if (next.done) break;
    out.push(next.value);
  }
  return out;
}

async function expectCode(promise: Promise<unknown>, code: string, field?: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isNubesError(error), `expected a NubesError ${code}, got ${String(error)}`).toBe(true);
  if (isNubesError(error)) {
    expect(error.code).toBe(code);
    if (field !== undefined) expect(error.details.field).toBe(field);
  }
}

/** The Store contract: every backend must pass all of it. */
export function storeConformance(factory: BackendFactory): void {
  let store: Store;
  const opened: Store[] = [];
  const open = async () => {
    const s = await factory.open();
    opened.push(s);
    return s;
  };

  beforeAll(async () => {
    store = await open();
  });
  afterAll(async () => {
    for (const s of opened) await s.close();
  });

  describe('reads and writes', () => {
    it('reads its own writes with revisions, create revision and version', async () => {
      const s = await open();
      expect(await s.revision()).toBe(0);
      const r1 = await s.put('a/x', { n: 1, tags: ['x'], ok: true, none: null });
      const r2 = await s.put('a/x', { n: 2 });
      expect(r2).toBeGreaterThan(r1);
      const entry = await s.get('a/x');
      expect(entry).toEqual({ key: 'a/x', value: { n: 2 }, revision: r2, createRevision: r1, version: 2 });
      expect(await s.revision()).toBe(r2);
      expect(await s.get('a/missing')).toBeUndefined();
    });

    it('deletes, and a recreated key starts a new life', async () => {
      const s = await open();
      await s.put('k', 1);
      expect(await s.delete('k')).toBe(true);
      expect(await s.get('k')).toBeUndefined();
      expect(await s.delete('k')).toBe(false);
      const r = await s.put('k', 'again');
      expect(await s.get('k')).toMatchObject({ value: 'again', createRevision: r, version: 1 });
    });

    it('lists by prefix in UTF-8 byte order, page by page', async () => {
      const s = await open();
      const keys = ['p/b', 'p/a', 'p/ä', 'p/Z', 'p/😀', 'p/\uffee', 'p/a/deeper', 'pa', 'p'];
      for (const key of keys) await s.put(key, key);
      const all = await s.list('p/');
      const expected = keys
        .filter((k) => k.startsWith('p/'))
        .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      expect(all.items.map((e) => e.key)).toEqual(expected);
      expect(all.next).toBeUndefined();
      const pages: string[][] = [];
      let startAfter: string | undefined;
      do {
        const page = await s.list('p/', { limit: 2, ...(startAfter ? { startAfter } : {}) });
        pages.push(page.items.map((e) => e.key));
        startAfter = page.next;
      } while (startAfter);
      expect(pages.flat()).toEqual(expected);
      expect(pages.length).toBe(Math.ceil(expected.length / 2));
      expect((await s.list('')).items.length).toBe(keys.length);
    });

    it('compare-and-put and compare-and-delete refuse stale revisions and change nothing', async () => {
      const s = await open();
      const r1 = await s.put('cas', 1, { ifRevision: 0 });
      await expectCode(s.put('cas', 2, { ifRevision: 0 }), 'Conflict');
      await expectCode(s.put('cas', 2, { ifRevision: r1 + 100 }), 'Conflict');
      await expectCode(s.delete('cas', { ifRevision: r1 + 100 }), 'Conflict');
      expect(await s.get('cas')).toMatchObject({ value: 1, revision: r1 });
      expect(await s.revision()).toBe(r1);
      const r2 = await s.put('cas', 2, { ifRevision: r1 });
      expect(await s.delete('cas', { ifRevision: r2 })).toBe(true);
    });

    it('refuses bad input with InvalidInput naming the field, and writes nothing', async () => {
      const s = await open();
      const before = await s.revision();
      await expectCode(s.put('', 1), 'InvalidInput', 'key');
      await expectCode(s.put('x', undefined as never), 'InvalidInput', 'value');
      await expectCode(s.put('x', { deep: [1, Number.NaN] } as never), 'InvalidInput', 'value.deep.1');
      await expectCode(s.put('x', new Date() as never), 'InvalidInput', 'value');
      await expectCode(s.put('x', 1, { ifRevision: -1 }), 'InvalidInput', 'options.ifRevision');
      await expectCode(s.list('x', { limit: 0 }), 'InvalidInput', 'options.limit');
      await expectCode(s.get('a\0b'), 'InvalidInput', 'key');
      await expectCode(
        s.transaction((tx) => {
          tx.put('ok', 1);
          tx.put('bad', (() => 1) as never);
        }),
        'InvalidInput',
        'value',
      );
      expect(await s.revision()).toBe(before);
      expect(await s.get('ok')).toBeUndefined();
    });
  });

  describe('transactions', () => {
    it('apply every write at one revision', async () => {
      const s = await open();
      await s.transaction(async (tx) => {
        tx.put('t/1', 1);
        tx.put('t/2', 2);
        tx.put('t/3', 3);
      });
      const { items } = await s.list('t/');
      expect(items.map((e) => e.value)).toEqual([1, 2, 3]);
      expect(new Set(items.map((e) => e.revision)).size).toBe(1);
    });

    it('are atomic: a function that throws leaves nothing behind', async () => {
      const s = await open();
      await s.put('t/keep', 'before');
      const before = await s.revision();
      await expect(
        s.transaction(async (tx) => {
          tx.put('t/keep', 'after');
          tx.put('t/new', 1);
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect(await s.get('t/keep')).toMatchObject({ value: 'before' });
      expect(await s.get('t/new')).toBeUndefined();
      expect(await s.revision()).toBe(before);
    });

    it('see their own writes in get and list', async () => {
      const s = await open();
      await s.put('r/a', 'a');
      await s.put('r/b', 'b');
      const seen = await s.transaction(async (tx) => {
        tx.put('r/c', 'c');
        tx.delete('r/a');
        tx.put('r/b', 'B');
        return {
          c: (await tx.get('r/c'))?.value,
          a: await tx.get('r/a'),
          list: (await tx.list('r/')).items.map((e) => `${e.key}=${String(e.value)}`),
        };
      });
      expect(seen).toEqual({ c: 'c', a: undefined, list: ['r/b=B', 'r/c=c'] });
      expect((await s.list('r/')).items.map((e) => e.value)).toEqual(['B', 'c']);
    });

    it('retry when a key they read changed, and give up with Conflict after maxAttempts', async () => {
      const s = await open();
      await s.put('c/x', 0);
      let runs = 0;
      await s.transaction(async (tx) => {
        runs++;
        const x = (await tx.get<number>('c/x'))?.value ?? 0;
        if (runs === 1) await s.put('c/x', 100);
        tx.put('c/x', x + 1);
      });
      expect(runs).toBe(2);
      expect((await s.get('c/x'))?.value).toBe(101);
      await expectCode(
        s.transaction(
          async (tx) => {
            await tx.get('c/x');
            await s.put('c/x', -1);
            tx.put('c/y', 1);
          },
          { maxAttempts: 3 },
        ),
        'Conflict',
      );
      expect(await s.get('c/y')).toBeUndefined();
    });

    it('retry instead of failing when the function threw on a torn read', async () => {
      const s = await open();
      await s.transaction((tx) => {
        tx.put('inv/a', 1);
        tx.put('inv/b', 1);
      });
      let runs = 0;
      const sum = await s.transaction(async (tx) => {
        runs++;
        const a = (await tx.get<number>('inv/a'))?.value;
        if (runs === 1) {
          await s.transaction((other) => {
            other.put('inv/a', 2);
            other.put('inv/b', 2);
          });
        }
        const b = (await tx.get<number>('inv/b'))?.value;
        if (a !== b) throw new Error(`invariant broken: a=${a} b=${b}`);
        return (a as number) + (b as number);
      });
      expect(runs).toBe(2);
      expect(sum).toBe(4);
    });

    it('retry when a range they listed gained a key (no phantoms)', async () => {
      const s = await open();
      await s.put('ph/1', 1);
      let runs = 0;
      const count = await s.transaction(async (tx) => {
        runs++;
        const { items } = await tx.list('ph/');
        if (runs === 1) await s.put('ph/2', 2);
        tx.put('ph-count', items.length);
        return items.length;
      });
      expect(runs).toBe(2);
      expect(count).toBe(2);
    });

    it('are isolated: 64 concurrent increments from separate clients end at exactly 64', async () => {
      const s = await open();
      const clients = await factory.peers(s, 8);
      await Promise.all(
        Array.from({ length: 64 }, (_, i) =>
          (clients[i % clients.length] as Store).transaction(
            async (tx) => {
              const n = (await tx.get<number>('counter'))?.value ?? 0;
              tx.put('counter', n + 1);
            },
            { maxAttempts: 1000 },
          ),
        ),
      );
      const counter = await s.get('counter');
      expect(counter?.value).toBe(64);
      expect(counter?.version).toBe(64);
    });

    it("prevent write skew between two transactions reading each other's keys", async () => {
      const s = await open();
      await s.put('oncall/alice', true);
      await s.put('oncall/bob', true);
      const leave = (who: string) =>
        s.transaction(async (tx) => {
          const { items } = await tx.list('oncall/');
          const on = items.filter((e) => e.value === true);
          await new Promise((r) => setTimeout(r, 20));
          if (on.length >= 2) tx.put(`oncall/${who}`, false);
        });
      await Promise.all([leave('alice'), leave('bob')]);
      const still = (await s.list('oncall/')).items.filter((e) => e.value === true);
      expect(still.length).toBe(1);
    });
  });

  describe('revisions', () => {
    it('increase monotonically across concurrent writers', async () => {
      const s = await open();
      const clients = await factory.peers(s, 4);
      const revisions = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (clients[i % 4] as Store).put(`m/${i}`, i)),
      );
      expect(new Set(revisions).size).toBe(40);
      const sorted = [...revisions].sort((a, b) => a - b);
      expect(sorted[0]).toBe(1);
      expect(sorted.at(-1)).toBe(40);
      expect(await s.revision()).toBe(40);
      const { items } = await s.list('m/');
      for (const item of items) expect(revisions[item.value as number]).toBe(item.revision);
    });
  });

  describe('watch', () => {
    it('delivers every change under the prefix, in order, from concurrent writers', async () => {
      const s = await open();
      const clients = await factory.peers(s, 4);
      const watch = await s.watch('w/');
      const received = collect(watch, 61);
      await s.put('other/ignored', 1);
      await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          (clients[i % 4] as Store).transaction(async (tx) => {
            tx.put(`w/${i % 10}`, i);
          }),
        ),
      );
      await s.delete('w/0');
      const events = await received;
      watch.close();
      expect(events.every((e) => e.key.startsWith('w/'))).toBe(true);
      for (let i = 1; i < events.length; i++) {
        expect((events[i] as WatchEvent).revision).toBeGreaterThan((events[i - 1] as WatchEvent).revision);
      }
      expect(events.slice(0, 60).every((e) => e.type === 'put')).toBe(true);
      expect(events.at(-1)).toMatchObject({ type: 'delete', key: 'w/0' });
      // Replaying from the first revision yields the same history.
      const replay = await s.watch('w/', { fromRevision: (events[0] as WatchEvent).revision });
      expect(await collect(replay, 61)).toEqual(events);
      replay.close();
    });

    it('sees commits made through another client', async () => {
      const s = await open();
      const [other] = await factory.peers(s, 1);
      const watch = await s.watch('x/');
      const received = collect(watch, 3);
      await (other as Store).transaction(async (tx) => {
        tx.put('x/1', 1);
        tx.put('x/2', 2);
      });
      await (other as Store).put('x/1', 'one');
      const events = await received;
      watch.close();
      expect(events.map((e) => [e.key, e.value])).toEqual([
        ['x/1', 1],
        ['x/2', 2],
        ['x/1', 'one'],
      ]);
      expect(events[0]?.revision).toBe(events[1]?.revision);
    });

    it('fails with Gone when asked for compacted history, and close ends iteration', async () => {
      const s = await open();
      await s.put('g/1', 1);
      const r2 = await s.put('g/1', 2);
      await s.put('g/1', 3);
      await s.compact(r2);
      const stale = await s.watch('g/', { fromRevision: 1 });
      await expectCode(stale[Symbol.asyncIterator]().next(), 'Gone');
      const fresh = await s.watch('g/', { fromRevision: r2 + 1 });
      expect(await collect(fresh, 1)).toMatchObject([{ value: 3 }]);
      const idle = await s.watch('g/');
      const pending = idle[Symbol.asyncIterator]().next();
      idle.close();
      expect(await pending).toEqual({ done: true, value: undefined });
      await expectCode(s.compact((await s.revision()) + 5), 'InvalidInput', 'revision');
    });
  });

  it('keeps using the shared store handle', async () => {
    expect(await store.revision()).toBeGreaterThanOrEqual(0);
  });
}
