/** Resource usage of a cgroup, the same shape on v1 and v2. */
export interface CgroupStats {
  cpu: {
    /** Total CPU time in microseconds. */
    usageUsec: number;
    userUsec: number;
    systemUsec: number;
    /** Enforcement periods elapsed and those in which the group was throttled. */
    periods: number;
    throttledPeriods: number;
    throttledUsec: number;
  };
  memory: {
    /** Bytes in use now. */
    current: number;
    /** Highest usage seen, when the kernel reports it. */
    peak?: number;
    /** Times the group hit its limit and the OOM killer ran. */
    oomEvents: number;
    /** Processes killed by the OOM killer. */
    oomKills: number;
  };
  pids: {
    current: number;
    peak?: number;
    /** Forks refused because of pids.max. */
    maxEvents: number;
  };
}

/** Parses a flat-keyed cgroup file (`key value` per line). Pure. */
export function parseKeyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^-?\d+$/.test(value)) out[key] = Number(value);
  }
  return out;
}

/** Reads one number from a single-value file (`max` is Infinity). */
export function parseSingle(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (t === 'max') return Number.POSITIVE_INFINITY;
  return /^\d+$/.test(t) ? Number(t) : undefined;
}

/** The files stats are computed from, by name; a missing file is `undefined`. */
export type StatFiles = Record<string, string | undefined>;

/** Stats from cgroup v2 files: cpu.stat, memory.current, memory.peak, memory.events, pids.*. */
export function statsFromV2(files: StatFiles): CgroupStats {
  const cpu = parseKeyed(files['cpu.stat'] ?? '');
  const events = parseKeyed(files['memory.events'] ?? '');
  const pidEvents = parseKeyed(files['pids.events'] ?? '');
  const memPeak = parseSingle(files['memory.peak']);
  const pidPeak = parseSingle(files['pids.peak']);
  return {
    cpu: {
      usageUsec: cpu.usage_usec ?? 0,
      userUsec: cpu.user_usec ?? 0,
      systemUsec: cpu.system_usec ?? 0,
      periods: cpu.nr_periods ?? 0,
      throttledPeriods: cpu.nr_throttled ?? 0,
      throttledUsec: cpu.throttled_usec ?? 0,
    },
    memory: {
      current: parseSingle(files['memory.current']) ?? 0,
      ...(memPeak !== undefined ? { peak: memPeak } : {}),
      oomEvents: events.oom ?? 0,
      oomKills: events.oom_kill ?? 0,
    },
    pids: {
      current: parseSingle(files['pids.current']) ?? 0,
      ...(pidPeak !== undefined ? { peak: pidPeak } : {}),
      maxEvents: pidEvents.max ?? 0,
    },
  };
}

// cpuacct.stat counts USER_HZ ticks, which is 100 per second on every Linux ABI.
const TICK_USEC = 10_000;

/** Stats from cgroup v1 files: cpuacct.*, cpu.stat, memory.*, pids.*. */
export function statsFromV1(files: StatFiles): CgroupStats {
  const acct = parseKeyed(files['cpuacct.stat'] ?? '');
  const cpu = parseKeyed(files['cpu.stat'] ?? '');
  const oom = parseKeyed(files['memory.oom_control'] ?? '');
  const pidEvents = parseKeyed(files['pids.events'] ?? '');
  const memPeak = parseSingle(files['memory.max_usage_in_bytes']);
  const pidPeak = parseSingle(files['pids.peak']);
  return {
    cpu: {
      usageUsec: Math.round((parseSingle(files['cpuacct.usage']) ?? 0) / 1000),
      userUsec: (acct.user ?? 0) * TICK_USEC,
      systemUsec: (acct.system ?? 0) * TICK_USEC,
      periods: cpu.nr_periods ?? 0,
      throttledPeriods: cpu.nr_throttled ?? 0,
      throttledUsec: Math.round((cpu.throttled_time ?? 0) / 1000),
    },
    memory: {
      current: parseSingle(files['memory.usage_in_bytes']) ?? 0,
      ...(memPeak !== undefined ? { peak: memPeak } : {}),
      // v1 has no separate "hit the limit" counter next to the kill count; both come from oom_kill.
      oomEvents: oom.oom_kill ?? 0,
      oomKills: oom.oom_kill ?? 0,
    },
    pids: {
      current: parseSingle(files['pids.current']) ?? 0,
      ...(pidPeak !== undefined ? { peak: pidPeak } : {}),
      maxEvents: pidEvents.max ?? 0,
    },
  };
}
