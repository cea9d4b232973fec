import { parseInput, type Store } from '@nubes/core';
import { z } from 'zod';
import { type AccessKey, AccessKeyStore } from '../credentials/access-keys.js';
import {
  type ApplicationCredential,
  ApplicationCredentialStore,
} from '../credentials/application-credentials.js';
import { IdentityStore, type LockoutOptions, type UserRef } from '../identity/identity-store.js';
import { expandRoles } from '../identity/implied-roles.js';
import {
  domainRefSchema,
  idSchema,
  nameSchema,
  type RoleAssignment,
  type Scope,
  type User,
} from '../identity/model.js';
import type { ScryptParams } from '../identity/password.js';
import { type Clock, systemClock } from '../internal/clock.js';
import { forbidden, unauthorized } from '../internal/errors.js';
import { DEFAULT_POLICY_RULES } from '../policy/default-policy.js';
import { Policy } from '../policy/policy.js';
import type { RevocationCriteria, RevocationEvent } from '../revocation/events.js';
import { RevocationList } from '../revocation/revocation-list.js';
import { storeReplayGuard } from '../sigv4/replay-guard.js';
import { type SigV4Request, sigv4RequestSchema } from '../sigv4/sign.js';
import { SigV4Verifier } from '../sigv4/verify.js';
import type { TokenContext, TokenScope } from '../tokens/claims.js';
import { TokenIssuer } from '../tokens/issuer.js';
import type { SigningAlgorithm } from '../tokens/jws.js';
import { type KeyInfo, KeyRepository, type PublicJwk } from '../tokens/key-repository.js';
import { TokenVerifier } from '../tokens/verifier.js';

/** Options of {@link AuthService.open}. */
export interface AuthServiceOptions {
  /** `iss` of the tokens (a URL of the auth service, by convention). */
  issuer: string;
  /** `aud` of the tokens; the local verifier accepts the first one. Default `nubes`. */
  audience?: string | string[];
  /** Token lifetime in seconds (default 3600). */
  tokenLifetimeSeconds?: number;
  /** Algorithm of new signing keys (default `EdDSA`). */
  algorithm?: SigningAlgorithm;
  /** Keys kept through rotations (default 3). */
  maxActiveKeys?: number;
  /** Store key prefix (default `auth/`). */
  prefix?: string;
  /** scrypt cost for new password hashes. */
  passwordHashing?: ScryptParams;
  /** Optional lockout after repeated failed passwords. */
  lockout?: LockoutOptions;
  /** The RBAC policy (default: {@link DEFAULT_POLICY_RULES}). */
  policy?: Policy;
  /** Clock leeway for token times, in seconds (default 30). */
  clockToleranceSeconds?: number;
  /** Verified tokens cached (default 10 000). */
  cacheSize?: number;
  /** SigV4: accepted region and service, and clock skew (default any, any, 5 minutes). */
  sigv4?: { region?: string; service?: string; maxSkewMs?: number };
  /** Allow rescoping a token that is already scoped (Keystone's `allow_rescope_scoped_token`; default false). */
  allowRescopeScopedToken?: boolean;
  clock?: Clock;
}

/** A newly issued token and what it says. */
export interface IssuedToken {
  token: string;
  context: TokenContext;
}

const scopeRequestSchema = z.union([
  z
    .object({
      project: z.union([
        z.object({ id: idSchema }).strict(),
        z.object({ name: nameSchema, domain: domainRefSchema }).strict(),
      ]),
    })
    .strict(),
  z.object({ domain: domainRefSchema }).strict(),
  z.object({ system: z.literal('all') }).strict(),
]);

/** The scope asked for at login: a project (by id, or name and domain), a domain, or the system. */
export type ScopeRequest = z.input<typeof scopeRequestSchema>;

const passwordLoginSchema = z
  .object({
    user: z.union([
      z.object({ id: idSchema }).strict(),
      z.object({ name: nameSchema, domain: domainRefSchema }).strict(),
    ]),
    password: z.string().min(1).max(4096),
    scope: scopeRequestSchema.optional(),
  })
  .strict();
const tokenLoginSchema = z.object({ token: z.string().min(1).max(8192), scope: scopeRequestSchema }).strict();
const appCredLoginSchema = z
  .object({
    id: idSchema.optional(),
    name: nameSchema.optional(),
    user: z
      .union([
        z.object({ id: idSchema }).strict(),
        z.object({ name: nameSchema, domain: domainRefSchema }).strict(),
      ])
      .optional(),
    secret: z.string().min(1).max(1024),
  })
  .strict()
  .refine((v) => v.id !== undefined || (v.name !== undefined && v.user !== undefined), {
    message: 'give the id, or the name and the user',
  });

/**
 * The auth center: identity, login by password / token / application credential / access key, token issue
 * and verification, revocation and key rotation, all over one `@nubes/core` Store. Services that only
 * verify tokens need a {@link TokenVerifier} (or the remote verifier), not this.
 */
export class AuthService {
  /** The RBAC policy. */
  readonly policy: Policy;
  /** Access keys for SigV4-signed requests. */
  readonly accessKeys: AccessKeyStore;
  /** Application credentials. */
  readonly applicationCredentials: ApplicationCredentialStore;
  private readonly sigv4: SigV4Verifier<{ userId: string; projectId: string }>;
  private readonly clock: Clock;

  private constructor(
    readonly store: Store,
    readonly identity: IdentityStore,
    readonly keys: KeyRepository,
    readonly revocations: RevocationList,
    readonly issuer: TokenIssuer,
    readonly verifier: TokenVerifier,
    private readonly options: AuthServiceOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.policy = options.policy ?? Policy.load({ ...DEFAULT_POLICY_RULES });
    this.accessKeys = new AccessKeyStore(identity, this.clock);
    this.applicationCredentials = new ApplicationCredentialStore(identity, {
      clock: this.clock,
      revocationRetentionMs: issuer.lifetimeMs,
      onRevoke: (e) => revocations.apply(e),
    });
    this.sigv4 = new SigV4Verifier(
      async (id) => {
        const key = await this.accessKeys.secretOf(id);
        return (
          key && {
            secretAccessKey: key.secretAccessKey,
            owner: { userId: key.userId, projectId: key.projectId },
          }
        );
      },
      // Replays are refused across every replica that shares this Store, not just this process.
      {
        ...options.sigv4,
        clock: this.clock,
        replayGuard: storeReplayGuard(store, `${options.prefix ?? 'auth/'}sigv4-replay/`),
      },
    );
  }

  /** Opens the auth state kept in `store`, bootstrapping the default domain, roles and signing keys on first use. */
  static async open(store: Store, options: AuthServiceOptions): Promise<AuthService> {
    parseInput(
      z.object({
        issuer: z.string().min(1).max(512),
        tokenLifetimeSeconds: z.number().int().min(1).max(31_536_000).optional(),
      }),
      options,
      'options',
    );
    const clock = options.clock ?? systemClock;
    const prefix = options.prefix ?? 'auth/';
    const lifetimeSeconds = options.tokenLifetimeSeconds ?? 3600;
    const audience = options.audience ?? 'nubes';
    const retentionMs = (lifetimeSeconds + (options.clockToleranceSeconds ?? 30)) * 1000;
    const revocations = await RevocationList.open(store, { prefix, retentionMs, clock });
    const identity = await IdentityStore.open(store, {
      prefix,
      clock,
      revocationRetentionMs: retentionMs,
      onRevoke: (e) => revocations.apply(e),
      ...(options.passwordHashing ? { passwordHashing: options.passwordHashing } : {}),
      ...(options.lockout ? { lockout: options.lockout } : {}),
    });
    const keys = await KeyRepository.open(store, {
      prefix,
      clock,
      ...(options.algorithm ? { algorithm: options.algorithm } : {}),
      ...(options.maxActiveKeys ? { maxActiveKeys: options.maxActiveKeys } : {}),
    });
    const issuer = new TokenIssuer(keys, { issuer: options.issuer, audience, lifetimeSeconds, clock });
    const verifier = new TokenVerifier({
      keys,
      revocations,
      issuer: options.issuer,
      audience: typeof audience === 'string' ? audience : (audience[0] as string),
      clock,
      ...(options.clockToleranceSeconds !== undefined
        ? { clockToleranceSeconds: options.clockToleranceSeconds }
        : {}),
      ...(options.cacheSize !== undefined ? { cacheSize: options.cacheSize } : {}),
    });
    return new AuthService(store, identity, keys, revocations, issuer, verifier, options);
  }

  // ---------------------------------------------------------------- login

  /**
   * Password login (user by id, or name and domain). Without a scope the token is scoped to the user's default
   * project when the user has a role there, and unscoped otherwise, as in Keystone.
   */
  async loginWithPassword(input: z.input<typeof passwordLoginSchema>): Promise<IssuedToken> {
    const p = parseInput(passwordLoginSchema, input, 'auth');
    const user = await this.identity.checkPassword({ user: p.user as UserRef, password: p.password });
    let scope = p.scope;
    if (!scope && user.defaultProjectId) {
      const roles = await this.identity
        .effectiveRoles(user.id, { project: user.defaultProjectId })
        .catch(() => []);
      if (roles.length > 0) scope = { project: { id: user.defaultProjectId } };
    }
    return this.issueFor(user, scope, ['password']);
  }

  /** Rescopes a token (unscoped, unless `allowRescopeScopedToken`) to a project, domain or the system. */
  async loginWithToken(input: z.input<typeof tokenLoginSchema>): Promise<IssuedToken> {
    const p = parseInput(tokenLoginSchema, input, 'auth');
    const original = this.verifier.verify(p.token);
    if (original.applicationCredentialId)
      throw unauthorized('rescope_refused', 'a token from an application credential cannot be rescoped');
    if (original.scopeType !== 'unscoped' && !this.options.allowRescopeScopedToken)
      throw unauthorized('rescope_refused', 'only an unscoped token can be rescoped');
    const user = await this.identity.getUser(original.userId);
    await this.identity.assertActive(user);
    const methods = [...new Set(['token', ...original.methods])];
    return this.issueFor(user, p.scope, methods, {
      auditChainId: original.auditChainId,
      notAfter: original.expiresAt,
    });
  }

  /** Application credential login: a project-scoped token with the credential's roles the user still holds. */
  async loginWithApplicationCredential(input: z.input<typeof appCredLoginSchema>): Promise<IssuedToken> {
    const p = parseInput(appCredLoginSchema, input, 'auth');
    let ref: { id: string } | { name: string; userId: string };
    if (p.id) ref = { id: p.id };
    else {
      const owner = await this.identity.findUser(p.user as UserRef).catch(() => undefined);
      if (!owner) throw unauthorized('invalid_credentials', 'the application credential is invalid');
      ref = { name: p.name as string, userId: owner.id };
    }
    const cred = await this.applicationCredentials.check(ref, p.secret);
    const user = await this.identity.getUser(cred.userId);
    await this.identity.assertActive(user);
    const held = await this.identity.effectiveRoles(user.id, { project: cred.projectId });
    // The credential delegates its roles with what they imply, but never more than the user still holds.
    const delegated = expandRoles(cred.roles, await this.identity.implicationMap());
    const roles = delegated.filter((r) => held.includes(r));
    return this.issueFor(user, { project: { id: cred.projectId } }, ['application_credential'], {
      roles,
      applicationCredentialId: cred.id,
      ...(cred.expiresAt !== undefined ? { notAfter: cred.expiresAt } : {}),
    });
  }

  /**
   * Access key login: verifies a request signed with AWS Signature Version 4 and returns a token scoped to the
   * access key's project. Replays of the same signature inside the skew window are refused.
   */
  async loginWithAccessKey(request: SigV4Request): Promise<IssuedToken> {
    const r = parseInput(sigv4RequestSchema, request, 'request');
    const { owner } = await this.sigv4.verify(r as SigV4Request);
    const user = await this.identity.getUser(owner.userId);
    await this.identity.assertActive(user);
    return this.issueFor(user, { project: { id: owner.projectId } }, ['access_key']);
  }

  // ---------------------------------------------------------------- tokens

  /** Verifies a token locally (signature, claims, revocation); see {@link TokenVerifier.verify}. */
  verify(token: string): TokenContext {
    return this.verifier.verify(token);
  }

  /** Revokes one token (by its audit id), or, with `chain`, it and every token rescoped from the same origin. */
  async revokeToken(token: string, options: { chain?: boolean } = {}): Promise<RevocationEvent> {
    const context = this.verifier.verify(token);
    return this.revocations.revoke(
      options.chain ? { auditChainId: context.auditChainId } : { auditId: context.auditId },
    );
  }

  /** Revokes every token matching `criteria` issued up to now. */
  revoke(criteria: RevocationCriteria): Promise<RevocationEvent> {
    return this.revocations.revoke(criteria);
  }

  /** Rotates the signing keys; tokens already issued keep verifying. */
  rotateKeys(options: { algorithm?: SigningAlgorithm } = {}): Promise<KeyInfo[]> {
    return this.keys.rotate(options);
  }

  /** The JWKS document for remote verifiers. */
  jwks(): { keys: PublicJwk[] } {
    return this.keys.jwks();
  }

  // ---------------------------------------------------------------- delegated administration

  /**
   * Assigns a role on behalf of `actor`, enforcing `identity:role_assignments:create` and escalation
   * prevention: unless the policy grants `identity:role_assignments:any_role`, the actor must hold the role
   * on that very scope (with a token scoped there).
   */
  async assignRoleAs(actor: TokenContext, assignment: RoleAssignment): Promise<void> {
    const target = targetOfScope(assignment.scope);
    this.policy.enforce(actor, 'identity:role_assignments:create', target);
    if (!this.policy.authorize(actor, 'identity:role_assignments:any_role', target).allowed) {
      const sameScope =
        ('project' in assignment.scope && actor.project?.id === assignment.scope.project) ||
        ('domain' in assignment.scope && actor.domain?.id === assignment.scope.domain) ||
        ('system' in assignment.scope && actor.scopeType === 'system');
      if (!sameScope || !actor.roles.includes(String(assignment.role).toLowerCase()))
        throw forbidden(
          `cannot assign role "${assignment.role}": the caller does not hold it on that scope`,
          {
            action: 'identity:role_assignments:create',
            reason: 'escalation',
          },
        );
    }
    await this.identity.assignRole(assignment);
  }

  /** Creates an access key for the caller's own project (or any, for an admin by policy). */
  async createAccessKeyAs(
    actor: TokenContext,
    input: { userId: string; projectId: string },
  ): Promise<AccessKey & { secretAccessKey: string }> {
    this.policy.enforce(actor, 'identity:access_keys:create', {
      user_id: input.userId,
      project_id: input.projectId,
    });
    return this.accessKeys.create(input);
  }

  /** Creates an application credential on behalf of `actor` (policy `identity:application_credentials:create`). */
  async createApplicationCredentialAs(
    actor: TokenContext,
    input: Parameters<ApplicationCredentialStore['create']>[0],
  ): Promise<ApplicationCredential & { secret: string }> {
    this.policy.enforce(actor, 'identity:application_credentials:create', { user_id: input.userId });
    return this.applicationCredentials.create(input);
  }

  /** Stops Store watches. Does not close the Store, which the caller owns. */
  close(): void {
    this.keys.close();
    this.revocations.close();
  }

  // ---------------------------------------------------------------- internals

  private async issueFor(
    user: User,
    scopeRequest: ScopeRequest | undefined,
    methods: string[],
    extra: {
      auditChainId?: string;
      notAfter?: number;
      roles?: string[];
      applicationCredentialId?: string;
    } = {},
  ): Promise<IssuedToken> {
    const userDomain = await this.identity.getDomain(user.domainId);
    let scope: TokenScope | undefined;
    let roles: string[] = [];
    if (scopeRequest) {
      const resolved = await this.resolveScope(scopeRequest);
      scope = resolved.claim;
      roles = extra.roles ?? (await this.identity.effectiveRoles(user.id, resolved.scope));
      if (roles.length === 0)
        throw unauthorized('not_authorized_for_scope', 'the user has no role on the requested scope');
    }
    const { token } = this.issuer.issue({
      userId: user.id,
      userName: user.name,
      userDomain: { id: userDomain.id, name: userDomain.name },
      roles,
      methods,
      ...(scope ? { scope } : {}),
      ...(extra.auditChainId ? { auditChainId: extra.auditChainId } : {}),
      ...(extra.notAfter !== undefined ? { notAfter: extra.notAfter } : {}),
      ...(extra.applicationCredentialId ? { applicationCredentialId: extra.applicationCredentialId } : {}),
    });
    return { token, context: this.verifier.verify(token) };
  }

  private async resolveScope(request: ScopeRequest): Promise<{ scope: Scope; claim: TokenScope }> {
    if ('system' in request) return { scope: { system: 'all' }, claim: { system: 'all' } };
    if ('domain' in request) {
      const domain = await this.identity.findDomain(request.domain).catch(() => undefined);
      if (!domain) throw unauthorized('not_authorized_for_scope', 'the requested domain does not exist');
      if (!domain.enabled) throw unauthorized('disabled', 'the requested domain is disabled');
      return { scope: { domain: domain.id }, claim: { domain: { id: domain.id, name: domain.name } } };
    }
    const project = await this.identity.findProject(request.project).catch(() => undefined);
    if (!project) throw unauthorized('not_authorized_for_scope', 'the requested project does not exist');
    const domain = await this.identity.getDomain(project.domainId);
    if (!project.enabled || !domain.enabled)
      throw unauthorized('disabled', 'the requested project is disabled');
    return {
      scope: { project: project.id },
      claim: {
        project: { id: project.id, name: project.name, domain: { id: domain.id, name: domain.name } },
      },
    };
  }
}

/** The policy target of a scope: `{ project_id }`, `{ domain_id }` or `{ system: 'all' }`. */
export function targetOfScope(scope: Scope): Record<string, string> {
  if ('project' in scope) return { project_id: scope.project };
  if ('domain' in scope) return { domain_id: scope.domain };
  return { system: 'all' };
}
