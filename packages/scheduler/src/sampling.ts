/** Below this many hosts every host is evaluated; above it at least this many feasible hosts are looked for. */
export const MIN_HOSTS_TO_FIND = 100;

/**
 * How many feasible hosts a sampled pick looks for before it stops filtering (kube-scheduler's
 * `numFeasibleNodesToFind`): all hosts below 100; otherwise `percentage` of them, by default
 * `max(5, 50 - N/125)` percent, and never fewer than 100.
 */
export function hostsToFind(hostCount: number, percentage?: number): number {
  if (hostCount < MIN_HOSTS_TO_FIND) return hostCount;
  const pct = percentage ?? Math.max(5, 50 - hostCount / 125);
  if (pct >= 100) return hostCount;
  return Math.max(MIN_HOSTS_TO_FIND, Math.floor((hostCount * pct) / 100));
}

/** A small, fast, seedable PRNG (mulberry32); ties and subset picks must be reproducible under a seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
