/**
 * @nubes/auth: identity, PKI tokens verified locally, RBAC, access keys, revocation and key rotation.
 *
 * This package is a skeleton: it builds and publishes, and holds no API yet. Domains, projects, users, groups, roles and role assignments kept in a `@nubes/core` Store; password, access-key (AWS Signature V4 style), token and application-credential login; signed tokens that every service verifies locally; an RBAC policy engine; revocation and signing-key rotation.
 *
 * @packageDocumentation
 */

export {};
