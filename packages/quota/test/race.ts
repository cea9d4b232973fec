import { isNubesError } from '@nubes/core';
import type { Quota } from '../src/index.js';

/** What a group of racing reservers did. */
export interface RaceResult {
  /** Sizes committed, per project. */
  committed: Record<string, number[]>;
  refused: number;
  rolledBack: number;
}

/**
 * `count` concurrent callers, each reserving a random 1 to 10 `vcpus` in one of `projects` and then committing
 * (three times in four) or rolling back; refusals (`QuotaExceeded`) are counted, anything else fails.
 */
export async function raceReservers(
  quota: Quota,
  projects: string[],
  count: number,
  seed: number,
): Promise<RaceResult> {
  const random = seeded(seed);
  const result: RaceResult = { committed: {}, refused: 0, rolledBack: 0 };
  await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const project = projects[i % projects.length] as string;
      const size = 1 + Math.floor(random() * 10);
      const commit = random() < 0.75;
      let id: string;
      try {
        id = await quota.reserve(project, { vcpus: size });
      } catch (error) {
        if (isNubesError(error, 'QuotaExceeded')) {
          result.refused += 1;
          return;
        }
        throw error;
      }
      // Let other callers interleave between reserve and commit, as a real create would.
      await new Promise((r) => setTimeout(r, Math.floor(random() * 5)));
      if (commit) {
        await quota.commit(id);
        result.committed[project] = [...(result.committed[project] ?? []), size];
      } else {
        await quota.rollback(id);
        result.rolledBack += 1;
      }
    }),
  );
  return result;
}

/** A small seeded generator (mulberry32), so a failing race can be replayed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
