import type { CommitConflict, CommitRequest, KeyCheck, StoredEntry, StoredEvent, Write } from './engine.js';

/**
 * Compares what a transaction read with what is there now. `current` maps each checked key to
 * its revision (absent keys to 0); `ranges[i]` is the re-run of `request.ranges[i]`.
 */
export function findConflict(
  request: CommitRequest,
  current: ReadonlyMap<string, number>,
  ranges: readonly KeyCheck[][],
): CommitConflict | undefined {
  for (const check of request.checks) {
    const actual = current.get(check.key) ?? 0;
    if (actual !== check.revision) return { key: check.key, expected: check.revision, actual };
  }
  for (const [i, range] of request.ranges.entries()) {
    const now = ranges[i] ?? [];
    const same =
      now.length === range.seen.length &&
      now.every((entry, j) => entry.key === range.seen[j]?.key && entry.revision === range.seen[j]?.revision);
    if (!same) return { prefix: range.prefix };
  }
  return undefined;
}

/** The rows and log entries that applying `writes` at `revision` produces. */
export interface WritePlan {
  upserts: StoredEntry[];
  deletes: string[];
  events: StoredEvent[];
}

/** Plans `writes` against the entries that exist now (`existing`, by key). Deleting a missing key is a no-op. */
export function planWrites(
  writes: readonly Write[],
  existing: ReadonlyMap<string, StoredEntry>,
  revision: number,
): WritePlan {
  const plan: WritePlan = { upserts: [], deletes: [], events: [] };
  for (const write of writes) {
    const before = existing.get(write.key);
    const seq = plan.events.length;
    if (write.value === undefined) {
      if (!before) continue;
      plan.deletes.push(write.key);
      plan.events.push({ type: 'delete', key: write.key, revision, seq, createRevision: 0, version: 0 });
    } else {
      const entry: StoredEntry = {
        key: write.key,
        value: write.value,
        revision,
        createRevision: before ? before.createRevision : revision,
        version: before ? before.version + 1 : 1,
      };
      plan.upserts.push(entry);
      plan.events.push({ type: 'put', seq, ...entry });
    }
  }
  return plan;
}

/** Every key a commit must look up before it can check and plan. */
export function keysToRead(request: CommitRequest): string[] {
  return [...new Set([...request.checks.map((c) => c.key), ...request.writes.map((w) => w.key)])];
}
