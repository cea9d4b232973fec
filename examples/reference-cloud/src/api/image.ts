/**
 * The reference cloud's image service: Glance v2 as python-openstackclient 6.0 and openstacksdk use it,
 * built only from `@nubes/images` (records and checked, content-addressed data), `@nubes/quota` (the image
 * count) and `@nubes/auth` (policy).
 */
import { pipeline } from 'node:stream/promises';
import type { AuthService, TokenContext } from '@nubes/auth';
import { invalidInput, isNubesError, NubesError } from '@nubes/core';
import {
  type CreateImageRecordInput,
  IMAGE_STATUSES,
  type ImageRecord,
  type ImageStore,
  type MemberRecord,
  type MemberStatus,
} from '@nubes/images';
import type { Quota } from '@nubes/quota';
import {
  checkBoolean,
  checkContainerFormat,
  checkDiskFormat,
  checkMinimum,
  checkName,
  checkPropertyCount,
  checkPropertyName,
  checkPropertyValue,
  checkTag,
  checkTags,
  checkVisibility,
  formatProperties,
  GLANCE_VISIBILITIES,
  type GlanceContainerFormat,
  type GlanceDiskFormat,
  glanceContainerFormat,
  glanceDiskFormat,
  imageJson,
  isUuid,
  MAX_TAGS,
  memberJson,
  storeContainerFormat,
  storeDiskFormat,
} from '../image/glance.js';
import { applyImagePatch, JSON_PATCH_TYPES } from '../image/patch.js';
import {
  type ApiContext,
  Router,
  readBody,
  readJson,
  requestId,
  requiredString,
  type ServiceApi,
  sendEmpty,
  sendJson,
} from './http.js';

/** Options of {@link ImageApi}. */
export interface ImageApiOptions {
  /** Identity and policy: tokens are verified by the server, decisions are `auth.policy`'s. */
  auth: AuthService;
  /**
   * The admin project. Its admins are cloud admins through the policy's `cloud_admin` rule (see `openAuth`),
   * which is what this service asks, so a deployment's policy file can widen or narrow who that is.
   */
  adminProjectId: string;
  /** Where records and data live. */
  images: ImageStore;
  /** Holds the per-project image count (`images`). */
  quota: Quota;
  /** The largest upload accepted, in bytes (Glance's `image_size_cap`; default 1 TiB, as Glance's). */
  maxImageBytes?: number;
}

/** Glance's default `image_size_cap`. */
export const DEFAULT_MAX_IMAGE_BYTES = 2 ** 40;

// Glance's `limit_param_default` and `api_limit_max`.
const DEFAULT_LIMIT = 25;
const MAX_LIMIT = 1000;

// How long a create may hold its quota reservation before the sweeper takes it back (a crash mid-create).
const RESERVATION_TTL_MS = 60_000;

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  410: 'Gone',
  413: 'Request Entity Too Large',
  415: 'Unsupported Media Type',
  416: 'Requested Range Not Satisfiable',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};

/**
 * Glance's error body: webob's JSON rendering, `{ code: "404 Not Found", title, message }`. openstacksdk
 * prints `message` after the status line.
 */
export function glanceError(status: number, message: string): Record<string, unknown> {
  const title = TITLES[status] ?? 'Error';
  return { code: `${status} ${title}`, title, message };
}

// The versions this API answers as: v2.5 (Newton) has everything served here (members, tags, deactivation);
// later ones add import, stores and hidden images, which it does not serve.
const VERSIONS: readonly [string, string][] = [
  ['v2.5', 'CURRENT'],
  ['v2.4', 'SUPPORTED'],
  ['v2.3', 'SUPPORTED'],
  ['v2.2', 'SUPPORTED'],
  ['v2.1', 'SUPPORTED'],
  ['v2.0', 'SUPPORTED'],
];

const MEMBER_STATUSES: readonly MemberStatus[] = ['pending', 'accepted', 'rejected'];

// Sort keys Glance takes (its `SUPPORTED_SORT_KEYS`), compared on the image's JSON.
const SORT_KEYS = new Set([
  'name',
  'status',
  'container_format',
  'disk_format',
  'size',
  'virtual_size',
  'id',
  'created_at',
  'updated_at',
  'visibility',
  'owner',
  'min_disk',
  'min_ram',
  'protected',
]);

// Query parameters of GET /v2/images that are not property filters.
const LIST_PARAMS = new Set([
  'limit',
  'marker',
  'sort_key',
  'sort_dir',
  'sort',
  'name',
  'status',
  'visibility',
  'owner',
  'tag',
  'member_status',
  'protected',
  'disk_format',
  'container_format',
  'size_min',
  'size_max',
  'os_hidden',
]);

/** Who is asking. */
interface Caller {
  token: TokenContext;
  /** The project of a project-scoped token. */
  project: string | undefined;
  /** A cloud admin (the policy's `cloud_admin`): sees and may change every image. */
  admin: boolean;
}

/**
 * Glance v2 over an {@link ImageStore}: version discovery (`/image`, `/image/versions`), `/v2/images` (list
 * with filters, sorting and paging; create), `/v2/images/{id}` (show, JSON-patch update, delete),
 * `/v2/images/{id}/file` (streamed upload and download with ranges), tags, deactivate/reactivate and members.
 *
 * Tenancy is Glance's: a project sees its own images, public and community ones and those shared with it;
 * anything else is a 404, as if it did not exist. Only owners (and cloud admins) change an image, and only
 * cloud admins make one public.
 */
export class ImageApi implements ServiceApi {
  readonly type = 'image';
  readonly name = 'glance';
  readonly prefix = '/image';
  private readonly router = new Router();
  private readonly auth: AuthService;
  private readonly images: ImageStore;
  private readonly quota: Quota;
  private readonly maxImageBytes: number;

  constructor(options: ImageApiOptions) {
    this.auth = options.auth;
    this.images = options.images;
    this.quota = options.quota;
    this.maxImageBytes = options.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES;
    if (!Number.isSafeInteger(this.maxImageBytes) || this.maxImageBytes < 1)
      throw invalidInput('options.maxImageBytes', 'must be a positive integer');
    const r = this.router;
    // keystoneauth discovers the version from the endpoint's root, which Glance answers with 300.
    r.on('GET', '/', (ctx) => sendJson(ctx, 300, versions(ctx.base)));
    r.on('GET', '/versions', (ctx) => sendJson(ctx, 200, versions(ctx.base)));
    r.on('GET', '/v2/images', (ctx) => this.list(ctx));
    r.on('POST', '/v2/images', (ctx) => this.create(ctx));
    r.on('GET', '/v2/images/:id', (ctx) => this.show(ctx));
    r.on('PATCH', '/v2/images/:id', (ctx) => this.update(ctx));
    r.on('DELETE', '/v2/images/:id', (ctx) => this.remove(ctx));
    r.on('PUT', '/v2/images/:id/file', (ctx) => this.upload(ctx));
    r.on('GET', '/v2/images/:id/file', (ctx) => this.download(ctx));
    r.on('PUT', '/v2/images/:id/tags/:tag', (ctx) => this.tag(ctx, true));
    r.on('DELETE', '/v2/images/:id/tags/:tag', (ctx) => this.tag(ctx, false));
    r.on('POST', '/v2/images/:id/actions/deactivate', (ctx) => this.activation(ctx, false));
    r.on('POST', '/v2/images/:id/actions/reactivate', (ctx) => this.activation(ctx, true));
    r.on('GET', '/v2/images/:id/members', (ctx) => this.listMembers(ctx));
    r.on('POST', '/v2/images/:id/members', (ctx) => this.addMember(ctx));
    r.on('GET', '/v2/images/:id/members/:member', (ctx) => this.showMember(ctx));
    r.on('PUT', '/v2/images/:id/members/:member', (ctx) => this.setMemberStatus(ctx));
    r.on('DELETE', '/v2/images/:id/members/:member', (ctx) => this.removeMember(ctx));
  }

  endpoint(base: string): string {
    return `${base}/image`;
  }

  handle(ctx: ApiContext): Promise<void> {
    return this.router.dispatch(ctx);
  }

  errorBody(status: number, message: string): unknown {
    return glanceError(status, message);
  }

  // ---------------------------------------------------------------- who may see and change what

  private caller(ctx: ApiContext): Caller {
    const token = ctx.token();
    return {
      token,
      project: token.project?.id,
      admin: this.auth.policy.authorize(token, 'cloud_admin').allowed,
    };
  }

  /** Whether `caller` may see `record` at all (Glance's visibility rules; membership in any status counts). */
  private async canSee(caller: Caller, record: ImageRecord): Promise<boolean> {
    if (caller.admin || record.owner === caller.project) return true;
    if (record.visibility === 'public' || record.visibility === 'community') return true;
    if (record.visibility !== 'shared' || !caller.project) return false;
    return (await this.images.listMembers(record.id)).some((m) => m.memberId === caller.project);
  }

  /** The image `id` if the caller may see it; otherwise the same 404 as for an image that does not exist. */
  private async visible(ctx: ApiContext, caller: Caller): Promise<ImageRecord> {
    const id = ctx.params.id as string;
    // openstackclient looks a name up by GETting it in the id slot first: it needs a 404 to fall back to ?name=.
    if (!isUuid(id)) throw noImage(id);
    let record: ImageRecord;
    try {
      record = await this.images.get(id);
    } catch (error) {
      if (isNubesError(error, 'NotFound')) throw noImage(id);
      throw error;
    }
    if (!(await this.canSee(caller, record))) throw noImage(id);
    this.auth.policy.enforce(caller.token, 'image:images:get', {
      project_id: caller.project ?? record.owner,
      visibility: record.visibility,
    });
    return record;
  }

  /** Refuses (403) a change by anyone but a member of the owning project or a cloud admin. */
  private mayChange(caller: Caller, record: ImageRecord, action = 'image:images:update'): void {
    this.auth.policy.enforce(caller.token, action, { project_id: record.owner });
  }

  // ---------------------------------------------------------------- images

  private async list(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    this.auth.policy.enforce(caller.token, 'image:images:list', { project_id: caller.project ?? '' });
    const q = ctx.url.searchParams;
    const query = parseListQuery(q);
    const records = await this.allImages();
    const memberships = await this.membershipsOf(caller, records);
    const rows = records
      .filter((r) => listedFor(caller, r, query, memberships.get(r.id)) && matches(r, query))
      .map((record) => ({ record, json: imageJson(record) }));
    rows.sort((a, b) => {
      for (const { key, dir } of query.sort) {
        const c = compareValues(sortValue(a, key), sortValue(b, key));
        if (c !== 0) return dir === 'asc' ? c : -c;
      }
      return 0;
    });
    let start = 0;
    if (query.marker !== undefined) {
      const at = rows.findIndex((row) => row.record.id === query.marker);
      if (at < 0) throw invalidInput('marker', `Invalid marker. Image ${query.marker} could not be found.`);
      start = at + 1;
    }
    const page = rows.slice(start, start + query.limit);
    const body: Record<string, unknown> = {
      images: page.map((row) => row.json),
      first: '/v2/images',
      schema: '/v2/schemas/images',
    };
    const last = page.at(-1);
    if (last && start + page.length < rows.length) {
      // Glance's next link is relative to the API root; openstacksdk strips the version and follows it.
      const next = new URLSearchParams(q);
      next.set('marker', last.record.id);
      next.set('limit', String(query.limit));
      body.next = `/v2/images?${next.toString()}`;
    }
    sendJson(ctx, 200, body);
  }

  /** Every record, read in pages of the store's maximum. */
  private async allImages(): Promise<ImageRecord[]> {
    const out: ImageRecord[] = [];
    let marker: string | undefined;
    do {
      const page = await this.images.list({
        limit: 1000,
        sortKey: 'id',
        sortDir: 'asc',
        ...(marker ? { marker } : {}),
      });
      out.push(...page.images);
      marker = page.next;
    } while (marker);
    return out;
  }

  /** The caller's membership status of each shared image of another project (the listing filters on it). */
  private async membershipsOf(caller: Caller, records: ImageRecord[]): Promise<Map<string, MemberStatus>> {
    const out = new Map<string, MemberStatus>();
    if (!caller.project) return out;
    for (const r of records) {
      if (r.visibility !== 'shared' || r.owner === caller.project) continue;
      const mine = (await this.images.listMembers(r.id)).find((m) => m.memberId === caller.project);
      if (mine) out.set(r.id, mine.status);
    }
    return out;
  }

  private async create(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const { input, owner } = parseCreate(await readJson(ctx.request), caller);
    this.auth.policy.enforce(caller.token, 'image:images:create', { project_id: owner });
    if (input.visibility === 'public')
      this.auth.policy.enforce(caller.token, 'image:images:publicize', { project_id: owner });
    // Reserve, create, commit: a refusal of the create gives the count back, and a process that dies in
    // between leaves a reservation the quota sweeper expires.
    const reservation = await this.quota.reserve(owner, { images: 1 }, { ttlMs: RESERVATION_TTL_MS });
    let record: ImageRecord;
    try {
      record = await this.images.create(input);
    } catch (error) {
      await this.quota.rollback(reservation).catch(() => {});
      throw error;
    }
    try {
      await this.quota.commit(reservation);
    } catch (error) {
      await this.images.delete(record.id).catch(() => {});
      await this.quota.rollback(reservation).catch(() => {});
      throw error;
    }
    sendJson(ctx, 201, imageJson(record), { location: `${ctx.base}/image/v2/images/${record.id}` });
  }

  private async show(ctx: ApiContext): Promise<void> {
    const record = await this.visible(ctx, this.caller(ctx));
    sendJson(ctx, 200, imageJson(record));
  }

  private async update(ctx: ApiContext): Promise<void> {
    const type = mediaType(ctx);
    if (!(JSON_PATCH_TYPES as readonly string[]).includes(type))
      throw new NubesError(
        'Unsupported',
        `Unsupported Content-Type: ${type || '(none)'}; use ${JSON_PATCH_TYPES[0]}`,
        {
          details: { field: 'content-type' },
        },
      );
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    this.mayChange(caller, record);
    const raw = await readBody(ctx.request);
    let operations: unknown;
    try {
      operations = JSON.parse(raw.toString('utf8'));
    } catch {
      throw invalidInput('body', 'is not valid JSON');
    }
    const patch = applyImagePatch(record, operations, type === JSON_PATCH_TYPES[1]);
    if (patch.publicize) this.mayChange(caller, record, 'image:images:publicize');
    const updated =
      Object.keys(patch.update).length > 0 ? await this.images.update(record.id, patch.update) : record;
    sendJson(ctx, 200, imageJson(updated));
  }

  private async remove(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    this.mayChange(caller, record, 'image:images:delete');
    if (record.protected)
      throw new NubesError('Forbidden', `Image ${record.id} is protected and cannot be deleted.`, {
        details: { imageId: record.id, reason: 'protected' },
      });
    await this.images.delete(record.id);
    // Keyed by the image: a retried delete (or two racing ones) gives the count back once. A crash between
    // the delete and this leaves usage one high until `quota.repair` recounts it.
    await this.quota.release(record.owner, { images: 1 }, { idempotencyKey: `image-delete-${record.id}` });
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- data

  private async upload(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    this.mayChange(caller, record);
    const type = mediaType(ctx);
    if (type !== 'application/octet-stream')
      throw new NubesError(
        'Unsupported',
        `Unsupported Content-Type: ${type || '(none)'}; use application/octet-stream`,
        {
          details: { field: 'content-type' },
        },
      );
    // Checked here, before the store moves the image to saving, so these refusals change nothing.
    if (record.status !== 'queued')
      throw new NubesError(
        'Conflict',
        `Image status transition from ${record.status} to saving is not allowed`,
        {
          details: { imageId: record.id, status: record.status },
        },
      );
    if (glanceDiskFormat(record) === null || glanceContainerFormat(record) === null)
      throw invalidInput(
        'disk_format',
        'Properties disk_format, container_format must be set prior to saving data.',
      );
    const declared = Number(ctx.request.headers['content-length']);
    if (Number.isFinite(declared) && declared > this.maxImageBytes)
      throw new NubesError(
        'PayloadTooLarge',
        `Image exceeds the storage quota: ${declared} bytes is over the ${this.maxImageBytes} byte cap`,
        {
          details: { field: 'content-length', limit: this.maxImageBytes },
        },
      );
    // A body without a length is refused by the store once it passes the cap; the image is then killed, as
    // the store kills any upload whose data it refused.
    await this.images.upload(record.id, ctx.request, { maxBytes: this.maxImageBytes });
    sendEmpty(ctx, 204);
  }

  private async download(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    if (record.status === 'deactivated')
      throw new NubesError(
        'Forbidden',
        'The requested image has been deactivated. Image data download is forbidden.',
        {
          details: { imageId: record.id, status: record.status },
        },
      );
    // Glance answers an image without data with an empty 204, not an error.
    if (record.status !== 'active' || record.size === null) return sendEmpty(ctx, 204);
    const range = parseRange(ctx.request.headers.range, record.size);
    if (range === 'unsatisfiable')
      return sendJson(ctx, 416, glanceError(416, `Requested range not satisfiable (size ${record.size})`), {
        'content-range': `bytes */${record.size}`,
      });
    const data = await this.images.download(record.id, range);
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(data.contentLength),
      'accept-ranges': 'bytes',
      'x-openstack-request-id': requestId(),
    };
    // openstacksdk checks the whole download against Content-MD5 (a hex MD5, as Glance sends it).
    if (!data.range && data.checksum) headers['content-md5'] = data.checksum;
    if (data.range) headers['content-range'] = `bytes ${data.range.start}-${data.range.end}/${data.size}`;
    ctx.response.writeHead(data.range ? 206 : 200, headers);
    if (ctx.method === 'HEAD') {
      data.stream.destroy();
      ctx.response.end();
      return;
    }
    try {
      await pipeline(data.stream, ctx.response);
    } catch (error) {
      // The client hung up (or read its Content-Length and closed before the end was flushed): nobody is
      // left to answer, and pipeline has already closed the blob.
      if ((error as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') return;
      throw error;
    }
  }

  // ---------------------------------------------------------------- tags and actions

  private async tag(ctx: ApiContext, add: boolean): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    this.mayChange(caller, record);
    const tag = checkTag(ctx.params.tag, 'tag');
    const has = record.tags.includes(tag);
    if (add && !has) {
      if (record.tags.length >= MAX_TAGS)
        throw new NubesError('PayloadTooLarge', `Maximum number of tags (${MAX_TAGS}) exceeded`, {
          details: { field: 'tag', limit: MAX_TAGS },
        });
      await this.images.update(record.id, { tags: [...record.tags, tag] });
    } else if (!add) {
      if (!has) throw new NubesError('NotFound', `Tag ${tag} not found`, { details: { field: 'tag' } });
      await this.images.update(record.id, { tags: record.tags.filter((t) => t !== tag) });
    }
    sendEmpty(ctx, 204);
  }

  private async activation(ctx: ApiContext, active: boolean): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    this.mayChange(caller, record);
    if (active) await this.images.reactivate(record.id);
    else await this.images.deactivate(record.id);
    sendEmpty(ctx, 204);
  }

  // ---------------------------------------------------------------- members

  private async listMembers(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    const all = await this.images.listMembers(record.id);
    // A member project sees only its own membership, as in Glance.
    const members =
      caller.admin || record.owner === caller.project
        ? all
        : all.filter((m) => m.memberId === caller.project);
    sendJson(ctx, 200, { members: members.map(memberJson), schema: '/v2/schemas/members' });
  }

  private async addMember(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    this.mayChange(caller, record);
    const memberId = requiredString((await readJson(ctx.request)).member, 'member');
    if (record.visibility !== 'shared')
      throw new NubesError('Forbidden', 'Only shared images have members.', {
        details: { imageId: record.id, visibility: record.visibility },
      });
    sendJson(ctx, 200, memberJson(await this.images.addMember(record.id, memberId)));
  }

  private async member(ctx: ApiContext, caller: Caller, record: ImageRecord): Promise<MemberRecord> {
    const memberId = ctx.params.member as string;
    const found = (await this.images.listMembers(record.id)).find((m) => m.memberId === memberId);
    const mayRead = caller.admin || record.owner === caller.project || memberId === caller.project;
    if (!found || !mayRead)
      throw new NubesError('NotFound', `Member ${memberId} of image ${record.id} not found`, {
        details: { imageId: record.id, memberId },
      });
    return found;
  }

  private async showMember(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    sendJson(ctx, 200, memberJson(await this.member(ctx, caller, record)));
  }

  private async setMemberStatus(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    const found = await this.member(ctx, caller, record);
    // Only the member project answers an offer (Glance refuses the owner too).
    if (found.memberId !== caller.project && !caller.admin)
      throw new NubesError('Forbidden', `You are not permitted to modify 'status' on this image member.`, {
        details: { imageId: record.id, memberId: found.memberId },
      });
    this.auth.policy.enforce(caller.token, 'image:images:update', { project_id: found.memberId });
    const status = (await readJson(ctx.request)).status;
    if (typeof status !== 'string' || !(MEMBER_STATUSES as readonly string[]).includes(status))
      throw invalidInput('status', `must be one of ${MEMBER_STATUSES.join(', ')}`);
    const updated = await this.images.setMemberStatus(record.id, found.memberId, status as MemberStatus);
    sendJson(ctx, 200, memberJson(updated));
  }

  private async removeMember(ctx: ApiContext): Promise<void> {
    const caller = this.caller(ctx);
    const record = await this.visible(ctx, caller);
    this.mayChange(caller, record);
    const found = await this.member(ctx, caller, record);
    await this.images.removeMember(record.id, found.memberId);
    sendEmpty(ctx, 204);
  }
}

// ---------------------------------------------------------------- helpers

function noImage(id: string): NubesError {
  return new NubesError('NotFound', `No image found with ID ${id}`, { details: { kind: 'image', id } });
}

function versions(base: string): Record<string, unknown> {
  return {
    versions: VERSIONS.map(([id, status]) => ({
      id,
      status,
      links: [{ rel: 'self', href: `${base}/image/v2/` }],
    })),
  };
}

/** The request's media type, lower-cased, without parameters. */
function mediaType(ctx: ApiContext): string {
  return (ctx.request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

/** What a client may set at creation, checked; the owner it will have. */
function parseCreate(
  body: Record<string, unknown>,
  caller: Caller,
): { input: CreateImageRecordInput; owner: string } {
  let owner = caller.project;
  let disk: GlanceDiskFormat | null = null;
  let container: GlanceContainerFormat | null = null;
  const input: CreateImageRecordInput = { owner: '', diskFormat: 'raw' };
  const properties: Record<string, string> = {};
  for (const [key, value] of Object.entries(body)) {
    switch (key) {
      case 'id':
        if (typeof value !== 'string' || !isUuid(value)) throw invalidInput('id', 'must be a UUID');
        input.id = value.toLowerCase();
        break;
      case 'owner': {
        const wanted = requiredString(value, 'owner');
        if (!caller.admin && wanted !== caller.project)
          throw new NubesError('Forbidden', `You are not permitted to create images owned by '${wanted}'.`, {
            details: { field: 'owner' },
          });
        owner = wanted;
        break;
      }
      case 'name': {
        const name = checkName(value);
        if (name !== null) input.name = name;
        break;
      }
      case 'visibility':
        input.visibility = checkVisibility(value);
        break;
      case 'protected':
        input.protected = checkBoolean(value, 'protected');
        break;
      case 'disk_format':
        disk = checkDiskFormat(value);
        break;
      case 'container_format':
        container = checkContainerFormat(value);
        break;
      case 'min_disk':
        input.minDisk = checkMinimum(value, 'min_disk');
        break;
      case 'min_ram':
        input.minRam = checkMinimum(value, 'min_ram');
        break;
      case 'tags':
        input.tags = checkTags(value);
        break;
      default: {
        const checked = checkPropertyValue(checkPropertyName(key), value);
        if (checked !== null) properties[key] = checked;
      }
    }
  }
  checkPropertyCount(properties);
  if (!owner) throw invalidInput('owner', 'is required when the token is not scoped to a project');
  input.owner = owner;
  input.diskFormat = storeDiskFormat(disk);
  input.containerFormat = storeContainerFormat(container);
  for (const [k, v] of Object.entries(formatProperties(disk, container))) if (v !== null) properties[k] = v;
  input.properties = properties;
  return { input, owner };
}

interface ListQuery {
  limit: number;
  marker: string | undefined;
  sort: { key: string; dir: 'asc' | 'desc' }[];
  visibility: string | undefined;
  memberStatus: MemberStatus | 'all';
  name: string | undefined;
  status: string | undefined;
  owner: string | undefined;
  tags: string[];
  protected: boolean | undefined;
  diskFormat: string | undefined;
  containerFormat: string | undefined;
  sizeMin: number | undefined;
  sizeMax: number | undefined;
  hidden: boolean;
  properties: [string, string][];
}

function queryInt(q: URLSearchParams, key: string): number | undefined {
  const v = q.get(key);
  if (v === null) return undefined;
  if (!/^\d+$/.test(v)) throw invalidInput(key, 'must be a non-negative integer');
  return Number(v);
}

function queryBool(q: URLSearchParams, key: string): boolean | undefined {
  const v = q.get(key)?.toLowerCase();
  if (v === undefined) return undefined;
  if (v !== 'true' && v !== 'false') throw invalidInput(key, 'must be true or false');
  return v === 'true';
}

function sortDir(value: string, field: string): 'asc' | 'desc' {
  if (value !== 'asc' && value !== 'desc') throw invalidInput(field, 'must be asc or desc');
  return value;
}

function sortKey(value: string, field: string): string {
  if (!SORT_KEYS.has(value)) throw invalidInput(field, `must be one of ${[...SORT_KEYS].join(', ')}`);
  return value;
}

/** Checks the query of GET /v2/images; a bad value is 400 naming the parameter, as Glance answers. */
function parseListQuery(q: URLSearchParams): ListQuery {
  const keys = q.getAll('sort_key');
  const dirs = q.getAll('sort_dir');
  const sortParam = q.get('sort');
  let sort: ListQuery['sort'];
  if (sortParam !== null) {
    if (keys.length || dirs.length)
      throw invalidInput('sort', 'cannot be combined with sort_key or sort_dir');
    sort = sortParam.split(',').map((part) => {
      const [key = '', dir = 'desc'] = part.trim().split(':');
      return { key: sortKey(key, 'sort'), dir: sortDir(dir, 'sort') };
    });
  } else {
    if (dirs.length > Math.max(keys.length, 1))
      throw invalidInput('sort_dir', 'has more values than sort_key');
    const wanted = keys.length ? keys : ['created_at'];
    sort = wanted.map((key, i) => ({
      key: sortKey(key, 'sort_key'),
      // One direction applies to every key; otherwise they pair up, the rest descending (as Glance).
      dir: sortDir(dirs.length === 1 ? (dirs[0] as string) : (dirs[i] ?? 'desc'), 'sort_dir'),
    }));
  }
  // The id breaks ties so that markers are stable.
  if (!sort.some((s) => s.key === 'id')) sort.push({ key: 'id', dir: sort[0]?.dir ?? 'desc' });

  const visibility = q.get('visibility') ?? undefined;
  if (
    visibility !== undefined &&
    visibility !== 'all' &&
    !(GLANCE_VISIBILITIES as readonly string[]).includes(visibility)
  )
    throw invalidInput('visibility', `must be one of ${GLANCE_VISIBILITIES.join(', ')}, all`);
  const memberStatus = q.get('member_status') ?? 'accepted';
  if (memberStatus !== 'all' && !(MEMBER_STATUSES as readonly string[]).includes(memberStatus))
    throw invalidInput('member_status', `must be one of ${MEMBER_STATUSES.join(', ')}, all`);
  const status = q.get('status') ?? undefined;
  if (status !== undefined && !(IMAGE_STATUSES as readonly string[]).includes(status))
    throw invalidInput('status', `must be one of ${IMAGE_STATUSES.join(', ')}`);
  const diskFormat = q.get('disk_format') ?? undefined;
  if (diskFormat !== undefined) checkDiskFormat(diskFormat);
  const containerFormat = q.get('container_format') ?? undefined;
  if (containerFormat !== undefined) checkContainerFormat(containerFormat);
  const marker = q.get('marker') ?? undefined;
  const properties: [string, string][] = [];
  for (const [key, value] of q) if (!LIST_PARAMS.has(key)) properties.push([key, value]);
  return {
    limit: Math.min(queryInt(q, 'limit') ?? DEFAULT_LIMIT, MAX_LIMIT),
    marker,
    sort,
    visibility,
    memberStatus: memberStatus as MemberStatus | 'all',
    name: q.get('name') ?? undefined,
    status,
    owner: q.get('owner') ?? undefined,
    tags: q.getAll('tag'),
    protected: queryBool(q, 'protected'),
    diskFormat,
    containerFormat,
    sizeMin: queryInt(q, 'size_min'),
    sizeMax: queryInt(q, 'size_max'),
    hidden: queryBool(q, 'os_hidden') ?? false,
    properties,
  };
}

/**
 * Whether a listing shows `r` to `caller`, as Glance decides: by default a project's own images, public ones
 * and shares it accepted (`member_status`); community images only when asked for; an admin sees everything.
 */
function listedFor(
  caller: Caller,
  r: ImageRecord,
  q: ListQuery,
  membership: MemberStatus | undefined,
): boolean {
  if (q.visibility && q.visibility !== 'all' && r.visibility !== q.visibility) return false;
  if (caller.admin) return true;
  const own = r.owner === caller.project;
  switch (r.visibility) {
    case 'public':
      return true;
    case 'community':
      return own || q.visibility === 'community' || q.visibility === 'all';
    case 'private':
      return own;
    case 'shared':
      return own || (membership !== undefined && (q.memberStatus === 'all' || q.memberStatus === membership));
  }
}

/** The listing's filters other than visibility. */
function matches(r: ImageRecord, q: ListQuery): boolean {
  // No image is hidden here (os_hidden is not kept), so asking for hidden ones finds none.
  if (q.hidden) return false;
  if (q.name !== undefined && r.name !== q.name) return false;
  if (q.status !== undefined && r.status !== q.status) return false;
  if (q.owner !== undefined && r.owner !== q.owner) return false;
  if (!q.tags.every((t) => r.tags.includes(t))) return false;
  if (q.protected !== undefined && r.protected !== q.protected) return false;
  if (q.diskFormat !== undefined && glanceDiskFormat(r) !== q.diskFormat) return false;
  if (q.containerFormat !== undefined && glanceContainerFormat(r) !== q.containerFormat) return false;
  if (q.sizeMin !== undefined && (r.size ?? -1) < q.sizeMin) return false;
  if (q.sizeMax !== undefined && (r.size === null || r.size > q.sizeMax)) return false;
  return q.properties.every(([k, v]) => r.properties[k] === v);
}

/** The value a listing sorts on: the JSON's, but the record's own timestamps, which keep milliseconds. */
function sortValue(row: { record: ImageRecord; json: Record<string, unknown> }, key: string): unknown {
  if (key === 'created_at') return row.record.createdAt;
  if (key === 'updated_at') return row.record.updatedAt;
  return row.json[key];
}

/** Orders JSON values of one sort key: nulls first, then numbers, strings and booleans by their order. */
function compareValues(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  return (a as string | number) < (b as string | number) ? -1 : 1;
}

/**
 * The byte range of a `Range` header for data of `size` bytes: `undefined` for no range or one this answers
 * whole (malformed, several ranges), as RFC 9110 lets a server ignore them; `unsatisfiable` for a 416.
 */
function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? undefined : Number(m[2]);
  if (last !== undefined && last < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end: Math.min(last ?? size - 1, size - 1) };
}
