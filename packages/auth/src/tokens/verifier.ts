import { type Clock, systemClock } from '../internal/clock.js';
import { unauthorized } from '../internal/errors.js';
import type { RevocationSource, RevocationSubject } from '../revocation/events.js';
import { contextOf, type TokenClaims, type TokenContext, tokenClaimsSchema } from './claims.js';
import { decodeJws, verifyBytes } from './jws.js';
import type { KeySource } from './key-repository.js';

/** Options of {@link TokenVerifier}. */
export interface TokenVerifierOptions {
  /** Public keys by `kid`. */
  keys: KeySource;
  /** Revocation events; without one, no token is ever considered revoked. */
  revocations?: RevocationSource;
  /** Expected `iss`. */
  issuer: string;
  /** This service's audience: the token's `aud` must contain it. */
  audience: string;
  /** Leeway for clock differences on `exp`, `nbf` and `iat`, in seconds (default 30). */
  clockToleranceSeconds?: number;
  /** Verified tokens kept in the cache (default 10 000; 0 disables the cache). */
  cacheSize?: number;
  clock?: Clock;
}

interface CacheEntry {
  context: TokenContext;
  subject: RevocationSubject;
  notAfter: number;
  keysVersion: number;
  revocationVersion: number;
  kid: string;
}

/** The fields of a token's claims that revocation events are matched against. Pure. */
export function revocationSubjectOf(context: TokenContext): RevocationSubject {
  return {
    userId: context.userId,
    userDomainId: context.userDomain.id,
    ...(context.project ? { projectId: context.project.id, projectDomainId: context.project.domain.id } : {}),
    ...(context.domain ? { domainId: context.domain.id } : {}),
    roles: context.roles,
    auditId: context.auditId,
    auditChainId: context.auditChainId,
    ...(context.applicationCredentialId ? { applicationCredentialId: context.applicationCredentialId } : {}),
    issuedAt: context.issuedAt,
  };
}

/**
 * Verifies tokens locally: signature with the key named by `kid` (whose algorithm the header must name
 * exactly, so `alg: none` and algorithm confusion are impossible), then the registered claims, then
 * revocation. Results are cached by the token text until expiry; a cached result is re-checked only when the
 * key set or the revocation list changed, so a hot token costs one Map lookup and a clock read.
 */
export class TokenVerifier {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly cacheSize: number;
  private readonly toleranceMs: number;
  private readonly clock: Clock;

  constructor(private readonly options: TokenVerifierOptions) {
    this.cacheSize = options.cacheSize ?? 10_000;
    this.toleranceMs = (options.clockToleranceSeconds ?? 30) * 1000;
    this.clock = options.clock ?? systemClock;
  }

  /** Verifies `token` and returns its context; throws `Unauthorized` with `details.reason` otherwise. */
  verify(token: string): TokenContext {
    if (typeof token !== 'string' || token.length === 0)
      throw unauthorized('missing_token', 'no token was given');
    const now = this.clock();
    const hit = this.cache.get(token);
    if (hit) return this.recheck(token, hit, now);
    const { context, kid } = this.verifyFully(token, now);
    const subject = revocationSubjectOf(context);
    this.checkRevocation(subject);
    if (this.cacheSize > 0) {
      if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(token, {
        context,
        subject,
        kid,
        notAfter: context.expiresAt + this.toleranceMs,
        keysVersion: this.options.keys.version,
        revocationVersion: this.options.revocations?.version ?? 0,
      });
    }
    return context;
  }

  /** Drops every cached result. */
  clearCache(): void {
    this.cache.clear();
  }

  private recheck(token: string, entry: CacheEntry, now: number): TokenContext {
    if (now >= entry.notAfter) {
      this.cache.delete(token);
      throw unauthorized('expired', 'the token has expired');
    }
    if (entry.keysVersion !== this.options.keys.version) {
      if (!this.options.keys.verificationKey(entry.kid)) {
        this.cache.delete(token);
        throw unauthorized('unknown_kid', 'the token was signed with a key that is no longer trusted');
      }
      entry.keysVersion = this.options.keys.version;
    }
    const revocations = this.options.revocations;
    if (revocations && entry.revocationVersion !== revocations.version) {
      try {
        this.checkRevocation(entry.subject);
      } catch (error) {
        this.cache.delete(token);
        throw error;
      }
      entry.revocationVersion = revocations.version;
    }
    return entry.context;
  }

  private checkRevocation(subject: RevocationSubject): void {
    const event = this.options.revocations?.findMatch(subject);
    if (event) throw unauthorized('revoked', 'the token has been revoked', { event: event.id });
  }

  private verifyFully(token: string, now: number): { context: TokenContext; kid: string } {
    const jws = decodeJws(token);
    const { alg, kid, crit } = jws.header;
    if (alg !== 'EdDSA' && alg !== 'ES256')
      throw unauthorized('alg_not_allowed', 'the token algorithm is not accepted', {
        alg: String(alg).slice(0, 16),
      });
    // Both accepted algorithms make 64-byte signatures; anything else is a truncated or padded token.
    if (jws.signature.length !== 64)
      throw unauthorized('malformed', 'the token signature has the wrong length');
    if (crit !== undefined) throw unauthorized('malformed', 'the token has critical header extensions');
    if (typeof kid !== 'string') throw unauthorized('unknown_kid', 'the token header has no kid');
    const key = this.options.keys.verificationKey(kid);
    if (!key)
      throw unauthorized('unknown_kid', 'the token was signed with an unknown key', {
        kid: kid.slice(0, 64),
      });
    // The key decides the algorithm; a header that names another one is an algorithm-confusion attempt.
    if (key.alg !== alg) throw unauthorized('alg_not_allowed', 'the token algorithm does not match its key');
    if (!verifyBytes(key.alg, key.key, Buffer.from(jws.signingInput), jws.signature))
      throw unauthorized('bad_signature', 'the token signature does not verify');
    const claims = this.parseClaims(jws.payload);
    this.checkClaims(claims, now);
    return { context: contextOf(token, claims), kid };
  }

  private parseClaims(payload: Buffer): TokenClaims {
    let raw: unknown;
    try {
      raw = JSON.parse(payload.toString('utf8'));
    } catch {
      throw unauthorized('malformed', 'the token payload is not JSON');
    }
    const parsed = tokenClaimsSchema.safeParse(raw);
    if (!parsed.success) throw unauthorized('invalid_claims', 'the token claims are not valid');
    return parsed.data;
  }

  private checkClaims(claims: TokenClaims, now: number): void {
    const tol = this.toleranceMs;
    if (claims.iss !== this.options.issuer)
      throw unauthorized('wrong_issuer', 'the token comes from another issuer');
    const aud = typeof claims.aud === 'string' ? [claims.aud] : claims.aud;
    if (!aud.includes(this.options.audience))
      throw unauthorized('wrong_audience', 'the token is not meant for this service');
    if (claims.exp * 1000 + tol <= now) throw unauthorized('expired', 'the token has expired');
    if ((claims.nbf !== undefined && claims.nbf * 1000 - tol > now) || claims.iat * 1000 - tol > now)
      throw unauthorized('not_yet_valid', 'the token is not valid yet');
  }
}
