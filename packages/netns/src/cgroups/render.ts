import type { ParsedResourceSpec } from './spec.js';

/** One write to a cgroup interface file. `controller` is the v1 hierarchy; v2 has none. */
export interface CgroupWrite {
  controller?: V1Controller;
  file: string;
  value: string;
  /** Files to try when `file` does not exist (kernel-config dependent names). */
  alternatives?: string[];
}

/** The v1 hierarchies the library uses. */
export type V1Controller = 'cpu' | 'cpuacct' | 'cpuset' | 'memory' | 'pids' | 'freezer' | 'blkio';

/**
 * cgroup v2 cpu.weight to v1 cpu.shares, the systemd / runc linear mapping that keeps the
 * defaults aligned: shares = weight * 1024 / 100, so weight 100 is shares 1024, clamped to 2..262144.
 */
export function weightToShares(weight: number): number {
  return Math.min(262_144, Math.max(2, Math.round((weight * 1024) / 100)));
}

/** v1 cpu.shares to v2 cpu.weight: weight = shares * 100 / 1024, clamped to 1..10000. */
export function sharesToWeight(shares: number): number {
  return Math.min(10_000, Math.max(1, Math.round((shares * 100) / 1024)));
}

/** v2 io.weight (1..10000) to v1 blkio weight (10..1000), the inverse of runc's v1-to-v2 formula. */
export function ioWeightToBlkio(weight: number): number {
  return Math.min(1000, Math.max(10, Math.round(10 + ((weight - 1) * 990) / 9999)));
}

const v2Limit = (v: number | 'max') => (v === 'max' ? 'max' : String(v));
const v1Limit = (v: number | 'max') => (v === 'max' ? '-1' : String(v));

/** The cgroup v2 file writes for a spec, in a valid order. Pure. */
export function renderV2(spec: ParsedResourceSpec): CgroupWrite[] {
  const writes: CgroupWrite[] = [];
  const { cpu, memory, pids, io } = spec;
  if (cpu?.cpus !== undefined) writes.push({ file: 'cpuset.cpus', value: cpu.cpus });
  if (cpu?.mems !== undefined) writes.push({ file: 'cpuset.mems', value: cpu.mems });
  if (cpu?.quotaUs !== undefined)
    writes.push({ file: 'cpu.max', value: `${v2Limit(cpu.quotaUs)} ${cpu.periodUs}` });
  if (cpu?.weight !== undefined) writes.push({ file: 'cpu.weight', value: String(cpu.weight) });
  if (memory?.max !== undefined) writes.push({ file: 'memory.max', value: v2Limit(memory.max) });
  if (memory?.high !== undefined) writes.push({ file: 'memory.high', value: v2Limit(memory.high) });
  if (memory?.swapMax !== undefined) writes.push({ file: 'memory.swap.max', value: v2Limit(memory.swapMax) });
  if (pids) writes.push({ file: 'pids.max', value: v2Limit(pids.max) });
  if (io?.weight !== undefined) writes.push({ file: 'io.weight', value: `default ${io.weight}` });
  for (const d of io?.devices ?? []) {
    const limits = [
      d.readBps && `rbps=${d.readBps}`,
      d.writeBps && `wbps=${d.writeBps}`,
      d.readIops && `riops=${d.readIops}`,
      d.writeIops && `wiops=${d.writeIops}`,
    ].filter(Boolean);
    if (limits.length) writes.push({ file: 'io.max', value: `${d.device} ${limits.join(' ')}` });
    if (d.weight !== undefined) writes.push({ file: 'io.weight', value: `${d.device} ${d.weight}` });
  }
  return writes;
}

/** The cgroup v1 file writes for a spec, in a valid order. Pure. */
export function renderV1(spec: ParsedResourceSpec): CgroupWrite[] {
  const writes: CgroupWrite[] = [];
  const { cpu, memory, pids, io } = spec;
  if (cpu?.cpus !== undefined) writes.push({ controller: 'cpuset', file: 'cpuset.cpus', value: cpu.cpus });
  if (cpu?.mems !== undefined) writes.push({ controller: 'cpuset', file: 'cpuset.mems', value: cpu.mems });
  if (cpu?.quotaUs !== undefined) {
    // The period first: the kernel checks the quota against the period in place at write time.
    writes.push({ controller: 'cpu', file: 'cpu.cfs_period_us', value: String(cpu.periodUs) });
    writes.push({ controller: 'cpu', file: 'cpu.cfs_quota_us', value: v1Limit(cpu.quotaUs) });
  }
  if (cpu?.weight !== undefined) {
    writes.push({ controller: 'cpu', file: 'cpu.shares', value: String(weightToShares(cpu.weight)) });
  }
  if (memory?.max !== undefined || memory?.swapMax !== undefined) {
    const max = memory.max ?? 'max';
    const swap = memory.swapMax;
    // memsw (memory + swap) must never be below the memory limit, so lift it, set the limit, then set it.
    writes.push({ controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: '-1' });
    writes.push({ controller: 'memory', file: 'memory.limit_in_bytes', value: v1Limit(max) });
    if (swap !== undefined && max !== 'max') {
      const memsw = swap === 'max' ? 'max' : max + swap;
      writes.push({ controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: v1Limit(memsw) });
    }
  }
  if (memory?.high !== undefined) {
    writes.push({ controller: 'memory', file: 'memory.soft_limit_in_bytes', value: v1Limit(memory.high) });
  }
  if (pids)
    writes.push({
      controller: 'pids',
      file: 'pids.max',
      value: pids.max === 'max' ? 'max' : String(pids.max),
    });
  if (io?.weight !== undefined) {
    writes.push({
      controller: 'blkio',
      file: 'blkio.weight',
      value: String(ioWeightToBlkio(io.weight)),
      alternatives: ['blkio.bfq.weight'],
    });
  }
  for (const d of io?.devices ?? []) {
    const throttle: [number | undefined, string][] = [
      [d.readBps, 'read_bps_device'],
      [d.writeBps, 'write_bps_device'],
      [d.readIops, 'read_iops_device'],
      [d.writeIops, 'write_iops_device'],
    ];
    for (const [value, file] of throttle) {
      if (value)
        writes.push({ controller: 'blkio', file: `blkio.throttle.${file}`, value: `${d.device} ${value}` });
    }
    if (d.weight !== undefined) {
      writes.push({
        controller: 'blkio',
        file: 'blkio.weight_device',
        value: `${d.device} ${ioWeightToBlkio(d.weight)}`,
        alternatives: ['blkio.bfq.weight_device'],
      });
    }
  }
  return writes;
}

/** The v2 controllers a spec needs enabled in the parent's cgroup.subtree_control. */
export function v2Controllers(spec: ParsedResourceSpec): string[] {
  const needs = new Set<string>();
  for (const w of renderV2(spec)) needs.add(w.file.split('.')[0] as string);
  return [...needs];
}
