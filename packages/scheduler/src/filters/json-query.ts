import type { Candidate } from '../candidate.js';
import { evaluateJsonQuery, type JsonQuery, resolvePath } from '../json-query.js';
import { type Filter, reject } from '../plugin.js';

/**
 * The state a query's `$variables` see: the host's fields (`$name`, `$labels.rack`, `$metrics.cpuUtilization`,
 * `$free.memoryMiB`, `$usable.vcpus`...) plus Nova's names (`$free_ram_mb`, `$free_disk_mb`, `$vcpus_total`,
 * `$vcpus_used`, `$num_instances`, `$host`), so queries written for Nova keep working.
 */
export function queryView(c: Candidate): Record<string, unknown> {
  const h = c.host;
  return {
    id: h.id,
    name: h.name,
    host: h.name,
    state: h.state,
    availabilityZone: h.availabilityZone,
    aggregates: h.aggregates,
    labels: h.labels,
    traits: h.traits,
    capacity: h.capacity,
    reserved: h.reserved,
    usable: c.usable,
    allocated: c.allocated,
    free: c.free,
    metrics: h.metrics ?? {},
    num_instances: c.instances.length,
    free_ram_mb: c.free.memoryMiB ?? 0,
    free_disk_mb: (c.free.diskGiB ?? 0) * 1024,
    total_usable_ram_mb: c.usable.memoryMiB ?? 0,
    vcpus_total: h.capacity.vcpus ?? 0,
    vcpus_used: c.allocated.vcpus ?? 0,
  };
}

/** Keeps hosts for which the `query` hint, in Nova's JsonFilter language, is true. */
export function jsonQueryFilter(): Filter {
  return {
    name: 'JsonQuery',
    appliesTo: (r) => r.hints.query !== undefined && r.hints.query.length > 0,
    filter(c, r) {
      const view = queryView(c);
      return evaluateJsonQuery(r.hints.query as JsonQuery, (path) => resolvePath(view, path))
        ? true
        : reject('did not match JSON query');
    },
  };
}
