import { createPublicKey } from 'node:crypto';
import { NubesError, parseInput } from '@nubes/core';
import { fetch as undiciFetch } from 'undici';
import { z } from 'zod';
import { type Clock, systemClock } from '../internal/clock.js';
import {
  matchesEvent,
  type RevocationEvent,
  type RevocationSource,
  type RevocationSubject,
  revocationEventSchema,
} from '../revocation/events.js';
import type { TokenContext } from './claims.js';
import type { SigningAlgorithm } from './jws.js';
import type { KeySource, VerificationKey } from './key-repository.js';
import { TokenVerifier } from './verifier.js';

/** A `fetch` like undici's (the default) or Node's global one. */
export type FetchLike = (
  url: string,
  init?: { headers?: Record<string, string>; signal?: AbortSignal },
) => Promise<{
  ok: boolean;
  status: number;
  json(): Promise<unknown>;
}>;

/** Options of {@link RemoteTokenVerifier}. */
export interface RemoteTokenVerifierOptions {
  /** URL of the auth service's JWKS document (`GET /v3/auth/jwks` of the token API handler). */
  jwksUrl: string;
  /** URL of the revocation feed (`GET /v3/OS-REVOKE/events`); without it revocation is not checked. */
  revocationsUrl?: string;
  issuer: string;
  audience: string;
  /** Least time between two JWKS fetches caused by unknown `kid`s, in ms (default 30 s). */
  minRefreshIntervalMs?: number;
  /** How often the revocation feed is polled, in ms (default 5 s). */
  revocationPollMs?: number;
  /** Timeout of each fetch in ms (default 5 s). */
  timeoutMs?: number;
  /** The HTTP client; default undici's `fetch` (keep-alive connections, the undici version this package pins). */
  fetch?: FetchLike;
  clockToleranceSeconds?: number;
  cacheSize?: number;
  clock?: Clock;
}

const jwkSchema = z.object({
  kty: z.enum(['OKP', 'EC']),
  crv: z.enum(['Ed25519', 'P-256']),
  x: z.string(),
  y: z.string().optional(),
  kid: z.string().min(1),
  alg: z.enum(['EdDSA', 'ES256']),
});

class JwksKeys implements KeySource {
  version = 0;
  private keys = new Map<string, VerificationKey>();

  set(jwks: unknown): void {
    const list = z.object({ keys: z.array(z.unknown()) }).safeParse(jwks);
    if (!list.success) throw new NubesError('Unavailable', 'the JWKS document is malformed');
    const next = new Map<string, VerificationKey>();
    for (const raw of list.data.keys) {
      const jwk = jwkSchema.safeParse(raw);
      // A key whose curve does not fit its algorithm is skipped: the pairing is what prevents confusion.
      if (!jwk.success || (jwk.data.alg === 'EdDSA') !== (jwk.data.crv === 'Ed25519')) continue;
      const { kid, alg, ...material } = jwk.data;
      next.set(kid, {
        kid,
        alg: alg as SigningAlgorithm,
        key: createPublicKey({ key: material, format: 'jwk' }),
      });
    }
    this.keys = next;
    this.version++;
  }

  verificationKey(kid: string): VerificationKey | undefined {
    return this.keys.get(kid);
  }
}

class FeedRevocations implements RevocationSource {
  version = 0;
  private events: RevocationEvent[] = [];

  set(events: RevocationEvent[]): void {
    if (events.length === this.events.length && events.every((e, i) => e.id === this.events[i]?.id)) return;
    this.events = events;
    this.version++;
  }

  findMatch(token: RevocationSubject): RevocationEvent | undefined {
    return this.events.find((e) => matchesEvent(e, token));
  }
}

/**
 * Verifies tokens in a service that does not hold the keys: it fetches the JWKS from the auth service,
 * caches it, fetches again when a token names an unknown `kid` (at most once per `minRefreshIntervalMs`, so
 * garbage tokens cannot make it hammer the auth service), polls the revocation feed, and verifies locally.
 */
export class RemoteTokenVerifier {
  private readonly keys = new JwksKeys();
  private readonly revocations = new FeedRevocations();
  private readonly verifier: TokenVerifier;
  private readonly fetch: FetchLike;
  private readonly clock: Clock;
  private lastKeyFetch = Number.NEGATIVE_INFINITY;
  private lastRevocationFetch = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;

  constructor(private readonly options: RemoteTokenVerifierOptions) {
    parseInput(
      z.object({
        jwksUrl: z.string().url(),
        revocationsUrl: z.string().url().optional(),
        issuer: z.string().min(1),
        audience: z.string().min(1),
      }),
      options,
      'options',
    );
    this.fetch = options.fetch ?? (undiciFetch as unknown as FetchLike);
    this.clock = options.clock ?? systemClock;
    this.verifier = new TokenVerifier({
      keys: this.keys,
      ...(options.revocationsUrl ? { revocations: this.revocations } : {}),
      issuer: options.issuer,
      audience: options.audience,
      clock: this.clock,
      ...(options.clockToleranceSeconds !== undefined
        ? { clockToleranceSeconds: options.clockToleranceSeconds }
        : {}),
      ...(options.cacheSize !== undefined ? { cacheSize: options.cacheSize } : {}),
    });
  }

  /** Verifies a token; fetches keys and revocations first when they are missing or stale. */
  async verify(token: string): Promise<TokenContext> {
    if (this.keys.version === 0) await this.refreshKeys();
    if (
      this.options.revocationsUrl &&
      this.clock() - this.lastRevocationFetch >= (this.options.revocationPollMs ?? 5000)
    )
      await this.refreshRevocations();
    try {
      return this.verifier.verify(token);
    } catch (error) {
      const unknownKid = error instanceof NubesError && error.details.reason === 'unknown_kid';
      if (!unknownKid || this.clock() - this.lastKeyFetch < (this.options.minRefreshIntervalMs ?? 30_000))
        throw error;
      await this.refreshKeys();
      return this.verifier.verify(token);
    }
  }

  /** Fetches the JWKS now (concurrent callers share one request). */
  refreshKeys(): Promise<void> {
    this.inflight ??= (async () => {
      try {
        this.lastKeyFetch = this.clock();
        this.keys.set(await this.get(this.options.jwksUrl));
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }

  /** Fetches the revocation feed now. */
  async refreshRevocations(): Promise<void> {
    if (!this.options.revocationsUrl) return;
    this.lastRevocationFetch = this.clock();
    const body = z
      .object({ events: z.array(revocationEventSchema) })
      .safeParse(await this.get(this.options.revocationsUrl));
    if (!body.success) throw new NubesError('Unavailable', 'the revocation feed is malformed');
    this.revocations.set(body.data.events as RevocationEvent[]);
  }

  private async get(url: string): Promise<unknown> {
    let response: Awaited<ReturnType<FetchLike>>;
    try {
      response = await this.fetch(url, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 5000),
      });
    } catch (cause) {
      throw new NubesError('Unavailable', `the auth service cannot be reached at ${url}`, { cause });
    }
    if (!response.ok)
      throw new NubesError('Unavailable', `the auth service answered ${response.status} for ${url}`);
    return response.json();
  }
}
