/**
 * Glance's JSON-patch image update (`application/openstack-images-v2.1-json-patch`) turned into one
 * `ImageStore.update` input. Pure: every operation is checked and applied to a copy first, so a refused
 * operation anywhere in the list changes nothing, as Glance saves only after the whole list applied.
 */
import { invalidInput, NubesError } from '@nubes/core';
import type { ImageRecord, UpdateImageRecordInput, Visibility } from '@nubes/images';
import {
  BASE_ATTRIBUTES,
  checkBoolean,
  checkContainerFormat,
  checkDiskFormat,
  checkMinimum,
  checkName,
  checkPropertyCount,
  checkPropertyName,
  checkPropertyValue,
  checkTags,
  checkVisibility,
  extraProperties,
  formatProperties,
  type GlanceContainerFormat,
  type GlanceDiskFormat,
  glanceContainerFormat,
  glanceDiskFormat,
  READ_ONLY_ATTRIBUTES,
  RESERVED_ATTRIBUTES,
  storeContainerFormat,
  storeDiskFormat,
} from './glance.js';

/** The content types Glance takes for a PATCH (v2.0 is the older draft-4 flavour: `add` does not overwrite). */
export const JSON_PATCH_TYPES = [
  'application/openstack-images-v2.1-json-patch',
  'application/openstack-images-v2.0-json-patch',
] as const;

/** What a patch does to an image. */
export interface ImagePatch {
  /** The store update; empty when the patch changes nothing. */
  update: UpdateImageRecordInput;
  /** The patch makes the image public (the caller must be allowed to publicize). */
  publicize: boolean;
}

interface State {
  name: string | null;
  visibility: Visibility;
  protected: boolean;
  minDisk: number;
  minRam: number;
  tags: string[];
  disk: GlanceDiskFormat | null;
  container: GlanceContainerFormat | null;
  props: Record<string, string>;
}

type Op = 'add' | 'replace' | 'remove';

/**
 * Checks and applies `operations` (the parsed PATCH body) to `record`. Throws without side effects: 400
 * (`InvalidInput` naming the field) for a malformed operation or value, 403 for a read-only or reserved
 * attribute or a base attribute removed, 409 for replacing or removing a property that does not exist.
 * `draft4` is the v2.0 media type, where `add` of an existing attribute is a 409.
 */
export function applyImagePatch(record: ImageRecord, operations: unknown, draft4 = false): ImagePatch {
  if (!Array.isArray(operations)) throw invalidInput('body', 'must be a JSON list of patch operations');
  const before: State = {
    name: record.name,
    visibility: record.visibility,
    protected: record.protected,
    minDisk: record.minDisk,
    minRam: record.minRam,
    tags: [...record.tags],
    disk: glanceDiskFormat(record),
    container: glanceContainerFormat(record),
    props: extraProperties(record),
  };
  const s: State = { ...before, tags: [...before.tags], props: { ...before.props } };
  operations.forEach((raw, i) => {
    const { op, attr, value } = parseOperation(raw, i);
    if (BASE_ATTRIBUTES.has(attr)) applyBase(s, record, op, attr, value, draft4);
    else applyProperty(s, op, checkPropertyName(attr), value, draft4);
  });
  checkPropertyCount(s.props);

  const update: UpdateImageRecordInput = {};
  if (s.name !== before.name) update.name = s.name;
  if (s.visibility !== before.visibility) update.visibility = s.visibility;
  if (s.protected !== before.protected) update.protected = s.protected;
  if (s.minDisk !== before.minDisk) update.minDisk = s.minDisk;
  if (s.minRam !== before.minRam) update.minRam = s.minRam;
  if (s.tags.join('\n') !== before.tags.join('\n')) update.tags = s.tags;
  const properties: Record<string, string | null> = {};
  for (const k of new Set([...Object.keys(before.props), ...Object.keys(s.props)]))
    if (s.props[k] !== before.props[k]) properties[k] = s.props[k] ?? null;
  if (s.disk !== before.disk || s.container !== before.container)
    Object.assign(properties, formatProperties(s.disk, s.container));
  if (Object.keys(properties).length > 0) update.properties = properties;
  return { update, publicize: s.visibility === 'public' && before.visibility !== 'public' };
}

function parseOperation(raw: unknown, i: number): { op: Op; attr: string; value: unknown } {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw invalidInput(`body[${i}]`, 'must be a patch operation object');
  const o = raw as Record<string, unknown>;
  if (o.op !== 'add' && o.op !== 'replace' && o.op !== 'remove')
    throw invalidInput(`body[${i}].op`, 'must be add, replace or remove');
  if (typeof o.path !== 'string' || !o.path.startsWith('/'))
    throw invalidInput(`body[${i}].path`, 'must be a JSON pointer such as /name');
  const segments = o.path
    .slice(1)
    .split('/')
    .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
  // Glance patches only top-level attributes (but for /locations/N, which this cloud does not keep).
  if (segments.length !== 1 || segments[0] === '')
    throw invalidInput(`body[${i}].path`, `${o.path} is not an attribute this API can patch`);
  if (o.op !== 'remove' && !('value' in o)) throw invalidInput(`body[${i}].value`, 'is required');
  return { op: o.op, attr: segments[0] as string, value: o.value };
}

function applyBase(
  s: State,
  record: ImageRecord,
  op: Op,
  attr: string,
  value: unknown,
  draft4: boolean,
): void {
  if (RESERVED_ATTRIBUTES.has(attr))
    throw new NubesError('Forbidden', `Attribute '${attr}' is reserved.`, { details: { field: attr } });
  if (READ_ONLY_ATTRIBUTES.has(attr))
    throw new NubesError('Forbidden', `Attribute '${attr}' is read-only.`, { details: { field: attr } });
  if (op === 'remove')
    throw new NubesError('Forbidden', `Property ${attr} may not be removed.`, { details: { field: attr } });
  if (op === 'add' && draft4)
    throw new NubesError('Conflict', `Property ${attr} already present.`, { details: { field: attr } });
  switch (attr) {
    case 'name':
      s.name = checkName(value);
      return;
    case 'visibility':
      s.visibility = checkVisibility(value);
      return;
    case 'protected':
      s.protected = checkBoolean(value, 'protected');
      return;
    case 'min_disk':
      s.minDisk = checkMinimum(value, 'min_disk');
      return;
    case 'min_ram':
      s.minRam = checkMinimum(value, 'min_ram');
      return;
    case 'tags':
      s.tags = checkTags(value);
      return;
    case 'disk_format': {
      const disk = checkDiskFormat(value);
      formatChange(record, 'disk_format', storeDiskFormat(disk) === record.diskFormat);
      s.disk = disk;
      return;
    }
    case 'container_format': {
      const container = checkContainerFormat(value);
      formatChange(record, 'container_format', storeContainerFormat(container) === record.containerFormat);
      s.container = container;
      return;
    }
    default:
      throw new NubesError('Forbidden', `Attribute '${attr}' is read-only.`, { details: { field: attr } });
  }
}

/**
 * Glance changes a format only while the image has no data; the store also fixes the format it checks uploads
 * against at creation, so only a change it stores alike (unset to `raw`, `bare` to `ova`) is possible here.
 */
function formatChange(record: ImageRecord, attr: string, storedAlike: boolean): void {
  if (record.status !== 'queued')
    throw new NubesError('Forbidden', `Attribute ${attr} can be only replaced for a queued image.`, {
      details: { field: attr, status: record.status },
    });
  if (!storedAlike)
    throw new NubesError(
      'Forbidden',
      `Attribute ${attr} can only change here between formats stored alike (unset and raw; bare, ova and compressed); create a new image instead.`,
      { details: { field: attr } },
    );
}

function applyProperty(s: State, op: Op, name: string, value: unknown, draft4: boolean): void {
  const exists = name in s.props;
  if (op !== 'add' && !exists)
    throw new NubesError('Conflict', `Property ${name} does not exist.`, { details: { field: name } });
  if (op === 'remove') {
    delete s.props[name];
    return;
  }
  if (op === 'add' && exists && draft4)
    throw new NubesError('Conflict', `Property ${name} already present.`, { details: { field: name } });
  const checked = checkPropertyValue(name, value);
  if (checked === null) delete s.props[name];
  else s.props[name] = checked;
}
