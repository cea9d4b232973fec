/**
 * Reading and updating the compute records in the Store: whole prefixes page by page, and compare-and-put
 * updates that re-read and re-decide when an agent (or another API process) changed the record meanwhile.
 */
import { isNubesError, type JsonValue, NubesError, type Store } from '@nubes/core';

/** Every value under `prefix`, in key order. */
export async function listValues<T>(store: Store, prefix: string): Promise<T[]> {
  const out: T[] = [];
  let startAfter: string | undefined;
  do {
    const page = await store.list<T>(prefix, { limit: 1000, ...(startAfter ? { startAfter } : {}) });
    for (const entry of page.items) out.push(entry.value);
    startAfter = page.next;
  } while (startAfter);
  return out;
}

/** How many times a compare-and-put is retried on a fresh read before giving up with `Conflict`. */
const UPDATE_ATTEMPTS = 5;

/**
 * Updates the record at `key` with `change`, a pure function of the current value: it returns the next value,
 * or throws to refuse (its checks run again on every fresh read). Written with `put(..., { ifRevision })`, so a
 * concurrent writer's change is never overwritten: on a lost race the record is read again and `change`
 * decides again.
 *
 * @throws the `notFound` error when the record is gone, whatever `change` throws, or `Conflict` after
 * {@link UPDATE_ATTEMPTS} lost races.
 */
export async function updateRecord<T>(
  store: Store,
  key: string,
  notFound: () => Error,
  change: (current: T) => T,
): Promise<T> {
  for (let attempt = 1; attempt <= UPDATE_ATTEMPTS; attempt++) {
    const entry = await store.get<T>(key);
    if (!entry) throw notFound();
    const next = change(entry.value);
    try {
      await store.put(key, next as unknown as JsonValue, { ifRevision: entry.revision });
      return next;
    } catch (error) {
      if (!isNubesError(error, 'Conflict')) throw error;
    }
  }
  throw new NubesError('Conflict', `${key} kept changing while it was being updated; try again`, {
    details: { key },
  });
}
