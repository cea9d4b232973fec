import { randomBytes } from 'node:crypto';
import { notFound, parseInput } from '@nubes/core';
import { z } from 'zod';
import type { IdentityStore } from '../identity/identity-store.js';
import { idSchema } from '../identity/model.js';
import { type Clock, systemClock } from '../internal/clock.js';
import { listAll, toJson } from '../internal/store-util.js';

/** An access key as listed: everything but the secret. */
export interface AccessKey {
  accessKeyId: string;
  userId: string;
  projectId: string;
  enabled: boolean;
  createdAt: number;
}

interface StoredAccessKey extends AccessKey {
  secretAccessKey: string;
}

const createSchema = z.object({ userId: idSchema, projectId: idSchema }).strict();
const accessKeyIdSchema = z.string().regex(/^NUB[A-Z2-7]{17}$/, 'is not an access key id');

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** A 20-character id in AWS's shape (`NUB` + 17 base32 characters), so tools that check the form accept it. */
function newAccessKeyId(): string {
  const bytes = randomBytes(17);
  return `NUB${[...bytes].map((b) => BASE32[b & 31]).join('')}`;
}

/**
 * Access key / secret key pairs owned by a user and scoped to a project, for requests signed with
 * AWS Signature Version 4. The secret is kept as is in the Store because HMAC verification needs it, as in
 * AWS and Keystone's EC2 credentials: protect the Store accordingly.
 */
export class AccessKeyStore {
  private readonly clock: Clock;

  constructor(
    private readonly identity: IdentityStore,
    clock?: Clock,
  ) {
    this.clock = clock ?? systemClock;
  }

  /** Creates a key pair; the secret is returned only here. The user needs a role on the project. */
  async create(input: {
    userId: string;
    projectId: string;
  }): Promise<AccessKey & { secretAccessKey: string }> {
    const p = parseInput(createSchema, input, 'accessKey');
    await this.identity.getUser(p.userId);
    await this.identity.getProject(p.projectId);
    const key: StoredAccessKey = {
      accessKeyId: newAccessKeyId(),
      secretAccessKey: randomBytes(30).toString('base64'),
      userId: p.userId,
      projectId: p.projectId,
      enabled: true,
      createdAt: this.clock(),
    };
    await this.identity.store.put(this.identity.keys.accessKey(key.accessKeyId), toJson(key), {
      ifRevision: 0,
    });
    return key;
  }

  /** The key with its secret, for the SigV4 verifier; `undefined` when unknown or disabled. */
  async secretOf(accessKeyId: string): Promise<StoredAccessKey | undefined> {
    if (!accessKeyIdSchema.safeParse(accessKeyId).success) return undefined;
    const entry = await this.identity.store.get<StoredAccessKey>(this.identity.keys.accessKey(accessKeyId));
    return entry?.value.enabled ? entry.value : undefined;
  }

  /** The access keys of a user (without secrets). */
  async list(userId: string): Promise<AccessKey[]> {
    parseInput(idSchema, userId, 'userId');
    const all = await listAll<StoredAccessKey>(this.identity.store, this.identity.keys.accessKeys());
    return all
      .filter((e) => e.value.userId === userId)
      .map(({ value: { secretAccessKey: _s, ...rest } }) => rest);
  }

  /** Deletes an access key. */
  async delete(accessKeyId: string): Promise<void> {
    parseInput(accessKeyIdSchema, accessKeyId, 'accessKeyId');
    if (!(await this.identity.store.delete(this.identity.keys.accessKey(accessKeyId))))
      throw notFound('access key', accessKeyId);
  }
}
