/**
 * Flavors: the server sizes, kept in the Store under `compute/flavors/<id>`, seeded on the first start with
 * devstack's small ones, and shown as Nova shows them at each microversion.
 */
import { invalidInput, NubesError, newId, type Store } from '@nubes/core';
import { isoTime, optionalBoolean, optionalInt, optionalString } from '../api/http.js';
import { novaNotFound } from './errors.js';
import type { Microversion } from './microversion.js';
import { listValues } from './records.js';

/** Store key prefix of flavors. */
export const FLAVORS_PREFIX = 'compute/flavors/';
/** Written once the seed flavors are in, so a seeded flavor an admin deleted stays deleted. */
const SEEDED_KEY = 'compute/meta/flavors-seeded';

/** The Store key of a flavor. */
export function flavorKey(id: string): string {
  return `${FLAVORS_PREFIX}${id}`;
}

/** A flavor as stored. */
export interface FlavorRecord {
  id: string;
  name: string;
  vcpus: number;
  ramMiB: number;
  diskGiB: number;
  ephemeralGiB: number;
  swapMiB: number;
  rxtxFactor: number;
  isPublic: boolean;
  disabled: boolean;
  description: string | null;
  created: string;
}

/** devstack's smallest flavors, with devstack's ids: enough to boot the tiny test images. */
export const SEED_FLAVORS: readonly Pick<FlavorRecord, 'id' | 'name' | 'vcpus' | 'ramMiB' | 'diskGiB'>[] = [
  { id: '42', name: 'm1.nano', vcpus: 1, ramMiB: 128, diskGiB: 1 },
  { id: '84', name: 'm1.micro', vcpus: 1, ramMiB: 256, diskGiB: 1 },
  { id: '1', name: 'm1.tiny', vcpus: 1, ramMiB: 512, diskGiB: 1 },
  { id: '2', name: 'm1.small', vcpus: 1, ramMiB: 2048, diskGiB: 20 },
];

const MAX_INT32 = 2 ** 31 - 1;
// Nova's flavor id and name patterns: printable, no leading or trailing space; ids without `/`.
const FLAVOR_ID = /^(?! )[a-zA-Z0-9. _-]{1,255}(?<! )$/;

/** What `POST /flavors` asks for, validated. */
export type FlavorInput = Omit<FlavorRecord, 'created' | 'disabled' | 'id'> & { id?: string };

/**
 * Validates a `POST /flavors` body (`{ flavor: {...} }`); `InvalidInput` naming the field.
 * `description` is taken from 2.55, as in Nova.
 */
export function parseFlavorCreate(flavor: Record<string, unknown>, version: Microversion): FlavorInput {
  const name = optionalString(flavor.name, 'flavor.name', 255);
  if (name === undefined || name.trim() === '' || name.trim() !== name)
    throw invalidInput('flavor.name', 'is required, without leading or trailing spaces');
  const rawId = flavor.id;
  let id: string | undefined;
  if (rawId !== undefined && rawId !== null && rawId !== 'auto') {
    const s = typeof rawId === 'number' && Number.isInteger(rawId) ? String(rawId) : rawId;
    if (typeof s !== 'string' || !FLAVOR_ID.test(s))
      throw invalidInput('flavor.id', 'must be 1-255 letters, digits, ".", "_", "-" or spaces');
    id = s;
  }
  const required = (field: string, min: number) => {
    const n = optionalInt(flavor[field], `flavor.${field}`, min, MAX_INT32);
    if (n === undefined) throw invalidInput(`flavor.${field}`, 'is required');
    return n;
  };
  const rxtx = flavor.rxtx_factor;
  if (rxtx !== undefined && rxtx !== null && (typeof rxtx !== 'number' || !(rxtx > 0) || rxtx > 3.4e38))
    throw invalidInput('flavor.rxtx_factor', 'must be a positive number');
  const description = version.atLeast('2.55')
    ? optionalString(flavor.description, 'flavor.description', 65_535)
    : undefined;
  if (!version.atLeast('2.55') && flavor.description !== undefined)
    throw invalidInput('flavor.description', 'needs microversion 2.55 or later');
  // Nova sends swap as "" for none in old bodies; accept it as 0.
  const swap = flavor.swap === '' ? 0 : optionalInt(flavor.swap, 'flavor.swap', 0, MAX_INT32);
  return {
    ...(id !== undefined ? { id } : {}),
    name,
    ramMiB: required('ram', 1),
    vcpus: required('vcpus', 1),
    diskGiB: required('disk', 0),
    ephemeralGiB:
      optionalInt(flavor['OS-FLV-EXT-DATA:ephemeral'], 'flavor.OS-FLV-EXT-DATA:ephemeral', 0, MAX_INT32) ?? 0,
    swapMiB: swap ?? 0,
    rxtxFactor: typeof rxtx === 'number' ? rxtx : 1,
    isPublic:
      optionalBoolean(flavor['os-flavor-access:is_public'], 'flavor.os-flavor-access:is_public') ?? true,
    description: description ?? null,
  };
}

/** The flavors of the cloud in the Store. */
export class Flavors {
  constructor(private readonly store: Store) {}

  /** Puts the seed flavors in, once per Store (a later start finds the marker and leaves the set alone). */
  async seed(now = Date.now()): Promise<void> {
    await this.store.transaction(async (tx) => {
      if (await tx.get(SEEDED_KEY)) return;
      for (const f of SEED_FLAVORS) {
        if (await tx.get(flavorKey(f.id))) continue;
        const record: FlavorRecord = {
          ...f,
          ephemeralGiB: 0,
          swapMiB: 0,
          rxtxFactor: 1,
          isPublic: true,
          disabled: false,
          description: null,
          created: isoTime(now),
        };
        tx.put(flavorKey(f.id), { ...record });
      }
      tx.put(SEEDED_KEY, true);
    });
  }

  /** Every flavor, sorted as Nova sorts by default (flavorid ascending). */
  async list(): Promise<FlavorRecord[]> {
    const all = await listValues<FlavorRecord>(this.store, FLAVORS_PREFIX);
    return all.sort((a, b) => a.id.localeCompare(b.id));
  }

  /** One flavor. @throws NubesError `NotFound` (Nova's "Flavor X could not be found."). */
  async get(id: string): Promise<FlavorRecord> {
    const entry = FLAVOR_ID.test(id) ? await this.store.get<FlavorRecord>(flavorKey(id)) : undefined;
    if (!entry) throw novaNotFound('Flavor', id);
    return entry.value;
  }

  /** Creates a flavor; `Conflict` when its id or name is taken (names are unique, as in Nova). */
  async create(input: FlavorInput, now = Date.now()): Promise<FlavorRecord> {
    const record: FlavorRecord = {
      ...input,
      id: input.id ?? newId(),
      disabled: false,
      created: isoTime(now),
    };
    await this.store.transaction(async (tx) => {
      if (await tx.get(flavorKey(record.id)))
        throw new NubesError('Conflict', `Flavor with ID ${record.id} already exists.`, {
          details: { id: record.id },
        });
      const page = await tx.list<FlavorRecord>(FLAVORS_PREFIX, { limit: 10_000 });
      if (page.items.some((e) => e.value.name === record.name))
        throw new NubesError('Conflict', `Flavor with name ${record.name} already exists.`, {
          details: { name: record.name },
        });
      tx.put(flavorKey(record.id), { ...record });
    });
    return record;
  }

  /** Deletes a flavor. Servers keep their copy of its resources, as Nova's embedded flavor does. */
  async delete(id: string): Promise<void> {
    await this.get(id);
    await this.store.delete(flavorKey(id));
  }
}

/** A flavor as Nova shows it: summary (`GET /flavors`) or detail, with the fields of the microversion. */
export function flavorJson(
  f: FlavorRecord,
  base: string,
  version: Microversion,
  detail: boolean,
): Record<string, unknown> {
  const links = [
    { rel: 'self', href: `${base}/compute/v2.1/flavors/${f.id}` },
    { rel: 'bookmark', href: `${base}/compute/flavors/${f.id}` },
  ];
  const out: Record<string, unknown> = { id: f.id, name: f.name, links };
  if (version.atLeast('2.55')) out.description = f.description;
  if (!detail) return out;
  Object.assign(out, {
    ram: f.ramMiB,
    disk: f.diskGiB,
    vcpus: f.vcpus,
    'OS-FLV-EXT-DATA:ephemeral': f.ephemeralGiB,
    'OS-FLV-DISABLED:disabled': f.disabled,
    'os-flavor-access:is_public': f.isPublic,
    // Before 2.75 Nova shows "no swap" as an empty string.
    swap: f.swapMiB === 0 ? '' : f.swapMiB,
    rxtx_factor: f.rxtxFactor,
  });
  if (version.atLeast('2.61')) out.extra_specs = {};
  return out;
}
