import type { Candidate } from './candidate.js';

/** One resource class across every host: position `i` is host `i` of the candidate list. */
export interface ResourceColumn {
  /** `candidate.usable[name] ?? 0`. */
  readonly usable: Float64Array;
  /** `candidate.allocated[name] ?? 0`. */
  readonly allocated: Float64Array;
  /** `candidate.free[name] ?? 0`. */
  readonly free: Float64Array;
  /**
   * Whether no host has a negative allocation (validated hosts never do; a store's host whose
   * instances were released beyond its allocation might), which the weighers' score bounds assume.
   */
  allocatedNonNegative: boolean;
}

const STATE_CODE = { enabled: 0, disabled: 1, down: 2 } as const;

/** Host state as stored in {@link HostColumns.state}. */
export const HostStateCode = STATE_CODE;

/**
 * The hosts of a candidate list as column arrays, one typed array per resource class and per field the
 * built-in filters and weighers read. Looking `memoryMiB` up on thousands of plain objects per decision
 * is what made the plugin path slow; a column is read with one indexed load and stays in cache.
 *
 * Every value is exactly what the plugin path reads from the {@link Candidate} (`?? 0` for a missing
 * resource), so a kernel over columns computes bit-identical results. Resource names that a plain
 * object would resolve through its prototype (`constructor`, `toString`...) get no column: kernels fall
 * back to the plugin for them, which keeps even that odd case identical.
 */
export class HostColumns {
  /** Number of hosts. */
  readonly size: number;
  /** 0 enabled, 1 disabled, 2 down ({@link HostStateCode}). */
  readonly state: Uint8Array;
  /** 1 where the host has any taint (only those need the taint plugin). */
  readonly tainted: Uint8Array;
  /** `candidate.instances.length`. */
  readonly instanceCount: Int32Array;
  /** The most instances any host runs: a per-host cap above it cannot reject anyone. */
  mostInstances: number;
  /** Whether any host has a taint: without one the taint filter has nothing to check. */
  readonly anyTainted: boolean;
  /** Whether every host is enabled: then the state filter has nothing to check. */
  readonly allEnabled: boolean;
  /** `candidate.host.name`. */
  readonly names: readonly string[];
  /** `candidate.host.availabilityZone`. */
  readonly zones: readonly (string | undefined)[];
  private readonly byName: Map<string, ResourceColumn>;
  private zeros: ResourceColumn | undefined;
  /**
   * Values kernels derive from the columns alone (per-host score ceilings), by kernel-chosen key. A fork
   * starts with its parent's: hosts there only gain allocations, which only lowers such ceilings.
   */
  private readonly derived: Map<unknown, unknown>;

  private constructor(
    size: number,
    fields: {
      state: Uint8Array;
      tainted: Uint8Array;
      instanceCount: Int32Array;
      mostInstances: number;
      anyTainted: boolean;
      allEnabled: boolean;
      names: readonly string[];
      zones: readonly (string | undefined)[];
      byName: Map<string, ResourceColumn>;
      derived?: Map<unknown, unknown>;
    },
  ) {
    this.size = size;
    this.state = fields.state;
    this.tainted = fields.tainted;
    this.instanceCount = fields.instanceCount;
    this.mostInstances = fields.mostInstances;
    this.anyTainted = fields.anyTainted;
    this.allEnabled = fields.allEnabled;
    this.names = fields.names;
    this.zones = fields.zones;
    this.byName = fields.byName;
    this.derived = fields.derived ?? new Map();
  }

  /** Columns of a candidate list (O(hosts x resource classes), once per snapshot). */
  static of(candidates: readonly Candidate[]): HostColumns {
    const n = candidates.length;
    const state = new Uint8Array(n);
    const tainted = new Uint8Array(n);
    const instanceCount = new Int32Array(n);
    const names: string[] = new Array(n);
    const zones: (string | undefined)[] = new Array(n);
    const resourceNames = new Set<string>();
    let mostInstances = 0;
    let anyTainted = false;
    let allEnabled = true;
    for (let i = 0; i < n; i++) {
      const c = candidates[i] as Candidate;
      state[i] = STATE_CODE[c.host.state];
      tainted[i] = c.host.taints.length > 0 ? 1 : 0;
      instanceCount[i] = c.instances.length;
      mostInstances = Math.max(mostInstances, c.instances.length);
      anyTainted ||= c.host.taints.length > 0;
      allEnabled &&= c.host.state === 'enabled';
      names[i] = c.host.name;
      zones[i] = c.host.availabilityZone;
      // free has exactly the keys of usable and allocated together.
      for (const name in c.usable) resourceNames.add(name);
      for (const name in c.allocated) resourceNames.add(name);
    }
    const byName = new Map<string, ResourceColumn>();
    for (const name of resourceNames) {
      if (!hasColumn(name)) continue;
      const column = emptyColumn(n);
      for (let i = 0; i < n; i++) setRow(column, i, candidates[i] as Candidate, name);
      byName.set(name, column);
    }
    return new HostColumns(n, {
      state,
      tainted,
      instanceCount,
      mostInstances,
      anyTainted,
      allEnabled,
      names,
      zones,
      byName,
    });
  }

  /**
   * The column of a resource class: all zeros when no host has it, `undefined` for a name a plain
   * object would find on its prototype (the caller then uses the plugin path).
   */
  resource(name: string): ResourceColumn | undefined {
    const column = this.byName.get(name);
    if (column) return column;
    if (!hasColumn(name)) return undefined;
    this.zeros ??= emptyColumn(this.size);
    return this.zeros;
  }

  /**
   * A copy whose per-decision fields (allocated, free, instance count) may be changed with
   * {@link HostColumns.updateRow}, leaving these columns (shared by a snapshot) untouched.
   */
  fork(): HostColumns {
    const byName = new Map<string, ResourceColumn>();
    for (const [name, c] of this.byName)
      byName.set(name, {
        usable: c.usable,
        allocated: c.allocated.slice(),
        free: c.free.slice(),
        allocatedNonNegative: c.allocatedNonNegative,
      });
    return new HostColumns(this.size, {
      state: this.state,
      tainted: this.tainted,
      instanceCount: this.instanceCount.slice(),
      mostInstances: this.mostInstances,
      anyTainted: this.anyTainted,
      allEnabled: this.allEnabled,
      names: this.names,
      zones: this.zones,
      byName,
      derived: new Map(this.derived),
    });
  }

  /**
   * A value derived from these columns, computed once under `key` (an object the kernel owns). It must
   * stay true when a host gains an allocation (a ceiling on a score that allocations only lower), since
   * forks keep their parent's values.
   */
  derive<T>(key: object, compute: () => T): T {
    if (this.derived.has(key)) return this.derived.get(key) as T;
    const value = compute();
    this.derived.set(key, value);
    return value;
  }

  /**
   * Re-reads host `i` from its new candidate (an instance was added by an earlier pick of the same
   * request). Only for a {@link HostColumns.fork}: a snapshot's columns are shared.
   */
  updateRow(i: number, candidate: Candidate): void {
    // Derived ceilings hold only while allocations grow; anything else starts them over.
    for (const [name, column] of this.byName)
      if (!((candidate.allocated[name] ?? 0) >= (column.allocated[i] as number))) this.derived.clear();
    this.instanceCount[i] = candidate.instances.length;
    this.mostInstances = Math.max(this.mostInstances, candidate.instances.length);
    for (const [name, column] of this.byName) setRow(column, i, candidate, name);
    // A resource no host had before now has a row that is not zero.
    for (const name in candidate.allocated) {
      if (this.byName.has(name) || !hasColumn(name)) continue;
      const column = emptyColumn(this.size);
      setRow(column, i, candidate, name);
      this.byName.set(name, column);
    }
  }
}

function emptyColumn(n: number): ResourceColumn {
  return {
    usable: new Float64Array(n),
    allocated: new Float64Array(n),
    free: new Float64Array(n),
    allocatedNonNegative: true,
  };
}

function setRow(column: ResourceColumn, i: number, c: Candidate, name: string): void {
  const allocated = c.allocated[name] ?? 0;
  column.usable[i] = c.usable[name] ?? 0;
  column.allocated[i] = allocated;
  column.free[i] = c.free[name] ?? 0;
  // Only ever cleared: a row that goes back to positive still had a negative neighbour in the past, and
  // a false "maybe negative" only costs speed.
  if (!(allocated >= 0)) column.allocatedNonNegative = false;
}

const plain: Record<string, unknown> = {};

/** Whether `record[name] ?? 0` on a plain record without that key is 0 (it is not for `constructor`...). */
function hasColumn(name: string): boolean {
  return !(name in plain);
}

const cache = new WeakMap<readonly Candidate[], HostColumns>();

/**
 * The columns of a candidate list, built on first use and kept as long as the list lives: a
 * `HostSnapshot` pays for them once, whatever number of decisions it serves.
 */
export function columnsOf(candidates: readonly Candidate[]): HostColumns {
  let columns = cache.get(candidates);
  if (!columns) {
    columns = HostColumns.of(candidates);
    cache.set(candidates, columns);
  }
  return columns;
}
