/** Which filter turned one host away, and why. */
export interface HostRejection {
  hostId: string;
  hostName: string;
  /** Name of the first filter that rejected the host. */
  filter: string;
  reasons: readonly string[];
  detail?: string;
}

/** One weigher's contribution to a host's total. */
export interface WeigherScore {
  weigher: string;
  /** What the weigher returned. */
  raw: number;
  /** After normalization (0..100 in Kubernetes mode, 0..1 in Nova mode). */
  normalized: number;
  weight: number;
  /** normalized x weight, the term summed into the total. */
  weighted: number;
}

/** A feasible host's score, with each weigher's part. */
export interface HostScore {
  hostId: string;
  hostName: string;
  total: number;
  scores: WeigherScore[];
}

/** Why a pick went where it went. */
export interface PickExplanation {
  /** Hosts in the snapshot. */
  total: number;
  /** Hosts the filters ran on (fewer than `total` when sampling). */
  evaluated: number;
  /** Hosts that passed every filter. */
  feasible: number;
  /** Rejection reasons with the number of hosts each applied to. */
  rejected: Record<string, number>;
  /** The best hosts in rank order, with their per-weigher scores. */
  top: HostScore[];
  /** The decision in one sentence. */
  message: string;
}

/** Why no host could take (one instance of) a request; carried by the `NoValidHost` error as `details.explanation`. */
export interface FailureExplanation {
  total: number;
  evaluated: number;
  /** 1-based index of the instance that found no host (for multi-instance requests). */
  instance: number;
  /** Instances in the request. */
  count: number;
  /** Rejection reasons with the number of hosts each applied to. */
  reasons: Record<string, number>;
  /** Per host: the filter that rejected it and why (at most `maxExplainedHosts`). */
  hosts: HostRejection[];
  /** Rejected hosts left out of `hosts`. */
  truncated: number;
  /** `0/N hosts are available: 3 insufficient memoryMiB, 2 did not match label selector.` */
  message: string;
}

/** `3 insufficient memoryMiB, 2 did not match label selector`: most frequent first, then alphabetical. */
export function formatReasons(counts: Readonly<Record<string, number>>): string {
  return Object.entries(counts)
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))
    .map(([reason, n]) => `${n} ${reason}`)
    .join(', ');
}

/** kube-scheduler's sentence for a failed pick. */
export function failureMessage(
  total: number,
  counts: Readonly<Record<string, number>>,
  instance: number,
  count: number,
): string {
  const reasons = formatReasons(counts);
  const head = count > 1 ? `instance ${instance} of ${count}: ` : '';
  return `${head}0/${total} hosts are available${reasons ? `: ${reasons}` : ''}.`;
}
