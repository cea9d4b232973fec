import { invalidInput } from '@nubes/core';
import { z } from 'zod';
import { IMAGE_STATUSES, type ImageStatus } from './status.js';

/** Disk formats Glance accepts; the inspector checks that an upload really is the one declared. */
export const DISK_FORMATS = ['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx', 'iso', 'aki', 'ari', 'ami'] as const;
/** A disk format. */
export type DiskFormat = (typeof DISK_FORMATS)[number];

/**
 * The format the inspector must find for a declared disk format: Amazon-style kernel (`aki`), ramdisk (`ari`)
 * and machine (`ami`) images are plain bytes, as Glance's format inspector treats them, so they are `raw`.
 */
export function inspectedFormatOf(diskFormat: DiskFormat): Exclude<DiskFormat, 'aki' | 'ari' | 'ami'> {
  return diskFormat === 'aki' || diskFormat === 'ari' || diskFormat === 'ami' ? 'raw' : diskFormat;
}
/** Container formats Glance accepts (metadata only: nothing here unpacks an OVF or a docker tarball). */
export const CONTAINER_FORMATS = ['bare', 'ovf', 'docker', 'aki', 'ari', 'ami'] as const;
/** A container format. */
export type ContainerFormat = (typeof CONTAINER_FORMATS)[number];
/** Who may see an image, as in Glance v2. */
export const VISIBILITIES = ['public', 'private', 'shared', 'community'] as const;
/** An image's visibility. */
export type Visibility = (typeof VISIBILITIES)[number];
/** Where a share stands with the project it was offered to. */
export type MemberStatus = 'pending' | 'accepted' | 'rejected';

/**
 * One image, with Glance v2's fields in camelCase (`disk_format` is `diskFormat`, `os_hash_value` is
 * `osHashValue`). Sizes are bytes; `minDisk` is GiB and `minRam` MiB, as in Glance.
 */
export interface ImageRecord {
  id: string;
  name: string | null;
  /** The owning project. */
  owner: string;
  status: ImageStatus;
  visibility: Visibility;
  protected: boolean;
  diskFormat: DiskFormat;
  containerFormat: ContainerFormat;
  /** Bytes of image data, once uploaded. */
  size: number | null;
  /** Guest-visible size in bytes, as the inspector read it. */
  virtualSize: number | null;
  /** MD5 of the data (Glance's legacy `checksum`), or null when the store computes none. */
  checksum: string | null;
  osHashAlgo: 'sha512' | null;
  osHashValue: string | null;
  /** `sha256:<hex>` of the data: the name of its blob in the content-addressed store. */
  digest: string | null;
  minDisk: number;
  minRam: number;
  tags: string[];
  properties: Record<string, string>;
  createdAt: string;
  updatedAt: string;
  /** When the current upload or import began (lets the sweeper tell a crashed one from a slow one). */
  transferStartedAt: string | null;
}

/** A project an image is shared with. */
export interface MemberRecord {
  imageId: string;
  /** The project offered the image. */
  memberId: string;
  status: MemberStatus;
  createdAt: string;
  updatedAt: string;
}

const name = z.string().min(1).max(255);
const tag = z.string().min(1).max(255);
const propertyKey = z
  .string()
  .min(1)
  .max(255)
  .refine((k) => !k.startsWith('os_glance'), 'the os_glance prefix is reserved');

/** Input of `ImageStore.create`. */
export const createImageRecordSchema = z.strictObject({
  /** A caller-chosen id (a UUID); a new one when absent. */
  id: z.uuid().optional(),
  name: name.optional(),
  owner: name,
  diskFormat: z.enum(DISK_FORMATS),
  containerFormat: z.enum(CONTAINER_FORMATS).default('bare'),
  visibility: z.enum(VISIBILITIES).default('shared'),
  protected: z.boolean().default(false),
  minDisk: z.number().int().min(0).default(0),
  minRam: z.number().int().min(0).default(0),
  tags: z.array(tag).max(128).default([]),
  properties: z.record(propertyKey, z.string().max(65535)).default({}),
});
/** What `ImageStore.create` takes. */
export type CreateImageRecordInput = z.input<typeof createImageRecordSchema>;

/** Input of `ImageStore.update`: the fields a client may change (data fields are the store's). */
export const updateImageRecordSchema = z.strictObject({
  name: name.nullable().optional(),
  visibility: z.enum(VISIBILITIES).optional(),
  protected: z.boolean().optional(),
  minDisk: z.number().int().min(0).optional(),
  minRam: z.number().int().min(0).optional(),
  tags: z.array(tag).max(128).optional(),
  /** Replaces every property; `null` for a key removes it. */
  properties: z.record(propertyKey, z.string().max(65535).nullable()).optional(),
});
/** What `ImageStore.update` takes. */
export type UpdateImageRecordInput = z.input<typeof updateImageRecordSchema>;

/** Keys `ImageStore.list` sorts by. */
export const SORT_KEYS = ['createdAt', 'updatedAt', 'name', 'size', 'status', 'id'] as const;

/** Input of `ImageStore.list`. */
export const listImagesSchema = z.strictObject({
  owner: name.optional(),
  visibility: z.enum(VISIBILITIES).optional(),
  /** Default: every status but `deleted`, as Glance lists. */
  status: z.enum(IMAGE_STATUSES as [ImageStatus, ...ImageStatus[]]).optional(),
  /** Images carrying every one of these tags. */
  tags: z.array(tag).max(128).optional(),
  name: name.optional(),
  /** Only what this project would see by default: its own, public ones, and shares it accepted. */
  visibleTo: name.optional(),
  sortKey: z.enum(SORT_KEYS).default('createdAt'),
  sortDir: z.enum(['asc', 'desc']).default('desc'),
  /** The id of the last image of the previous page. */
  marker: z.uuid().optional(),
  limit: z.number().int().min(1).max(1000).default(25),
});
/** What `ImageStore.list` takes. */
export type ListImagesOptions = z.input<typeof listImagesSchema>;

/** One page of images. */
export interface ImagePage {
  images: ImageRecord[];
  /** Pass as `marker` for the next page; absent on the last one. */
  next?: string;
}

function compare(a: ImageRecord, b: ImageRecord, key: (typeof SORT_KEYS)[number]): number {
  const x = a[key];
  const y = b[key];
  // Nulls sort first ascending, as PostgreSQL's NULLS FIRST on Glance's DESC default would put them last.
  if (x === y) return 0;
  if (x === null) return -1;
  if (y === null) return 1;
  return x < y ? -1 : 1;
}

/**
 * Filters, sorts and pages image records (pure: the store reads, this decides). Ties break on id so
 * markers are stable; a marker that is not among the filtered images is `InvalidInput`, as in Glance.
 */
export function selectImages(
  records: readonly ImageRecord[],
  acceptedShares: ReadonlySet<string>,
  options: z.output<typeof listImagesSchema>,
): ImagePage {
  const o = options;
  const wanted = records.filter(
    (r) =>
      (o.status ? r.status === o.status : r.status !== 'deleted') &&
      (!o.owner || r.owner === o.owner) &&
      (!o.visibility || r.visibility === o.visibility) &&
      (!o.name || r.name === o.name) &&
      (!o.tags || o.tags.every((t) => r.tags.includes(t))) &&
      (!o.visibleTo ||
        r.owner === o.visibleTo ||
        r.visibility === 'public' ||
        (r.visibility === 'community' && o.visibility === 'community') ||
        (r.visibility === 'shared' && acceptedShares.has(r.id))),
  );
  const sign = o.sortDir === 'asc' ? 1 : -1;
  wanted.sort((a, b) => sign * (compare(a, b, o.sortKey) || compare(a, b, 'id')));
  let start = 0;
  if (o.marker) {
    const at = wanted.findIndex((r) => r.id === o.marker);
    if (at < 0) throw invalidInput('options.marker', 'is not an image of this listing');
    start = at + 1;
  }
  const images = wanted.slice(start, start + o.limit);
  const last = images.at(-1);
  return start + o.limit < wanted.length && last ? { images, next: last.id } : { images };
}
