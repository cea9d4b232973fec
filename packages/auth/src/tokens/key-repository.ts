import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
} from 'node:crypto';
import { NubesError, parseInput, type Store, type Watch } from '@nubes/core';
import { z } from 'zod';
import { type Clock, systemClock } from '../internal/clock.js';
import { listAll, toJson } from '../internal/store-util.js';
import type { SigningAlgorithm } from './jws.js';

/** A key's place in the rotation: `staged` (next to sign, already verifies), `primary` (signs), `secondary` (verifies only). */
export type KeyState = 'staged' | 'primary' | 'secondary';

/** A public key a verifier may use. */
export interface VerificationKey {
  kid: string;
  alg: SigningAlgorithm;
  key: KeyObject;
}

/** Where a verifier gets its public keys; `version` changes when the set changes. */
export interface KeySource {
  readonly version: number;
  verificationKey(kid: string): VerificationKey | undefined;
}

/** A public JWK as published in the JWKS document. */
export interface PublicJwk {
  kty: string;
  crv: string;
  x: string;
  y?: string;
  kid: string;
  alg: SigningAlgorithm;
  use: 'sig';
}

/** What the repository tells about a key (never its private part). */
export interface KeyInfo {
  kid: string;
  alg: SigningAlgorithm;
  state: KeyState;
  createdAt: number;
  /** Creation order: Keystone's key index, higher is newer. */
  serial: number;
}

interface StoredKey extends KeyInfo {
  privateJwk: JsonWebKey;
  publicJwk: PublicJwk;
}

/** Options of {@link KeyRepository.open}. */
export interface KeyRepositoryOptions {
  /** Store key prefix of the auth state (default `auth/`). */
  prefix?: string;
  /** Algorithm of newly created keys (default `EdDSA`). */
  algorithm?: SigningAlgorithm;
  /** Keys kept, staged and primary included (default 3, Keystone's `max_active_keys`). At least 3. */
  maxActiveKeys?: number;
  /** Follow the Store so rotations made elsewhere apply at once (default true). */
  watch?: boolean;
  clock?: Clock;
}

const optionsSchema = z
  .object({
    prefix: z.string().optional(),
    algorithm: z.enum(['EdDSA', 'ES256']).optional(),
    maxActiveKeys: z.number().int().min(3).max(100).optional(),
    watch: z.boolean().optional(),
    clock: z.function().optional(),
  })
  .strict();

/** The RFC 7638 thumbprint of a public JWK, used as its `kid`. */
export function jwkThumbprint(jwk: { kty?: string; crv?: string; x?: string; y?: string }): string {
  const canonical =
    jwk.kty === 'EC'
      ? JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })
      : JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x });
  return createHash('sha256').update(canonical).digest('base64url');
}

/** A new key pair for `alg`, in its stored form. */
export function generateSigningKey(
  alg: SigningAlgorithm,
  state: KeyState,
  now: number,
  serial: number,
): StoredKey {
  const { privateKey, publicKey } =
    alg === 'EdDSA' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' });
  const kid = jwkThumbprint(pub);
  const publicJwk: PublicJwk = {
    kty: pub.kty as string,
    crv: pub.crv as string,
    x: pub.x as string,
    ...(pub.y ? { y: pub.y } : {}),
    kid,
    alg,
    use: 'sig',
  };
  return {
    kid,
    alg,
    state,
    createdAt: now,
    serial,
    privateJwk: privateKey.export({ format: 'jwk' }),
    publicJwk,
  };
}

/**
 * Signing keys kept in the Store and rotated in Keystone's manner: one `staged` key that verifiers already
 * know but nobody signs with yet, one `primary` that signs, and `secondary` keys that still verify tokens
 * signed before a rotation. Rotation promotes staged to primary, demotes primary to secondary, stages a new
 * key and drops the oldest secondaries beyond `maxActiveKeys`, so no token still valid is invalidated as
 * long as keys rotate no more often than once per token lifetime.
 */
export class KeyRepository implements KeySource {
  private keys = new Map<string, { info: StoredKey; verification: VerificationKey; signing?: KeyObject }>();
  private versionCounter = 0;
  private watcher: Watch | undefined;
  private readonly keyPrefix: string;
  private readonly algorithm: SigningAlgorithm;
  private readonly maxActiveKeys: number;
  private readonly clock: Clock;

  private constructor(
    private readonly store: Store,
    options: KeyRepositoryOptions,
  ) {
    this.keyPrefix = `${options.prefix ?? 'auth/'}signing-keys/`;
    this.algorithm = options.algorithm ?? 'EdDSA';
    this.maxActiveKeys = options.maxActiveKeys ?? 3;
    this.clock = options.clock ?? systemClock;
  }

  /** Opens the repository in `store`, creating a primary and a staged key on first use. */
  static async open(store: Store, options: KeyRepositoryOptions = {}): Promise<KeyRepository> {
    parseInput(optionsSchema, options, 'options');
    const repo = new KeyRepository(store, options);
    if (options.watch !== false) {
      repo.watcher = await store.watch(repo.keyPrefix);
      void repo.follow(repo.watcher);
    }
    await store.transaction(async (tx) => {
      if ((await tx.list(repo.keyPrefix, { limit: 1 })).items.length > 0) return;
      const now = repo.clock();
      for (const [serial, state] of (['primary', 'staged'] as const).entries()) {
        const key = generateSigningKey(repo.algorithm, state, now, serial);
        tx.put(`${repo.keyPrefix}${key.kid}`, toJson(key));
      }
    });
    await repo.refresh();
    return repo;
  }

  /** Changes whenever the key set changes. */
  get version(): number {
    return this.versionCounter;
  }

  /** The key that signs new tokens, with its private part. */
  signingKey(): { kid: string; alg: SigningAlgorithm; key: KeyObject } {
    for (const k of this.keys.values()) {
      if (k.info.state !== 'primary') continue;
      k.signing ??= createPrivateKey({ key: k.info.privateJwk, format: 'jwk' });
      return { kid: k.info.kid, alg: k.info.alg, key: k.signing };
    }
    throw new NubesError('Internal', 'the key repository has no primary key');
  }

  /** The public key with this `kid`, if the repository holds it in any state. */
  verificationKey(kid: string): VerificationKey | undefined {
    return this.keys.get(kid)?.verification;
  }

  /** Every key, newest first, without private parts. */
  list(): KeyInfo[] {
    return [...this.keys.values()]
      .map(({ info: { kid, alg, state, createdAt, serial } }) => ({ kid, alg, state, createdAt, serial }))
      .sort((a, b) => b.serial - a.serial);
  }

  /** The JWKS document (RFC 7517) of every key a token may be signed with: staged, primary and secondaries. */
  jwks(): { keys: PublicJwk[] } {
    return { keys: [...this.keys.values()].map((k) => k.info.publicJwk) };
  }

  /**
   * Rotates: staged becomes primary, primary becomes secondary, a new staged key is made (with
   * `algorithm`, default the repository's), and the oldest secondaries beyond `maxActiveKeys` are removed.
   */
  async rotate(options: { algorithm?: SigningAlgorithm } = {}): Promise<KeyInfo[]> {
    const o = parseInput(
      z.object({ algorithm: z.enum(['EdDSA', 'ES256']).optional() }).strict(),
      options,
      'options',
    );
    const now = this.clock();
    const algorithm = o.algorithm ?? this.algorithm;
    const generated = generateSigningKey(algorithm, 'staged', now, 0);
    await this.store.transaction(async (tx) => {
      const all = (await listAll<StoredKey>(tx, this.keyPrefix)).map((e) => e.value);
      const fresh = { ...generated, serial: Math.max(-1, ...all.map((k) => k.serial ?? 0)) + 1 };
      const staged = all.find((k) => k.state === 'staged');
      const next = all.map((k) => ({
        ...k,
        state: (k === staged
          ? 'primary'
          : k.state === 'primary' && staged
            ? 'secondary'
            : k.state) as KeyState,
      }));
      next.push(fresh);
      const secondaries = next.filter((k) => k.state === 'secondary').sort((a, b) => b.serial - a.serial);
      const keep = new Set(secondaries.slice(0, Math.max(0, this.maxActiveKeys - 2)).map((k) => k.kid));
      for (const k of next) {
        if (k.state === 'secondary' && !keep.has(k.kid)) tx.delete(`${this.keyPrefix}${k.kid}`);
        else tx.put(`${this.keyPrefix}${k.kid}`, toJson(k));
      }
    });
    await this.refresh();
    return this.list();
  }

  /** Reloads the keys from the Store. */
  async refresh(): Promise<void> {
    const entries = await listAll<StoredKey>(this.store, this.keyPrefix);
    const next = new Map<string, { info: StoredKey; verification: VerificationKey; signing?: KeyObject }>();
    for (const { value } of entries) {
      const old = this.keys.get(value.kid);
      next.set(value.kid, {
        info: value,
        verification: old?.verification ?? {
          kid: value.kid,
          alg: value.alg,
          key: createPublicKey({ key: value.publicJwk as unknown as JsonWebKey, format: 'jwk' }),
        },
        ...(old?.signing ? { signing: old.signing } : {}),
      });
    }
    this.keys = next;
    this.versionCounter++;
  }

  /** Stops following the Store. */
  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  private async follow(watch: Watch): Promise<void> {
    try {
      for await (const _change of watch) await this.refresh();
    } catch {
      // The watch ended (compaction or close): callers can still refresh() explicitly.
    }
  }
}
