/**
 * The main demo, for now: open the embedded default Store (a SQLite file), write and read through a
 * transaction, watch the changes arrive, and print what happened. Later issues grow `examples/` into
 * the reference cloud.
 *
 *   npm start -w @nubes/examples                        # state in .nubes/demo.db
 *   NUBES_STORE=memory: npm start -w @nubes/examples    # or sqlite:/path, postgres://...
 */
import { mkdirSync } from 'node:fs';
import { isNubesError, openStore, type WatchEvent } from '@nubes/core';

interface Host {
  name: string;
  capacity: { vcpus: number; memoryMiB: number };
  registeredAt: string;
}

const url = process.env.NUBES_STORE ?? 'sqlite:.nubes/demo.db';
if (url.startsWith('sqlite:.nubes/')) mkdirSync('.nubes', { recursive: true });
const store = openStore(url);
console.log(`opened store ${url} at revision ${await store.revision()}`);

const watch = await store.watch('demo/');
const seen: WatchEvent[] = [];
const watching = (async () => {
  for await (const event of watch) seen.push(event);
})();

// One transaction: count this run and register a host, atomically.
const run = await store.transaction(async (tx) => {
  const runs = ((await tx.get<number>('demo/runs'))?.value ?? 0) + 1;
  tx.put('demo/runs', runs);
  const host: Host = {
    name: `compute-${runs}`,
    capacity: { vcpus: 16, memoryMiB: 65_536 },
    registeredAt: new Date().toISOString(),
  };
  tx.put(`demo/hosts/${host.name}`, { ...host });
  return runs;
});
console.log(`transaction committed: this is run ${run}, registered host compute-${run}`);

const { items } = await store.list<Host>('demo/hosts/');
console.log(`${items.length} host(s) in the store:`);
for (const entry of items) {
  console.log(`  ${entry.key}  vcpus=${entry.value.capacity.vcpus}  revision=${entry.revision}`);
}

// Compare-and-put: a second writer holding a stale revision is refused.
const counter = await store.get<number>('demo/runs');
try {
  await store.put('demo/runs', 0, { ifRevision: (counter?.revision ?? 0) - 1 });
} catch (error) {
  if (!isNubesError(error, 'Conflict')) throw error;
  console.log(`stale compare-and-put refused: ${error.code} (${error.message})`);
}

await new Promise((resolve) => setTimeout(resolve, 50));
watch.close();
await watching;
console.log(`watch saw ${seen.length} change(s):`);
for (const event of seen) console.log(`  r${event.revision} ${event.type} ${event.key}`);
await store.close();
