import { z } from 'zod';

const ref = z.object({ id: z.string().min(1).max(255), name: z.string().min(1).max(255) }).strict();

/** The scope a token carries: a project (with its domain), a domain, or the whole system. Absent when unscoped. */
export const tokenScopeSchema = z.union([
  z.object({ project: ref.extend({ domain: ref }).strict() }).strict(),
  z.object({ domain: ref }).strict(),
  z.object({ system: z.literal('all') }).strict(),
]);

/**
 * The payload of a Nubes token: registered JWT claims plus the tenant context, kept small (no catalog)
 * so that a project-scoped token stays well under 1 KB.
 */
export const tokenClaimsSchema = z
  .object({
    iss: z.string().min(1),
    aud: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    sub: z.string().min(1).max(255),
    // Milliseconds are kept (RFC 7519 allows a non-integer NumericDate) so a token issued just after a
    // revocation in the same second is not caught by it.
    iat: z.number().nonnegative(),
    exp: z.number().nonnegative(),
    nbf: z.number().nonnegative().optional(),
    user: z.object({ name: z.string().min(1).max(255), domain: ref }).strict(),
    scope: tokenScopeSchema.optional(),
    roles: z.array(z.string().min(1).max(255)).max(256),
    methods: z.array(z.string().min(1).max(64)).min(1).max(8),
    audit_ids: z.array(z.string().min(1).max(64)).min(1).max(2),
    app_cred: z.string().min(1).max(255).optional(),
  })
  .strict();

/** The decoded, validated payload of a token. */
export type TokenClaims = z.output<typeof tokenClaimsSchema>;
/** The scope part of {@link TokenClaims}. */
export type TokenScope = z.output<typeof tokenScopeSchema>;

/** What a verified token says, in the shape services use. */
export interface TokenContext {
  /** The token itself, to forward to other services. */
  readonly token: string;
  readonly userId: string;
  readonly userName: string;
  readonly userDomain: { readonly id: string; readonly name: string };
  /** `project`, `domain`, `system` or `unscoped`. */
  readonly scopeType: 'project' | 'domain' | 'system' | 'unscoped';
  readonly project?: {
    readonly id: string;
    readonly name: string;
    readonly domain: { id: string; name: string };
  };
  /** The domain of a domain-scoped token. */
  readonly domain?: { readonly id: string; readonly name: string };
  /** Effective role names, implication applied. */
  readonly roles: readonly string[];
  readonly methods: readonly string[];
  readonly auditId: string;
  /** The audit id of the first token in a rescoping chain (equal to `auditId` for an original token). */
  readonly auditChainId: string;
  readonly applicationCredentialId?: string;
  /** Issue and expiry times in ms since the epoch. */
  readonly issuedAt: number;
  readonly expiresAt: number;
  readonly claims: TokenClaims;
}

/** Builds the {@link TokenContext} of validated claims. Pure. */
export function contextOf(token: string, claims: TokenClaims): TokenContext {
  const scope = claims.scope;
  const scopeType = !scope
    ? 'unscoped'
    : 'project' in scope
      ? 'project'
      : 'domain' in scope
        ? 'domain'
        : 'system';
  return Object.freeze({
    token,
    userId: claims.sub,
    userName: claims.user.name,
    userDomain: claims.user.domain,
    scopeType,
    ...(scope && 'project' in scope ? { project: scope.project } : {}),
    ...(scope && 'domain' in scope ? { domain: scope.domain } : {}),
    roles: Object.freeze([...claims.roles]),
    methods: claims.methods,
    auditId: claims.audit_ids[0] as string,
    auditChainId: claims.audit_ids[claims.audit_ids.length - 1] as string,
    ...(claims.app_cred ? { applicationCredentialId: claims.app_cred } : {}),
    issuedAt: Math.round(claims.iat * 1000),
    expiresAt: Math.round(claims.exp * 1000),
    claims,
  });
}
