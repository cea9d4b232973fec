// Builders shared by the scheduler tests: small, explicit hosts with sensible defaults.
import type { HostInput } from '../src/index.js';

export function host(id: string, extra: Partial<HostInput> = {}): HostInput {
  return { id, name: id, capacity: { vcpus: 8, memoryMiB: 16_384, diskGiB: 100 }, ...extra };
}

export function hosts(n: number, extra: (i: number) => Partial<HostInput> = () => ({})): HostInput[] {
  return Array.from({ length: n }, (_, i) => host(`h${String(i).padStart(3, '0')}`, extra(i)));
}
