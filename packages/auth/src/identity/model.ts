import { z } from 'zod';

/** Names of users, projects, domains, groups and roles: printable, no slash (they become Store key parts). */
export const nameSchema = z
  .string()
  .min(1)
  .max(255)
  .refine((s) => !s.includes('/') && ![...s].some((c) => c.charCodeAt(0) < 0x20), {
    message: 'must not contain "/" or control characters',
  });

/** An id as Nubes generates it (32 hex digits) or one the caller chose (same rules as a name). */
export const idSchema = nameSchema;

/** A reference by id, or by name within a domain (which is itself an id or a name), Keystone's way. */
export const domainRefSchema = z.union([
  z.object({ id: idSchema }).strict(),
  z.object({ name: nameSchema }).strict(),
]);

/** A domain: a namespace of users, groups and projects. */
export interface Domain {
  id: string;
  name: string;
  enabled: boolean;
  description?: string;
}

/** A project: the tenant that owns resources. It may have a parent project in the same domain. */
export interface Project {
  id: string;
  name: string;
  domainId: string;
  parentId?: string;
  enabled: boolean;
  description?: string;
}

/** A user. The password hash never leaves the identity store through this type. */
export interface User {
  id: string;
  name: string;
  domainId: string;
  enabled: boolean;
  defaultProjectId?: string;
  email?: string;
  /** When the password was last set (ms since the epoch), if it has one. */
  passwordChangedAt?: number;
}

/** A group of users in a domain; roles assigned to a group apply to its members. */
export interface Group {
  id: string;
  name: string;
  domainId: string;
  description?: string;
}

/** A role: a name that policies refer to (`reader`, `member`, `admin`, ...). Roles are global. */
export interface Role {
  id: string;
  name: string;
  description?: string;
}

/** Where a role applies: one project, one domain, or the whole system. */
export type Scope = { project: string } | { domain: string } | { system: 'all' };

/** Who a role is assigned to. */
export type Actor = { user: string } | { group: string };

/** A role assignment: this role, for this actor, on this scope. */
export interface RoleAssignment {
  role: string;
  actor: Actor;
  scope: Scope;
}

/** The zod schema of a {@link Scope} given by ids. */
export const scopeSchema = z.union([
  z.object({ project: idSchema }).strict(),
  z.object({ domain: idSchema }).strict(),
  z.object({ system: z.literal('all') }).strict(),
]);

/** The zod schema of an {@link Actor}. */
export const actorSchema = z.union([
  z.object({ user: idSchema }).strict(),
  z.object({ group: idSchema }).strict(),
]);

/** The stored form of a user, with its secret parts. */
export interface StoredUser extends User {
  passwordHash?: string;
}
