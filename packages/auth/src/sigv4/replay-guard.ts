import { isNubesError, type Store } from '@nubes/core';

/**
 * Remembers signatures already accepted, until they could no longer pass the clock-skew check anyway.
 * `claim` resolves `true` the first time a signature is seen and `false` for a replay.
 */
export interface ReplayGuard {
  claim(signature: string, until: number, now: number): Promise<boolean>;
}

/** A guard in this process's memory: enough for one verifying process. */
export function memoryReplayGuard(): ReplayGuard {
  const seen = new Map<string, number>();
  return {
    async claim(signature, until, now) {
      // Amortized: a full sweep only when the map has grown, so the common path stays O(1).
      if (seen.size >= 1024) for (const [sig, end] of seen) if (end < now) seen.delete(sig);
      const previous = seen.get(signature);
      if (previous !== undefined && previous >= now) return false;
      seen.set(signature, until);
      return true;
    },
  };
}

/**
 * A guard shared by every process on one Store: the first process to create the signature's key wins
 * (compare-and-put on absence), so a request captured and replayed against another replica is refused too.
 * Expired entries are swept now and then by whichever process claims.
 */
export function storeReplayGuard(store: Store, prefix: string, sweepEvery = 256): ReplayGuard {
  let claims = 0;
  const sweep = async (now: number) => {
    let startAfter: string | undefined;
    do {
      const page = await store.list<number>(prefix, { limit: 500, ...(startAfter ? { startAfter } : {}) });
      for (const e of page.items) {
        if (e.value < now) await store.delete(e.key, { ifRevision: e.revision }).catch(() => false);
      }
      startAfter = page.next;
    } while (startAfter);
  };
  return {
    async claim(signature, until, now) {
      const key = `${prefix}${signature}`;
      if (++claims % sweepEvery === 0) await sweep(now);
      try {
        await store.put(key, until, { ifRevision: 0 });
        return true;
      } catch (error) {
        if (!isNubesError(error, 'Conflict')) throw error;
      }
      // Taken: a replay, unless the old claim has expired and is only waiting for a sweep.
      const existing = await store.get<number>(key);
      if (existing && existing.value >= now) return false;
      try {
        await store.put(key, until, { ifRevision: existing?.revision ?? 0 });
        return true;
      } catch (error) {
        if (isNubesError(error, 'Conflict')) return false;
        throw error;
      }
    },
  };
}
