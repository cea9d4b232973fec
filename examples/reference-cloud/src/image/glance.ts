/**
 * Glance v2's view of an `@nubes/images` record: the formats Glance names that the store does not (an unset
 * format, the `ova` and `compressed` containers), the checks of the fields a client sends, and the JSON
 * shape python-openstackclient and openstacksdk read.
 */
import { invalidInput, NubesError } from '@nubes/core';
import type { ContainerFormat, DiskFormat, ImageRecord, MemberRecord, Visibility } from '@nubes/images';
import { isoTime } from '../api/http.js';

/**
 * Disk formats this cloud accepts, as Glance names them. `vdi` and `ploop` are left out: the store's inspector
 * cannot check them, and Glance lets a deployment narrow the list (its `disk_formats` option) the same way.
 */
export const GLANCE_DISK_FORMATS = [
  'ami',
  'ari',
  'aki',
  'vhd',
  'vhdx',
  'vmdk',
  'raw',
  'qcow2',
  'iso',
] as const;
/** A disk format as Glance names it. */
export type GlanceDiskFormat = (typeof GLANCE_DISK_FORMATS)[number];

/** Container formats this cloud accepts, as Glance names them (metadata only, as in Glance). */
export const GLANCE_CONTAINER_FORMATS = [
  'ami',
  'ari',
  'aki',
  'bare',
  'ovf',
  'ova',
  'docker',
  'compressed',
] as const;
/** A container format as Glance names it. */
export type GlanceContainerFormat = (typeof GLANCE_CONTAINER_FORMATS)[number];

/** Glance's visibilities. */
export const GLANCE_VISIBILITIES: readonly Visibility[] = ['public', 'private', 'shared', 'community'];

/**
 * The hidden property holding the Glance disk format when the store's `diskFormat` cannot say it (`''`: the
 * client has not set one yet).
 */
export const DISK_FORMAT_KEY = 'nubes_glance.disk_format';
/** The hidden property holding the Glance container format when the store's `containerFormat` cannot say it. */
export const CONTAINER_FORMAT_KEY = 'nubes_glance.container_format';

/**
 * Property prefixes no client may set: Glance reserves `os_glance`, and this cloud keeps its own bookkeeping
 * under `nubes_glance`.
 */
export const RESERVED_PREFIXES = ['os_glance', 'nubes_glance'] as const;

/**
 * Attributes Glance computes or fixes itself: a client setting one is refused with 403, as Glance refuses it.
 * `owner` is here because this cloud does not move images between projects.
 */
export const READ_ONLY_ATTRIBUTES: ReadonlySet<string> = new Set([
  'checksum',
  'created_at',
  'direct_url',
  'file',
  'id',
  'locations',
  'os_hash_algo',
  'os_hash_value',
  'os_hidden',
  'owner',
  'schema',
  'self',
  'size',
  'status',
  'updated_at',
  'virtual_size',
]);

/** Attributes Glance reserves (403 "is reserved"). */
export const RESERVED_ATTRIBUTES: ReadonlySet<string> = new Set(['deleted', 'deleted_at', 'location']);

/** Base attributes: what is not an extra property. */
export const BASE_ATTRIBUTES: ReadonlySet<string> = new Set([
  ...READ_ONLY_ATTRIBUTES,
  ...RESERVED_ATTRIBUTES,
  'name',
  'visibility',
  'protected',
  'disk_format',
  'container_format',
  'min_disk',
  'min_ram',
  'tags',
]);

/** Extra properties that Glance's schema types as image ids (nova boots a kernel/ramdisk trio from them). */
export const IMAGE_ID_PROPERTIES: ReadonlySet<string> = new Set(['kernel_id', 'ramdisk_id']);

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const INT32_MAX = 2 ** 31 - 1;

/** Whether `value` is a UUID (Glance's image ids are; anything else in an id slot is a 404, not a 400). */
export function isUuid(value: string): boolean {
  return UUID.test(value);
}

/** The store's disk format for a Glance one (an image created without one is kept as raw until it is set). */
export function storeDiskFormat(format: GlanceDiskFormat | null): DiskFormat {
  return format ?? 'raw';
}

/** The store's container format for a Glance one (`ova` and `compressed` are kept as bare). */
export function storeContainerFormat(format: GlanceContainerFormat | null): ContainerFormat {
  if (format === null || format === 'ova' || format === 'compressed') return 'bare';
  return format;
}

/** The Glance disk format of a record (null when the client has not set one). */
export function glanceDiskFormat(record: ImageRecord): GlanceDiskFormat | null {
  const hidden = record.properties[DISK_FORMAT_KEY];
  if (hidden === undefined) return record.diskFormat;
  return hidden === '' ? null : (hidden as GlanceDiskFormat);
}

/** The Glance container format of a record (null when the client has not set one). */
export function glanceContainerFormat(record: ImageRecord): GlanceContainerFormat | null {
  const hidden = record.properties[CONTAINER_FORMAT_KEY];
  if (hidden === undefined) return record.containerFormat;
  return hidden === '' ? null : (hidden as GlanceContainerFormat);
}

/**
 * The hidden properties that record Glance formats the store's fields cannot hold; `null` for a key means it
 * is not needed (for an update: remove it).
 */
export function formatProperties(
  disk: GlanceDiskFormat | null,
  container: GlanceContainerFormat | null,
): Record<string, string | null> {
  return {
    [DISK_FORMAT_KEY]: disk === storeDiskFormat(disk) ? null : (disk ?? ''),
    [CONTAINER_FORMAT_KEY]: container === storeContainerFormat(container) ? null : (container ?? ''),
  };
}

// ---------------------------------------------------------------- field checks

/** `name`: a string of at most 255 characters, or null (an empty name is kept as none: the store's are 1+). */
export function checkName(value: unknown): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || value.length > 255)
    throw invalidInput('name', 'must be a string of at most 255 characters or null');
  return value === '' ? null : value;
}

/** `visibility`: one of Glance's four. */
export function checkVisibility(value: unknown): Visibility {
  if (typeof value !== 'string' || !(GLANCE_VISIBILITIES as readonly string[]).includes(value))
    throw invalidInput('visibility', `must be one of ${GLANCE_VISIBILITIES.join(', ')}`);
  return value as Visibility;
}

/** A boolean attribute (`protected`). */
export function checkBoolean(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw invalidInput(field, 'must be a boolean');
  return value;
}

/** `min_disk` / `min_ram`: a non-negative JSON integer, as Glance's schema types them (no numeric strings). */
export function checkMinimum(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > INT32_MAX)
    throw invalidInput(field, `must be an integer from 0 to ${INT32_MAX}`);
  return value;
}

/** `disk_format`: one of {@link GLANCE_DISK_FORMATS}, or null. */
export function checkDiskFormat(value: unknown): GlanceDiskFormat | null {
  if (value === null) return null;
  if (typeof value !== 'string' || !(GLANCE_DISK_FORMATS as readonly string[]).includes(value))
    throw invalidInput('disk_format', `must be one of ${GLANCE_DISK_FORMATS.join(', ')}`, { value });
  return value as GlanceDiskFormat;
}

/** `container_format`: one of {@link GLANCE_CONTAINER_FORMATS}, or null. */
export function checkContainerFormat(value: unknown): GlanceContainerFormat | null {
  if (value === null) return null;
  if (typeof value !== 'string' || !(GLANCE_CONTAINER_FORMATS as readonly string[]).includes(value))
    throw invalidInput('container_format', `must be one of ${GLANCE_CONTAINER_FORMATS.join(', ')}`, {
      value,
    });
  return value as GlanceContainerFormat;
}

/** One tag: 1 to 255 characters. */
export function checkTag(value: unknown, field = 'tags'): string {
  if (typeof value !== 'string' || value.length < 1 || value.length > 255)
    throw invalidInput(field, 'each tag must be a string of 1 to 255 characters');
  return value;
}

/** Glance's tag quota (`image_tag_quota`). */
export const MAX_TAGS = 128;

/** `tags`: a list of tags, duplicates dropped; more than {@link MAX_TAGS} is 413 as Glance answers. */
export function checkTags(value: unknown): string[] {
  if (!Array.isArray(value)) throw invalidInput('tags', 'must be a list of strings');
  const tags = [...new Set(value.map((t) => checkTag(t)))];
  if (tags.length > MAX_TAGS)
    throw new NubesError('PayloadTooLarge', `Maximum number of tags (${MAX_TAGS}) exceeded`, {
      details: { field: 'tags', limit: MAX_TAGS },
    });
  return tags;
}

/** Glance's extra-property quota (`image_property_quota`). */
export const MAX_PROPERTIES = 128;

/** Refuses more than {@link MAX_PROPERTIES} extra properties with 413, as Glance does. */
export function checkPropertyCount(properties: Record<string, unknown>): void {
  if (Object.keys(properties).length > MAX_PROPERTIES)
    throw new NubesError('PayloadTooLarge', `Maximum number of properties (${MAX_PROPERTIES}) exceeded`, {
      details: { field: 'properties', limit: MAX_PROPERTIES },
    });
}

/**
 * The name of an extra property a client may set: reserved names are 403 as in Glance, a name the store cannot
 * keep is 400.
 */
export function checkPropertyName(name: string): string {
  if (RESERVED_ATTRIBUTES.has(name) || RESERVED_PREFIXES.some((p) => name.startsWith(p)))
    throw new NubesError('Forbidden', `Attribute '${name}' is reserved.`, { details: { field: name } });
  if (READ_ONLY_ATTRIBUTES.has(name))
    throw new NubesError('Forbidden', `Attribute '${name}' is read-only.`, { details: { field: name } });
  if (name.length < 1 || name.length > 255)
    throw invalidInput(name || 'property', 'property names must be 1 to 255 characters');
  return name;
}

/**
 * The value of an extra property: a string (Glance's schema types extra properties as strings), and a UUID for
 * `kernel_id` / `ramdisk_id`. `null` (allowed for the id properties, as in Glance's schema) means absent.
 */
export function checkPropertyValue(name: string, value: unknown): string | null {
  if (value === null && IMAGE_ID_PROPERTIES.has(name)) return null;
  if (typeof value !== 'string') throw invalidInput(name, 'must be a string');
  if (value.length > 65_535) throw invalidInput(name, 'must be at most 65535 characters');
  if (IMAGE_ID_PROPERTIES.has(name) && !isUuid(value))
    throw invalidInput(name, 'must be an image id (a UUID)');
  return value;
}

// ---------------------------------------------------------------- JSON

/** An image as Glance v2 returns it: base attributes, then the extra properties flattened beside them. */
export function imageJson(record: ImageRecord): Record<string, unknown> {
  return {
    ...extraProperties(record),
    id: record.id,
    name: record.name,
    status: record.status,
    visibility: record.visibility,
    protected: record.protected,
    disk_format: glanceDiskFormat(record),
    container_format: glanceContainerFormat(record),
    size: record.size,
    virtual_size: record.virtualSize,
    checksum: record.checksum,
    os_hash_algo: record.osHashAlgo,
    os_hash_value: record.osHashValue,
    owner: record.owner,
    min_disk: record.minDisk,
    min_ram: record.minRam,
    tags: record.tags,
    created_at: isoTime(Date.parse(record.createdAt)),
    updated_at: isoTime(Date.parse(record.updatedAt)),
    self: `/v2/images/${record.id}`,
    file: `/v2/images/${record.id}/file`,
    schema: '/v2/schemas/image',
  };
}

/** The extra properties a client sees (the cloud's hidden bookkeeping left out). */
export function extraProperties(record: ImageRecord): Record<string, string> {
  const extra: Record<string, string> = {};
  for (const [k, v] of Object.entries(record.properties))
    if (!RESERVED_PREFIXES.some((p) => k.startsWith(p)) && !BASE_ATTRIBUTES.has(k)) extra[k] = v;
  return extra;
}

/** An image member as Glance v2 returns it. */
export function memberJson(m: MemberRecord): Record<string, unknown> {
  return {
    image_id: m.imageId,
    member_id: m.memberId,
    status: m.status,
    created_at: isoTime(Date.parse(m.createdAt)),
    updated_at: isoTime(Date.parse(m.updatedAt)),
    schema: '/v2/schemas/member',
  };
}
