import type { Candidate } from './candidate.js';
import { columnsOf, type HostColumns } from './columns.js';

/**
 * The hosts of one decision, as candidates for plugins and as columns for kernels. A snapshot's lists
 * are shared and never changed: the first pick that adds an instance (a multi-instance request) copies
 * them, later picks change the copies in place.
 */
export class DecisionHosts {
  private list: readonly Candidate[];
  private table: HostColumns | undefined;
  private owned = false;

  constructor(candidates: readonly Candidate[]) {
    this.list = candidates;
  }

  /** The candidates, in snapshot order. */
  get candidates(): readonly Candidate[] {
    return this.list;
  }

  /** The columns, built on first use: a decision whose filters and weighers are all plugins never needs them. */
  get columns(): HostColumns {
    this.table ??= columnsOf(this.list);
    return this.table;
  }

  /** Host `index` becomes `candidate` (an earlier pick of the request put an instance on it). */
  replace(index: number, candidate: Candidate): void {
    if (!this.owned) {
      this.owned = true;
      this.list = this.list.slice();
      this.table = this.table?.fork();
    }
    (this.list as Candidate[])[index] = candidate;
    this.table?.updateRow(index, candidate);
  }
}
