import { z } from 'zod';

/**
 * A revocation event in Keystone's model: every token issued at or before `issuedBefore` whose claims
 * match all the fields the event sets is revoked. An event with only `userId` revokes every token of that
 * user issued up to now; tokens issued later are untouched, so re-enabling a user needs no cleanup.
 */
export interface RevocationEvent {
  /** Event id (also its Store key). */
  id: string;
  /** Matches the token whose own audit id this is (one token and nothing else). */
  auditId?: string;
  /** Matches a token and every token rescoped from it. */
  auditChainId?: string;
  userId?: string;
  /** Matches tokens scoped to this project. */
  projectId?: string;
  /** Matches tokens whose user, scope domain or project domain is this domain. */
  domainId?: string;
  /** Matches tokens carrying this role name (after implication). */
  role?: string;
  applicationCredentialId?: string;
  /** Tokens issued at or before this time (ms since the epoch) match. */
  issuedBefore: number;
  /** After this time (ms) every matching token has expired anyway, so the event can be pruned. */
  expiresAt: number;
}

/** The fields of a token an event is matched against. */
export interface RevocationSubject {
  userId: string;
  userDomainId: string;
  projectId?: string;
  projectDomainId?: string;
  domainId?: string;
  roles: readonly string[];
  auditId: string;
  auditChainId: string;
  applicationCredentialId?: string;
  /** When the token was issued (ms). */
  issuedAt: number;
}

/** The zod schema of what a caller may ask to revoke (the event fields other than id and times). */
export const revocationCriteriaSchema = z
  .object({
    auditId: z.string().min(1).max(128).optional(),
    auditChainId: z.string().min(1).max(128).optional(),
    userId: z.string().min(1).max(255).optional(),
    projectId: z.string().min(1).max(255).optional(),
    domainId: z.string().min(1).max(255).optional(),
    role: z.string().min(1).max(255).optional(),
    applicationCredentialId: z.string().min(1).max(255).optional(),
    issuedBefore: z.number().int().nonnegative().optional(),
  })
  .strict()
  .refine((c) => Object.keys(c).some((k) => k !== 'issuedBefore'), {
    message:
      'name at least one of auditId, auditChainId, userId, projectId, domainId, role, applicationCredentialId',
  });

/** What to revoke: see {@link RevocationEvent}. */
export type RevocationCriteria = z.input<typeof revocationCriteriaSchema>;

/** The zod schema of a stored or fetched event. */
export const revocationEventSchema = z.object({
  id: z.string().min(1).max(128),
  auditId: z.string().optional(),
  auditChainId: z.string().optional(),
  userId: z.string().optional(),
  projectId: z.string().optional(),
  domainId: z.string().optional(),
  role: z.string().optional(),
  applicationCredentialId: z.string().optional(),
  issuedBefore: z.number(),
  expiresAt: z.number(),
});

/** True when `event` revokes a token with these claims. Pure. */
export function matchesEvent(event: RevocationEvent, token: RevocationSubject): boolean {
  if (token.issuedAt > event.issuedBefore) return false;
  if (event.userId !== undefined && event.userId !== token.userId) return false;
  if (event.projectId !== undefined && event.projectId !== token.projectId) return false;
  if (
    event.domainId !== undefined &&
    event.domainId !== token.userDomainId &&
    event.domainId !== token.domainId &&
    event.domainId !== token.projectDomainId
  )
    return false;
  if (event.role !== undefined && !token.roles.includes(event.role)) return false;
  if (event.auditId !== undefined && event.auditId !== token.auditId) return false;
  if (event.auditChainId !== undefined && event.auditChainId !== token.auditChainId) return false;
  if (
    event.applicationCredentialId !== undefined &&
    event.applicationCredentialId !== token.applicationCredentialId
  )
    return false;
  return true;
}

/** Anything that can tell whether a token is revoked; `version` changes whenever the answer may change. */
export interface RevocationSource {
  readonly version: number;
  /** The first event that revokes the token, if any. */
  findMatch(token: RevocationSubject): RevocationEvent | undefined;
}
