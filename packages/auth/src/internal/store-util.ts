import type { Entry, JsonValue, StoreReader } from '@nubes/core';

/** Every entry under `prefix`, following pages until the end. */
export async function listAll<T = JsonValue>(reader: StoreReader, prefix: string): Promise<Entry<T>[]> {
  const out: Entry<T>[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await reader.list<T>(prefix, { limit: 1000, ...(startAfter ? { startAfter } : {}) });
    out.push(...page.items);
    if (!page.next) return out;
    startAfter = page.next;
  }
}

/** Drops `undefined` properties so a value is JSON the Store accepts. */
export function toJson<T extends object>(value: T): JsonValue {
  return JSON.parse(JSON.stringify(value)) as JsonValue;
}
