import { randomBytes } from 'node:crypto';
import { invalidInput, notFound, parseInput } from '@nubes/core';
import { z } from 'zod';
import type { IdentityStore } from '../identity/identity-store.js';
import { idSchema, nameSchema } from '../identity/model.js';
import { type Clock, systemClock } from '../internal/clock.js';
import { safeEqual, sha256Hex } from '../internal/encoding.js';
import { conflict, forbidden, unauthorized } from '../internal/errors.js';
import { toJson } from '../internal/store-util.js';
import type { RevocationEvent } from '../revocation/events.js';
import { buildEvent, revocationPrefix } from '../revocation/revocation-list.js';

/** An application credential as listed: everything but the secret. */
export interface ApplicationCredential {
  id: string;
  name: string;
  userId: string;
  projectId: string;
  /** The roles (names) it delegates: a subset of the user's roles on the project at creation. */
  roles: string[];
  /** Expiry in ms since the epoch, if any. */
  expiresAt?: number;
  createdAt: number;
}

interface StoredApplicationCredential extends ApplicationCredential {
  secretHash: string;
}

const createSchema = z
  .object({
    userId: idSchema,
    projectId: idSchema,
    name: nameSchema,
    roles: z.array(nameSchema).min(1).max(64).optional(),
    expiresAt: z.number().int().positive().optional(),
  })
  .strict();

/**
 * Application credentials in Keystone's manner: a secret bound to a user, a project and a subset of the
 * user's roles there. The secret is 32 random bytes generated here, so a SHA-256 digest compared in constant
 * time protects it as well as a slow hash would, without scrypt's cost on every login.
 */
export class ApplicationCredentialStore {
  private readonly clock: Clock;

  constructor(
    private readonly identity: IdentityStore,
    private readonly options: {
      clock?: Clock;
      revocationRetentionMs?: number;
      onRevoke?: (e: RevocationEvent) => void;
    } = {},
  ) {
    this.clock = options.clock ?? systemClock;
  }

  /**
   * Creates an application credential. `roles` default to all the user's roles on the project; asking for a
   * role the user does not hold there is `Forbidden`. The secret is returned only here.
   */
  async create(input: z.input<typeof createSchema>): Promise<ApplicationCredential & { secret: string }> {
    const p = parseInput(createSchema, input, 'applicationCredential');
    const held = await this.identity.effectiveRoles(p.userId, { project: p.projectId });
    const roles = p.roles ?? (await this.identity.assignedRoles(p.userId, { project: p.projectId }));
    const missing = roles.filter((r) => !held.includes(r));
    if (missing.length > 0 || roles.length === 0)
      throw forbidden('an application credential can only delegate roles the user holds on the project', {
        missing,
      });
    if (p.expiresAt !== undefined && p.expiresAt <= this.clock())
      throw invalidInput('applicationCredential.expiresAt', 'must be in the future');
    const secret = randomBytes(32).toString('base64url');
    const cred: StoredApplicationCredential = {
      id: randomBytes(16).toString('hex'),
      name: p.name,
      userId: p.userId,
      projectId: p.projectId,
      roles: [...new Set(roles)].sort(),
      ...(p.expiresAt !== undefined ? { expiresAt: p.expiresAt } : {}),
      createdAt: this.clock(),
      secretHash: sha256Hex(secret),
    };
    const keys = this.identity.keys;
    await this.identity.store.transaction(async (tx) => {
      const nameKey = `${keys.prefix}names/app-creds/${p.userId}/${p.name.toLowerCase()}`;
      if (await tx.get(nameKey))
        throw conflict(`the user already has an application credential named "${p.name}"`);
      tx.put(keys.applicationCredential(cred.id), toJson(cred));
      tx.put(nameKey, cred.id);
    });
    const { secretHash: _h, ...rest } = cred;
    return { ...rest, secret };
  }

  /** Checks an id (or user and name) and secret; returns the credential or throws `Unauthorized`. */
  async check(
    ref: { id: string } | { name: string; userId: string },
    secret: string,
  ): Promise<ApplicationCredential> {
    const id = 'id' in ref ? ref.id : await this.idOf(ref.userId, ref.name);
    const entry = id
      ? await this.identity.store.get<StoredApplicationCredential>(
          this.identity.keys.applicationCredential(id),
        )
      : undefined;
    // Hash even when the credential is unknown so that both failures take the same time.
    const ok = safeEqual(sha256Hex(secret), entry?.value.secretHash ?? sha256Hex(`${secret}!`));
    if (!entry || !ok) throw unauthorized('invalid_credentials', 'the application credential is invalid');
    if (entry.value.expiresAt !== undefined && entry.value.expiresAt <= this.clock())
      throw unauthorized('expired', 'the application credential has expired');
    const { secretHash: _h, ...rest } = entry.value;
    return rest;
  }

  /** The application credential with this id (without secret). */
  async get(id: string): Promise<ApplicationCredential> {
    parseInput(idSchema, id, 'id');
    const entry = await this.identity.store.get<StoredApplicationCredential>(
      this.identity.keys.applicationCredential(id),
    );
    if (!entry) throw notFound('application credential', id);
    const { secretHash: _h, ...rest } = entry.value;
    return rest;
  }

  /** Deletes an application credential and revokes the tokens obtained with it. */
  async delete(id: string): Promise<void> {
    const cred = await this.get(id);
    const event = buildEvent(
      { applicationCredentialId: id },
      this.clock(),
      this.options.revocationRetentionMs ?? 3_600_000,
    );
    const keys = this.identity.keys;
    await this.identity.store.transaction((tx) => {
      tx.delete(keys.applicationCredential(id));
      tx.delete(`${keys.prefix}names/app-creds/${cred.userId}/${cred.name.toLowerCase()}`);
      tx.put(`${revocationPrefix(keys.prefix)}${event.id}`, toJson(event));
    });
    this.options.onRevoke?.(event);
  }

  private async idOf(userId: string, name: string): Promise<string | undefined> {
    const entry = await this.identity.store.get<string>(
      `${this.identity.keys.prefix}names/app-creds/${userId}/${name.toLowerCase()}`,
    );
    return entry?.value;
  }
}
