import { randomBytes } from 'node:crypto';
import { type Clock, systemClock } from '../internal/clock.js';
import type { TokenClaims, TokenScope } from './claims.js';
import { signJws } from './jws.js';
import type { KeyRepository } from './key-repository.js';

/** Who and what a new token is for; the issuer adds times, audit ids, issuer and audience. */
export interface TokenSubject {
  userId: string;
  userName: string;
  userDomain: { id: string; name: string };
  scope?: TokenScope;
  /** Effective role names (implication already applied). */
  roles: readonly string[];
  methods: readonly string[];
  /** When rescoping: the audit chain id of the token the new one comes from. */
  auditChainId?: string;
  applicationCredentialId?: string;
  /** Caps the expiry (ms), as rescoping and application credentials do. */
  notAfter?: number;
}

/** Options of {@link TokenIssuer}. */
export interface TokenIssuerOptions {
  /** `iss` of every token. */
  issuer: string;
  /** `aud` of every token: the services that accept it. */
  audience: string | string[];
  /** Token lifetime in seconds (default 3600). */
  lifetimeSeconds?: number;
  clock?: Clock;
}

/** Keystone's audit id form: 16 random bytes, base64url (22 characters). */
export function newAuditId(): string {
  return randomBytes(16).toString('base64url');
}

/** Signs tokens with the primary key of a {@link KeyRepository}. */
export class TokenIssuer {
  private readonly clock: Clock;
  /** Token lifetime in ms. */
  readonly lifetimeMs: number;

  constructor(
    private readonly keys: KeyRepository,
    private readonly options: TokenIssuerOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.lifetimeMs = (options.lifetimeSeconds ?? 3600) * 1000;
  }

  /** Issues a token for `subject`; returns the compact JWT and its claims. */
  issue(subject: TokenSubject): { token: string; claims: TokenClaims } {
    const now = this.clock();
    const exp = Math.min(now + this.lifetimeMs, subject.notAfter ?? Number.POSITIVE_INFINITY);
    const auditId = newAuditId();
    const claims: TokenClaims = {
      iss: this.options.issuer,
      aud: this.options.audience,
      sub: subject.userId,
      iat: now / 1000,
      exp: Math.floor(exp / 1000),
      user: { name: subject.userName, domain: subject.userDomain },
      ...(subject.scope ? { scope: subject.scope } : {}),
      roles: [...subject.roles],
      methods: [...subject.methods],
      audit_ids: subject.auditChainId ? [auditId, subject.auditChainId] : [auditId],
      ...(subject.applicationCredentialId ? { app_cred: subject.applicationCredentialId } : {}),
    };
    const key = this.keys.signingKey();
    return { token: signJws({ alg: key.alg, typ: 'JWT', kid: key.kid }, claims, key.key), claims };
  }
}
