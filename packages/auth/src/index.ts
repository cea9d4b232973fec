/**
 * @nubes/auth: identity, PKI tokens verified locally, RBAC policy, access keys (AWS SigV4), application
 * credentials, revocation and signing-key rotation, in the manner of OpenStack Keystone, over a `@nubes/core`
 * Store.
 *
 * @packageDocumentation
 */

export type { AccessKey } from './credentials/access-keys.js';
export { AccessKeyStore } from './credentials/access-keys.js';
export type { ApplicationCredential } from './credentials/application-credentials.js';
export { ApplicationCredentialStore } from './credentials/application-credentials.js';
export type { RequestHeaders, TokenVerifierLike } from './http/authenticate.js';
export { authContextOf, authenticate, authMiddleware, extractToken, sendError } from './http/authenticate.js';
export { keystoneTokenBody, tokenApiHandler } from './http/token-api.js';
export type {
  DomainRef,
  IdentityStoreOptions,
  LockoutOptions,
  ProjectRef,
  UserRef,
} from './identity/identity-store.js';
export { DEFAULT_DOMAIN_ID, IdentityStore } from './identity/identity-store.js';
export { DEFAULT_IMPLICATIONS, expandRoles } from './identity/implied-roles.js';
export type { Actor, Domain, Group, Project, Role, RoleAssignment, Scope, User } from './identity/model.js';
export type { ScryptParams } from './identity/password.js';
export { DEFAULT_SCRYPT, hashPassword, verifyPassword } from './identity/password.js';
export type { Clock } from './internal/clock.js';
export type { UnauthorizedReason } from './internal/errors.js';
export type { RuleNode } from './policy/ast.js';
export type { CompiledCredentials, PolicyTarget } from './policy/compile.js';
export { DEFAULT_POLICY_RULES } from './policy/default-policy.js';
export { parseRule } from './policy/parser.js';
export type { Decision, PolicyCredentials } from './policy/policy.js';
export { credentialsOf, Policy } from './policy/policy.js';
export type {
  RevocationCriteria,
  RevocationEvent,
  RevocationSource,
  RevocationSubject,
} from './revocation/events.js';
export { matchesEvent } from './revocation/events.js';
export type { RevocationListOptions } from './revocation/revocation-list.js';
export { RevocationList } from './revocation/revocation-list.js';
export type { AuthServiceOptions, IssuedToken, ScopeRequest } from './service/auth-service.js';
export { AuthService, targetOfScope } from './service/auth-service.js';
export type { HeaderBag } from './sigv4/canonical.js';
export {
  amzDateOf,
  canonicalQuery,
  canonicalRequest,
  canonicalUri,
  computeSignature,
  credentialScope,
  deriveSigningKey,
  normalizeHeaders,
  SIGV4_ALGORITHM,
  sha256,
  stringToSign,
  uriEncode,
} from './sigv4/canonical.js';
export type { ReplayGuard } from './sigv4/replay-guard.js';
export { memoryReplayGuard, storeReplayGuard } from './sigv4/replay-guard.js';
export type { SigV4Credentials, SigV4Request } from './sigv4/sign.js';
export { signRequest } from './sigv4/sign.js';
export type { SigV4Result, SigV4VerifierOptions } from './sigv4/verify.js';
export { SigV4Verifier } from './sigv4/verify.js';
export type { TokenClaims, TokenContext, TokenScope } from './tokens/claims.js';
export { contextOf, tokenClaimsSchema } from './tokens/claims.js';
export type { TokenIssuerOptions, TokenSubject } from './tokens/issuer.js';
export { newAuditId, TokenIssuer } from './tokens/issuer.js';
export type { JwsHeader, SigningAlgorithm } from './tokens/jws.js';
export { decodeJws, MAX_TOKEN_LENGTH, signJws } from './tokens/jws.js';
export type {
  KeyInfo,
  KeyRepositoryOptions,
  KeySource,
  KeyState,
  PublicJwk,
  VerificationKey,
} from './tokens/key-repository.js';
export { jwkThumbprint, KeyRepository } from './tokens/key-repository.js';
export type { FetchLike, RemoteTokenVerifierOptions } from './tokens/remote-verifier.js';
export { RemoteTokenVerifier } from './tokens/remote-verifier.js';
export type { TokenVerifierOptions } from './tokens/verifier.js';
export { revocationSubjectOf, TokenVerifier } from './tokens/verifier.js';
