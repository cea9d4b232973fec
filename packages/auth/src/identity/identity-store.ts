import {
  NubesError,
  newHexId,
  notFound,
  parseInput,
  type Store,
  type StoreReader,
  type Transaction,
} from '@nubes/core';
import { z } from 'zod';
import { type Clock, systemClock } from '../internal/clock.js';
import { conflict, unauthorized } from '../internal/errors.js';
import { listAll, toJson } from '../internal/store-util.js';
import type { RevocationCriteria, RevocationEvent } from '../revocation/events.js';
import { buildEvent, revocationPrefix } from '../revocation/revocation-list.js';
import { DEFAULT_IMPLICATIONS, expandRoles, wouldCycle } from './implied-roles.js';
import { IdentityKeys, parseScopeKey } from './keys.js';
import {
  type Actor,
  actorSchema,
  type Domain,
  domainRefSchema,
  type Group,
  idSchema,
  nameSchema,
  type Project,
  type Role,
  type RoleAssignment,
  type Scope,
  type StoredUser,
  scopeSchema,
  type User,
} from './model.js';
import { DEFAULT_SCRYPT, hashPassword, type ScryptParams, verifyPassword } from './password.js';

/** Lockout after repeated failed passwords, as Keystone's `lockout_failure_attempts` / `lockout_duration`. */
export interface LockoutOptions {
  /** Failed attempts in a row that lock the user. */
  maxFailures: number;
  /** How long the lock lasts, in ms. */
  durationMs: number;
}

/** Options of {@link IdentityStore.open}. */
export interface IdentityStoreOptions {
  /** Store key prefix (default `auth/`). */
  prefix?: string;
  /** scrypt cost for new password hashes (default {@link DEFAULT_SCRYPT}). */
  passwordHashing?: ScryptParams;
  /** Optional brute-force lockout; off by default, as in Keystone. */
  lockout?: LockoutOptions;
  /** How long revocation events are kept: the longest token lifetime, in ms (default 1 hour). */
  revocationRetentionMs?: number;
  /** Called after a change that takes permissions away has committed, with the events it wrote. */
  onRevoke?: (event: RevocationEvent) => void;
  clock?: Clock;
}

const passwordSchema = z.string().min(1).max(4096);
const descriptionSchema = z.string().max(1024).optional();

const createDomainSchema = z
  .object({
    id: idSchema.optional(),
    name: nameSchema,
    description: descriptionSchema,
    enabled: z.boolean().optional(),
  })
  .strict();
const createProjectSchema = z
  .object({
    id: idSchema.optional(),
    name: nameSchema,
    domainId: idSchema.optional(),
    parentId: idSchema.optional(),
    description: descriptionSchema,
    enabled: z.boolean().optional(),
  })
  .strict();
const updateProjectSchema = z
  .object({ enabled: z.boolean().optional(), description: descriptionSchema })
  .strict();
const createUserSchema = z
  .object({
    id: idSchema.optional(),
    name: nameSchema,
    domainId: idSchema.optional(),
    password: passwordSchema.optional(),
    enabled: z.boolean().optional(),
    defaultProjectId: idSchema.optional(),
    email: z.string().max(255).optional(),
  })
  .strict();
const updateUserSchema = z
  .object({
    enabled: z.boolean().optional(),
    defaultProjectId: idSchema.optional(),
    email: z.string().max(255).optional(),
  })
  .strict();
const createGroupSchema = z
  .object({
    id: idSchema.optional(),
    name: nameSchema,
    domainId: idSchema.optional(),
    description: descriptionSchema,
  })
  .strict();
const createRoleSchema = z
  .object({ id: idSchema.optional(), name: nameSchema, description: descriptionSchema })
  .strict();
const assignmentSchema = z.object({ role: nameSchema, actor: actorSchema, scope: scopeSchema }).strict();
const userRefSchema = z.union([
  z.object({ id: idSchema }).strict(),
  z.object({ name: nameSchema, domain: domainRefSchema }).strict(),
]);
const projectRefSchema = userRefSchema;
const passwordLoginSchema = z.object({ user: userRefSchema, password: passwordSchema }).strict();

/** A user given by id, or by name and domain (id or name). */
export type UserRef = z.input<typeof userRefSchema>;
/** A project given by id, or by name and domain. */
export type ProjectRef = z.input<typeof projectRefSchema>;
/** A domain given by id or by name. */
export type DomainRef = z.input<typeof domainRefSchema>;

/** The id of the domain every Keystone deployment has. */
export const DEFAULT_DOMAIN_ID = 'default';

function publicUser(user: StoredUser): User {
  const { passwordHash: _hidden, ...rest } = user;
  return rest;
}

/**
 * Domains, projects, users, groups, roles and role assignments in a `@nubes/core` Store. Every change is one
 * Store transaction; a change that takes a permission away writes the matching revocation event in that same
 * transaction, so a token can never outlive the permission it carries.
 */
export class IdentityStore {
  /** Store key layout. */
  readonly keys: IdentityKeys;
  private readonly scrypt: ScryptParams;
  private readonly clock: Clock;
  private readonly retentionMs: number;
  private readonly revocationKeys: string;
  // Hashing a password for an unknown user keeps the failure as slow as a wrong password, so
  // response times do not reveal which user names exist.
  private dummyHash: Promise<string> | undefined;

  private constructor(
    readonly store: Store,
    private readonly options: IdentityStoreOptions,
  ) {
    const prefix = options.prefix ?? 'auth/';
    this.keys = new IdentityKeys(prefix);
    this.scrypt = options.passwordHashing ?? DEFAULT_SCRYPT;
    this.clock = options.clock ?? systemClock;
    this.retentionMs = options.revocationRetentionMs ?? 3_600_000;
    this.revocationKeys = revocationPrefix(prefix);
  }

  /**
   * Opens the identity kept in `store`, creating on first use the `default` domain and the `reader`,
   * `member` and `admin` roles with `admin` implying `member` implying `reader`.
   */
  static async open(store: Store, options: IdentityStoreOptions = {}): Promise<IdentityStore> {
    const identity = new IdentityStore(store, options);
    await store.transaction(async (tx) => {
      if (!(await tx.get(identity.keys.domain(DEFAULT_DOMAIN_ID)))) {
        const domain: Domain = { id: DEFAULT_DOMAIN_ID, name: 'Default', enabled: true };
        tx.put(identity.keys.domain(domain.id), toJson(domain));
        tx.put(identity.keys.domainName(domain.name), domain.id);
      }
      const ids = new Map<string, string>();
      for (const name of ['reader', 'member', 'admin']) {
        const existing = await tx.get<string>(identity.keys.roleName(name));
        if (existing) ids.set(name, existing.value);
        else {
          const role: Role = { id: newHexId(), name };
          tx.put(identity.keys.role(role.id), toJson(role));
          tx.put(identity.keys.roleName(name), role.id);
          ids.set(name, role.id);
          for (const [prior, implied] of DEFAULT_IMPLICATIONS) {
            if (prior !== name) continue;
            tx.put(identity.keys.implication(role.id, ids.get(implied) as string), true);
          }
        }
      }
    });
    return identity;
  }

  // ---------------------------------------------------------------- domains

  /** Creates a domain. Names are unique, case-insensitively. */
  async createDomain(input: z.input<typeof createDomainSchema>): Promise<Domain> {
    const p = parseInput(createDomainSchema, input, 'domain');
    const domain: Domain = {
      id: p.id ?? newHexId(),
      name: p.name,
      enabled: p.enabled ?? true,
      ...(p.description ? { description: p.description } : {}),
    };
    await this.store.transaction(async (tx) => {
      await this.claim(tx, this.keys.domain(domain.id), 'domain id', domain.id);
      await this.claim(tx, this.keys.domainName(domain.name), 'domain name', domain.name);
      tx.put(this.keys.domain(domain.id), toJson(domain));
      tx.put(this.keys.domainName(domain.name), domain.id);
    });
    return domain;
  }

  /** The domain with this id; `NotFound` otherwise. */
  async getDomain(id: string, reader: StoreReader = this.store): Promise<Domain> {
    parseInput(idSchema, id, 'id');
    const entry = await reader.get<Domain>(this.keys.domain(id));
    if (!entry) throw notFound('domain', id);
    return entry.value;
  }

  /** The domain given by id or name. */
  async findDomain(ref: DomainRef, reader: StoreReader = this.store): Promise<Domain> {
    const p = parseInput(domainRefSchema, ref, 'domain');
    if ('id' in p) return this.getDomain(p.id, reader);
    const id = await reader.get<string>(this.keys.domainName(p.name));
    if (!id) throw notFound('domain', p.name);
    return this.getDomain(id.value, reader);
  }

  /** Enables or disables a domain. Disabling revokes every token of its users and projects. */
  async setDomainEnabled(id: string, enabled: boolean): Promise<Domain> {
    parseInput(z.boolean(), enabled, 'enabled');
    const domain = await this.getDomain(id);
    return this.mutate(async (tx) => {
      const current = await this.getDomain(domain.id, tx);
      const next = { ...current, enabled };
      tx.put(this.keys.domain(id), toJson(next));
      return { result: next, revoke: enabled ? [] : [{ domainId: id }] };
    });
  }

  /** Every domain. */
  async listDomains(): Promise<Domain[]> {
    return (await listAll<Domain>(this.store, `${this.keys.prefix}domains/`)).map((e) => e.value);
  }

  // ---------------------------------------------------------------- projects

  /** Creates a project in a domain (default `default`), optionally under a parent project of that domain. */
  async createProject(input: z.input<typeof createProjectSchema>): Promise<Project> {
    const p = parseInput(createProjectSchema, input, 'project');
    const domainId = p.domainId ?? DEFAULT_DOMAIN_ID;
    const project: Project = {
      id: p.id ?? newHexId(),
      name: p.name,
      domainId,
      enabled: p.enabled ?? true,
      ...(p.parentId ? { parentId: p.parentId } : {}),
      ...(p.description ? { description: p.description } : {}),
    };
    await this.store.transaction(async (tx) => {
      await this.getDomain(domainId, tx);
      if (p.parentId) {
        const parent = await this.getProject(p.parentId, tx);
        if (parent.domainId !== domainId)
          throw conflict('a project and its parent must be in the same domain', { parentId: p.parentId });
      }
      await this.claim(tx, this.keys.project(project.id), 'project id', project.id);
      await this.claim(tx, this.keys.projectName(domainId, project.name), 'project name', project.name);
      tx.put(this.keys.project(project.id), toJson(project));
      tx.put(this.keys.projectName(domainId, project.name), project.id);
    });
    return project;
  }

  /** The project with this id; `NotFound` otherwise. */
  async getProject(id: string, reader: StoreReader = this.store): Promise<Project> {
    parseInput(idSchema, id, 'id');
    const entry = await reader.get<Project>(this.keys.project(id));
    if (!entry) throw notFound('project', id);
    return entry.value;
  }

  /** The project given by id, or by name within a domain. */
  async findProject(ref: ProjectRef, reader: StoreReader = this.store): Promise<Project> {
    const p = parseInput(projectRefSchema, ref, 'project');
    if ('id' in p) return this.getProject(p.id, reader);
    const domain = await this.findDomain(p.domain, reader);
    const id = await reader.get<string>(this.keys.projectName(domain.id, p.name));
    if (!id) throw notFound('project', p.name);
    return this.getProject(id.value, reader);
  }

  /** The chain of parents of a project, nearest first. */
  async projectParents(id: string): Promise<Project[]> {
    const out: Project[] = [];
    let project = await this.getProject(id);
    while (project.parentId && out.length < 64) {
      project = await this.getProject(project.parentId);
      out.push(project);
    }
    return out;
  }

  /** Updates a project. Disabling it revokes every token scoped to it. */
  async updateProject(id: string, patch: z.input<typeof updateProjectSchema>): Promise<Project> {
    const p = parseInput(updateProjectSchema, patch, 'patch');
    await this.getProject(id);
    return this.mutate(async (tx) => {
      const current = await this.getProject(id, tx);
      const next: Project = { ...current, ...p };
      tx.put(this.keys.project(id), toJson(next));
      const disabled = current.enabled && next.enabled === false;
      return { result: next, revoke: disabled ? [{ projectId: id }] : [] };
    });
  }

  /** Projects, optionally only those of one domain or under one parent. */
  async listProjects(filter: { domainId?: string; parentId?: string } = {}): Promise<Project[]> {
    const f = parseInput(
      z.object({ domainId: idSchema.optional(), parentId: idSchema.optional() }).strict(),
      filter,
      'filter',
    );
    const all = (await listAll<Project>(this.store, `${this.keys.prefix}projects/`)).map((e) => e.value);
    return all.filter(
      (p) => (!f.domainId || p.domainId === f.domainId) && (!f.parentId || p.parentId === f.parentId),
    );
  }

  /** Deletes a project with no children, its role assignments, and revokes its tokens. */
  async deleteProject(id: string): Promise<void> {
    await this.getProject(id);
    const children = await this.listProjects({ parentId: id });
    if (children.length > 0) throw conflict('the project has child projects', { id });
    const assignments = (await this.listAssignments()).filter(
      (a) => 'project' in a.scope && a.scope.project === id,
    );
    await this.mutate(async (tx) => {
      const project = await this.getProject(id, tx);
      tx.delete(this.keys.project(id));
      tx.delete(this.keys.projectName(project.domainId, project.name));
      for (const a of assignments) tx.delete(this.keys.assignment(a.actor, a.scope, a.roleId));
      return { result: undefined, revoke: [{ projectId: id }] };
    });
  }

  // ---------------------------------------------------------------- users

  /** Creates a user in a domain (default `default`), hashing the password with scrypt. */
  async createUser(input: z.input<typeof createUserSchema>): Promise<User> {
    const p = parseInput(createUserSchema, input, 'user');
    const domainId = p.domainId ?? DEFAULT_DOMAIN_ID;
    const now = this.clock();
    const user: StoredUser = {
      id: p.id ?? newHexId(),
      name: p.name,
      domainId,
      enabled: p.enabled ?? true,
      ...(p.defaultProjectId ? { defaultProjectId: p.defaultProjectId } : {}),
      ...(p.email ? { email: p.email } : {}),
    };
    // Hash before the transaction: it may run again on conflict and must stay free of slow work.
    if (p.password !== undefined) {
      user.passwordHash = await hashPassword(p.password, this.scrypt);
      user.passwordChangedAt = now;
    }
    await this.store.transaction(async (tx) => {
      await this.getDomain(domainId, tx);
      if (p.defaultProjectId) await this.getProject(p.defaultProjectId, tx);
      await this.claim(tx, this.keys.user(user.id), 'user id', user.id);
      await this.claim(tx, this.keys.userName(domainId, user.name), 'user name', user.name);
      tx.put(this.keys.user(user.id), toJson(user));
      tx.put(this.keys.userName(domainId, user.name), user.id);
    });
    return publicUser(user);
  }

  /** The user with this id; `NotFound` otherwise. */
  async getUser(id: string, reader: StoreReader = this.store): Promise<User> {
    return publicUser(await this.getStoredUser(id, reader));
  }

  /** The user given by id, or by name within a domain. */
  async findUser(ref: UserRef, reader: StoreReader = this.store): Promise<User> {
    return publicUser(await this.findStoredUser(ref, reader));
  }

  /** Updates a user. Disabling revokes every token of the user. */
  async updateUser(id: string, patch: z.input<typeof updateUserSchema>): Promise<User> {
    const p = parseInput(updateUserSchema, patch, 'patch');
    await this.getUser(id);
    return this.mutate(async (tx) => {
      const current = await this.getStoredUser(id, tx);
      if (p.defaultProjectId) await this.getProject(p.defaultProjectId, tx);
      const next: StoredUser = { ...current, ...p };
      tx.put(this.keys.user(id), toJson(next));
      const disabled = current.enabled && next.enabled === false;
      return { result: publicUser(next), revoke: disabled ? [{ userId: id }] : [] };
    });
  }

  /** Sets a user's password, clears any lockout, and revokes the user's tokens (as Keystone does). */
  async setPassword(id: string, password: string): Promise<void> {
    parseInput(passwordSchema, password, 'password');
    await this.getUser(id);
    const passwordHash = await hashPassword(password, this.scrypt);
    const now = this.clock();
    await this.mutate(async (tx) => {
      const current = await this.getStoredUser(id, tx);
      tx.put(this.keys.user(id), toJson({ ...current, passwordHash, passwordChangedAt: now }));
      tx.delete(this.keys.lockout(id));
      return { result: undefined, revoke: [{ userId: id }] };
    });
  }

  /** Users, optionally only those of one domain. */
  async listUsers(filter: { domainId?: string } = {}): Promise<User[]> {
    const f = parseInput(z.object({ domainId: idSchema.optional() }).strict(), filter, 'filter');
    const all = (await listAll<StoredUser>(this.store, `${this.keys.prefix}users/`)).map((e) =>
      publicUser(e.value),
    );
    return all.filter((u) => !f.domainId || u.domainId === f.domainId);
  }

  /** Deletes a user with its memberships and assignments, and revokes its tokens. */
  async deleteUser(id: string): Promise<void> {
    await this.getUser(id);
    await this.mutate(async (tx) => {
      const user = await this.getStoredUser(id, tx);
      tx.delete(this.keys.user(id));
      tx.delete(this.keys.userName(user.domainId, user.name));
      tx.delete(this.keys.lockout(id));
      for (const e of await listAll(tx, this.keys.groupsOf(id))) {
        const groupId = e.key.slice(this.keys.groupsOf(id).length);
        tx.delete(e.key);
        tx.delete(this.keys.membership(groupId, id));
      }
      for (const e of await listAll(tx, this.keys.assignmentsOf({ user: id }))) tx.delete(e.key);
      return { result: undefined, revoke: [{ userId: id }] };
    });
  }

  /**
   * Checks a password login: the user (by id, or name and domain) exists, the password matches, the user and
   * its domain are enabled and the user is not locked out. Every failure is the same `Unauthorized`
   * (`invalid_credentials`) except a lockout, so a caller cannot probe which user names exist.
   */
  async checkPassword(input: z.input<typeof passwordLoginSchema>): Promise<User> {
    const p = parseInput(passwordLoginSchema, input, 'auth');
    let user: StoredUser | undefined;
    try {
      user = await this.findStoredUser(p.user);
    } catch (error) {
      if (!(error instanceof NubesError && error.code === 'NotFound')) throw error;
    }
    if (!user?.passwordHash) {
      this.dummyHash ??= hashPassword('nubes-dummy-password', this.scrypt);
      await verifyPassword(p.password, await this.dummyHash);
      throw unauthorized('invalid_credentials', 'the user name or password is wrong');
    }
    const lockout = this.options.lockout;
    if (lockout) {
      const state = await this.store.get<{ failures: number; lockedUntil?: number }>(
        this.keys.lockout(user.id),
      );
      if (state?.value.lockedUntil && state.value.lockedUntil > this.clock())
        throw unauthorized('locked_out', 'the user is locked out after too many failed attempts', {
          retryAfterMs: state.value.lockedUntil - this.clock(),
        });
    }
    const ok = await verifyPassword(p.password, user.passwordHash);
    if (!ok) {
      if (lockout) await this.recordFailure(user.id, lockout);
      throw unauthorized('invalid_credentials', 'the user name or password is wrong');
    }
    if (lockout) await this.store.delete(this.keys.lockout(user.id));
    await this.assertActive(user);
    return publicUser(user);
  }

  /** Throws `Unauthorized` (`disabled`) unless the user and its domain are enabled. */
  async assertActive(user: User): Promise<void> {
    if (!user.enabled) throw unauthorized('disabled', 'the user is disabled');
    const domain = await this.getDomain(user.domainId);
    if (!domain.enabled) throw unauthorized('disabled', 'the user’s domain is disabled');
  }

  // ---------------------------------------------------------------- groups

  /** Creates a group in a domain (default `default`). */
  async createGroup(input: z.input<typeof createGroupSchema>): Promise<Group> {
    const p = parseInput(createGroupSchema, input, 'group');
    const domainId = p.domainId ?? DEFAULT_DOMAIN_ID;
    const group: Group = {
      id: p.id ?? newHexId(),
      name: p.name,
      domainId,
      ...(p.description ? { description: p.description } : {}),
    };
    await this.store.transaction(async (tx) => {
      await this.getDomain(domainId, tx);
      await this.claim(tx, this.keys.group(group.id), 'group id', group.id);
      await this.claim(tx, this.keys.groupName(domainId, group.name), 'group name', group.name);
      tx.put(this.keys.group(group.id), toJson(group));
      tx.put(this.keys.groupName(domainId, group.name), group.id);
    });
    return group;
  }

  /** The group with this id; `NotFound` otherwise. */
  async getGroup(id: string, reader: StoreReader = this.store): Promise<Group> {
    parseInput(idSchema, id, 'id');
    const entry = await reader.get<Group>(this.keys.group(id));
    if (!entry) throw notFound('group', id);
    return entry.value;
  }

  /** Adds a user to a group. */
  async addUserToGroup(groupId: string, userId: string): Promise<void> {
    parseInput(idSchema, groupId, 'groupId');
    parseInput(idSchema, userId, 'userId');
    await this.store.transaction(async (tx) => {
      await this.getGroup(groupId, tx);
      await this.getStoredUser(userId, tx);
      tx.put(this.keys.membership(groupId, userId), true);
      tx.put(this.keys.userGroup(userId, groupId), true);
    });
  }

  /** Removes a user from a group and revokes the user's tokens, which may carry the group's roles. */
  async removeUserFromGroup(groupId: string, userId: string): Promise<void> {
    parseInput(idSchema, groupId, 'groupId');
    parseInput(idSchema, userId, 'userId');
    await this.mutate(async (tx) => {
      if (!(await tx.get(this.keys.membership(groupId, userId))))
        throw notFound('group membership', `${groupId}/${userId}`);
      tx.delete(this.keys.membership(groupId, userId));
      tx.delete(this.keys.userGroup(userId, groupId));
      return { result: undefined, revoke: [{ userId }] };
    });
  }

  /** Ids of the users in a group. */
  async groupMembers(groupId: string, reader: StoreReader = this.store): Promise<string[]> {
    parseInput(idSchema, groupId, 'groupId');
    const prefix = this.keys.membersOf(groupId);
    return (await listAll(reader, prefix)).map((e) => e.key.slice(prefix.length));
  }

  /** Ids of the groups a user belongs to. */
  async userGroups(userId: string, reader: StoreReader = this.store): Promise<string[]> {
    parseInput(idSchema, userId, 'userId');
    const prefix = this.keys.groupsOf(userId);
    return (await listAll(reader, prefix)).map((e) => e.key.slice(prefix.length));
  }

  // ---------------------------------------------------------------- roles

  /** Creates a role. Role names are global and unique, case-insensitively. */
  async createRole(input: z.input<typeof createRoleSchema>): Promise<Role> {
    const p = parseInput(createRoleSchema, input, 'role');
    const role: Role = {
      id: p.id ?? newHexId(),
      name: p.name,
      ...(p.description ? { description: p.description } : {}),
    };
    await this.store.transaction(async (tx) => {
      await this.claim(tx, this.keys.role(role.id), 'role id', role.id);
      await this.claim(tx, this.keys.roleName(role.name), 'role name', role.name);
      tx.put(this.keys.role(role.id), toJson(role));
      tx.put(this.keys.roleName(role.name), role.id);
    });
    return role;
  }

  /** The role with this name; `NotFound` otherwise. */
  async findRole(name: string, reader: StoreReader = this.store): Promise<Role> {
    parseInput(nameSchema, name, 'role');
    const id = await reader.get<string>(this.keys.roleName(name));
    const role = id && (await reader.get<Role>(this.keys.role(id.value)));
    if (!role) throw notFound('role', name);
    return role.value;
  }

  /** Every role. */
  async listRoles(reader: StoreReader = this.store): Promise<Role[]> {
    return (await listAll<Role>(reader, this.keys.roles())).map((e) => e.value);
  }

  /** Deletes a role with its implications and assignments, and revokes every token carrying it. */
  async deleteRole(name: string): Promise<void> {
    await this.findRole(name);
    await this.mutate(async (tx) => {
      const role = await this.findRole(name, tx);
      tx.delete(this.keys.role(role.id));
      tx.delete(this.keys.roleName(role.name));
      for (const e of await listAll(tx, this.keys.implications())) {
        const [prior, implied] = e.key.slice(this.keys.implications().length).split('/');
        if (prior === role.id || implied === role.id) tx.delete(e.key);
      }
      for (const e of await listAll(tx, this.keys.assignments()))
        if (e.key.endsWith(`/${role.id}`)) tx.delete(e.key);
      return { result: undefined, revoke: [{ role: role.name }] };
    });
  }

  /** Declares that holding `prior` grants `implied` too. Refuses a cycle with `Conflict`. */
  async addImpliedRole(prior: string, implied: string): Promise<void> {
    parseInput(nameSchema, prior, 'prior');
    parseInput(nameSchema, implied, 'implied');
    await this.store.transaction(async (tx) => {
      const p = await this.findRole(prior, tx);
      const i = await this.findRole(implied, tx);
      if (p.id === i.id || wouldCycle(p.name, i.name, await this.implicationMap(tx)))
        throw conflict(`"${prior}" implying "${implied}" would make a cycle`, { prior, implied });
      tx.put(this.keys.implication(p.id, i.id), true);
    });
  }

  /** Removes an implication and revokes the tokens that carry the prior role (they carry the implied one too). */
  async removeImpliedRole(prior: string, implied: string): Promise<void> {
    parseInput(nameSchema, prior, 'prior');
    parseInput(nameSchema, implied, 'implied');
    await this.mutate(async (tx) => {
      const p = await this.findRole(prior, tx);
      const i = await this.findRole(implied, tx);
      const key = this.keys.implication(p.id, i.id);
      if (!(await tx.get(key))) throw notFound('implied role', `${prior} -> ${implied}`);
      tx.delete(key);
      return { result: undefined, revoke: [{ role: p.name }] };
    });
  }

  /** The implication rules by role name: prior -> implied names. */
  async implicationMap(reader: StoreReader = this.store): Promise<Map<string, string[]>> {
    const names = new Map((await this.listRoles(reader)).map((r) => [r.id, r.name]));
    const out = new Map<string, string[]>();
    for (const e of await listAll(reader, this.keys.implications())) {
      const [priorId, impliedId] = e.key.slice(this.keys.implications().length).split('/');
      const prior = names.get(priorId as string);
      const implied = names.get(impliedId as string);
      if (!prior || !implied) continue;
      out.set(prior, [...(out.get(prior) ?? []), implied]);
    }
    return out;
  }

  // ---------------------------------------------------------------- assignments

  /** Assigns a role (by name) to a user or group on a project, a domain or the system. Idempotent. */
  async assignRole(input: RoleAssignment): Promise<void> {
    const a = parseInput(assignmentSchema, input, 'assignment');
    await this.store.transaction(async (tx) => {
      const role = await this.findRole(a.role, tx);
      await this.assertActorAndScope(tx, a.actor, a.scope);
      tx.put(this.keys.assignment(a.actor, a.scope, role.id), true);
    });
  }

  /**
   * Removes a role assignment and revokes the tokens it fed: the user's tokens on that scope, or those of
   * every member of the group.
   */
  async unassignRole(input: RoleAssignment): Promise<void> {
    const a = parseInput(assignmentSchema, input, 'assignment');
    await this.mutate(async (tx) => {
      const role = await this.findRole(a.role, tx);
      const key = this.keys.assignment(a.actor, a.scope, role.id);
      if (!(await tx.get(key))) throw notFound('role assignment', `${a.role}`);
      tx.delete(key);
      const users = 'user' in a.actor ? [a.actor.user] : await this.groupMembers(a.actor.group, tx);
      const where: RevocationCriteria =
        'project' in a.scope
          ? { projectId: a.scope.project }
          : 'domain' in a.scope
            ? { domainId: a.scope.domain }
            : {};
      // A system-scoped token carries neither a project nor a domain, so only the role name can narrow it.
      const narrow: RevocationCriteria = 'system' in a.scope ? { role: role.name } : where;
      return { result: undefined, revoke: users.map((userId) => ({ userId, ...narrow })) };
    });
  }

  /** Role assignments with role names, optionally only those of one actor. */
  async listAssignments(filter: { actor?: Actor } = {}): Promise<(RoleAssignment & { roleId: string })[]> {
    const f = parseInput(z.object({ actor: actorSchema.optional() }).strict(), filter, 'filter');
    const prefix = f.actor ? this.keys.assignmentsOf(f.actor) : this.keys.assignments();
    const names = new Map((await this.listRoles()).map((r) => [r.id, r.name]));
    const out: (RoleAssignment & { roleId: string })[] = [];
    for (const e of await listAll(this.store, prefix)) {
      const [actorType, actorId, scopeType, scopeId, roleId] = e.key
        .slice(this.keys.assignments().length)
        .split('/');
      const name = names.get(roleId as string);
      if (!name) continue;
      out.push({
        role: name,
        roleId: roleId as string,
        actor: actorType === 'user' ? { user: actorId as string } : { group: actorId as string },
        scope: parseScopeKey(scopeType as string, scopeId as string),
      });
    }
    return out;
  }

  /** Names of the roles assigned directly to the user or its groups on `scope`, before implication. */
  async assignedRoles(userId: string, scope: Scope, reader: StoreReader = this.store): Promise<string[]> {
    parseInput(idSchema, userId, 'userId');
    parseInput(scopeSchema, scope, 'scope');
    const names = new Map((await this.listRoles(reader)).map((r) => [r.id, r.name]));
    const actors: Actor[] = [
      { user: userId },
      ...(await this.userGroups(userId, reader)).map((group) => ({ group })),
    ];
    const out = new Set<string>();
    for (const actor of actors) {
      const prefix = this.keys.assignmentsOn(actor, scope);
      for (const e of await listAll(reader, prefix)) {
        const name = names.get(e.key.slice(prefix.length));
        if (name) out.add(name);
      }
    }
    return [...out].sort();
  }

  /** The user's role names on `scope` after implication: what a token for that scope carries. */
  async effectiveRoles(userId: string, scope: Scope, reader: StoreReader = this.store): Promise<string[]> {
    return expandRoles(await this.assignedRoles(userId, scope, reader), await this.implicationMap(reader));
  }

  // ---------------------------------------------------------------- internals

  /**
   * Runs a transaction that may take permissions away: it returns the revocation criteria, whose events are
   * written in the same transaction and announced after the commit.
   */
  private async mutate<R>(
    fn: (tx: Transaction) => Promise<{ result: R; revoke: RevocationCriteria[] }>,
  ): Promise<R> {
    let events: RevocationEvent[] = [];
    const result = await this.store.transaction(async (tx) => {
      const out = await fn(tx);
      events = out.revoke.map((c) => buildEvent(c, this.clock(), this.retentionMs));
      for (const e of events) tx.put(`${this.revocationKeys}${e.id}`, toJson(e));
      return out.result;
    });
    for (const e of events) this.options.onRevoke?.(e);
    return result;
  }

  private async claim(tx: Transaction, key: string, what: string, value: string): Promise<void> {
    if (await tx.get(key))
      throw conflict(`${what} ${JSON.stringify(value)} is already taken`, { [what]: value });
  }

  private async getStoredUser(id: string, reader: StoreReader = this.store): Promise<StoredUser> {
    parseInput(idSchema, id, 'id');
    const entry = await reader.get<StoredUser>(this.keys.user(id));
    if (!entry) throw notFound('user', id);
    return entry.value;
  }

  private async findStoredUser(ref: UserRef, reader: StoreReader = this.store): Promise<StoredUser> {
    const p = parseInput(userRefSchema, ref, 'user');
    if ('id' in p) return this.getStoredUser(p.id, reader);
    const domain = await this.findDomain(p.domain, reader);
    const id = await reader.get<string>(this.keys.userName(domain.id, p.name));
    if (!id) throw notFound('user', p.name);
    return this.getStoredUser(id.value, reader);
  }

  private async assertActorAndScope(tx: Transaction, actor: Actor, scope: Scope): Promise<void> {
    if ('user' in actor) await this.getStoredUser(actor.user, tx);
    else await this.getGroup(actor.group, tx);
    if ('project' in scope) await this.getProject(scope.project, tx);
    else if ('domain' in scope) await this.getDomain(scope.domain, tx);
  }

  private async recordFailure(userId: string, lockout: LockoutOptions): Promise<void> {
    await this.store.transaction(async (tx) => {
      const state = (await tx.get<{ failures: number }>(this.keys.lockout(userId)))?.value ?? { failures: 0 };
      const failures = state.failures + 1;
      tx.put(
        this.keys.lockout(userId),
        failures >= lockout.maxFailures
          ? { failures: 0, lockedUntil: this.clock() + lockout.durationMs }
          : { failures },
      );
    });
  }
}
