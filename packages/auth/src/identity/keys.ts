import type { Actor, Scope } from './model.js';

/**
 * Where identity lives in the Store. Each record has one primary key and, where lookups by name
 * are needed, one index key holding the id; both are written in one transaction so they never drift.
 */
export class IdentityKeys {
  constructor(readonly prefix: string) {}

  domain(id: string): string {
    return `${this.prefix}domains/${id}`;
  }
  domainName(name: string): string {
    return `${this.prefix}names/domains/${name.toLowerCase()}`;
  }
  project(id: string): string {
    return `${this.prefix}projects/${id}`;
  }
  projectName(domainId: string, name: string): string {
    return `${this.prefix}names/projects/${domainId}/${name.toLowerCase()}`;
  }
  user(id: string): string {
    return `${this.prefix}users/${id}`;
  }
  userName(domainId: string, name: string): string {
    return `${this.prefix}names/users/${domainId}/${name.toLowerCase()}`;
  }
  group(id: string): string {
    return `${this.prefix}groups/${id}`;
  }
  groupName(domainId: string, name: string): string {
    return `${this.prefix}names/groups/${domainId}/${name.toLowerCase()}`;
  }
  membership(groupId: string, userId: string): string {
    return `${this.prefix}members/${groupId}/${userId}`;
  }
  membersOf(groupId: string): string {
    return `${this.prefix}members/${groupId}/`;
  }
  userGroup(userId: string, groupId: string): string {
    return `${this.prefix}user-groups/${userId}/${groupId}`;
  }
  groupsOf(userId: string): string {
    return `${this.prefix}user-groups/${userId}/`;
  }
  role(id: string): string {
    return `${this.prefix}roles/${id}`;
  }
  roles(): string {
    return `${this.prefix}roles/`;
  }
  roleName(name: string): string {
    return `${this.prefix}names/roles/${name.toLowerCase()}`;
  }
  implication(priorId: string, impliedId: string): string {
    return `${this.prefix}implied-roles/${priorId}/${impliedId}`;
  }
  implications(): string {
    return `${this.prefix}implied-roles/`;
  }
  /** Assignments are keyed actor first, so "all roles of this user/group" is one prefix scan. */
  assignment(actor: Actor, scope: Scope, roleId: string): string {
    return `${this.assignmentsOf(actor)}${scopeKey(scope)}/${roleId}`;
  }
  assignmentsOf(actor: Actor): string {
    return 'user' in actor
      ? `${this.prefix}assignments/user/${actor.user}/`
      : `${this.prefix}assignments/group/${actor.group}/`;
  }
  assignmentsOn(actor: Actor, scope: Scope): string {
    return `${this.assignmentsOf(actor)}${scopeKey(scope)}/`;
  }
  assignments(): string {
    return `${this.prefix}assignments/`;
  }
  lockout(userId: string): string {
    return `${this.prefix}lockouts/${userId}`;
  }
  accessKey(accessKeyId: string): string {
    return `${this.prefix}access-keys/${accessKeyId}`;
  }
  accessKeys(): string {
    return `${this.prefix}access-keys/`;
  }
  applicationCredential(id: string): string {
    return `${this.prefix}app-creds/${id}`;
  }
  applicationCredentials(): string {
    return `${this.prefix}app-creds/`;
  }
}

/** The key part for a scope: `project/<id>`, `domain/<id>` or `system/all`. */
export function scopeKey(scope: Scope): string {
  if ('project' in scope) return `project/${scope.project}`;
  if ('domain' in scope) return `domain/${scope.domain}`;
  return 'system/all';
}

/** The inverse of {@link scopeKey}. */
export function parseScopeKey(type: string, id: string): Scope {
  if (type === 'project') return { project: id };
  if (type === 'domain') return { domain: id };
  return { system: 'all' };
}
