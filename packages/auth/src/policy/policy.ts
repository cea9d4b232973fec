import { parseInput } from '@nubes/core';
import { z } from 'zod';
import { forbidden } from '../internal/errors.js';
import type { TokenContext } from '../tokens/claims.js';
import type { RuleNode } from './ast.js';
import {
  type CompiledCredentials,
  type CompiledRule,
  compileRules,
  explainDenial,
  type PolicyTarget,
} from './compile.js';
import { parseRule } from './parser.js';

/** Credentials given directly rather than as a verified token. Keys are what rules name (`user_id`, ...). */
export interface PolicyCredentials {
  user_id?: string;
  user_domain_id?: string;
  project_id?: string;
  project_domain_id?: string;
  domain_id?: string;
  /** `all` for a system-scoped token. */
  system_scope?: string;
  roles: readonly string[];
  [key: string]: unknown;
}

/** The outcome of {@link Policy.authorize}. */
export interface Decision {
  allowed: boolean;
  action: string;
  /** The policy entry that decided (the action itself, a wildcard such as `compute:*`, or `default`). */
  rule: string | undefined;
  /** Human explanation: which rule allowed, or which checks failed. */
  reason: string;
}

const rulesSchema = z.record(
  z
    .string()
    .min(1)
    .max(256)
    .regex(/^[^\s()]+$/, 'must not contain spaces or parentheses'),
  z.string().max(8192),
);
const actionSchema = z.string().min(1).max(256);
const targetSchema = z.record(z.string(), z.unknown());

interface Resolved {
  rule: string | undefined;
  check: CompiledRule | undefined;
  allow: Decision;
  denyReason: string;
}

const contextCredentials = new WeakMap<object, CompiledCredentials>();

/** The credentials of a verified token as rules see them (`user_id`, `project_id`, `roles`, ...). Memoized. */
export function credentialsOf(subject: TokenContext | PolicyCredentials): CompiledCredentials {
  const cached = contextCredentials.get(subject);
  if (cached) return cached;
  let creds: CompiledCredentials;
  if ('claims' in subject && 'userId' in subject) {
    const c = subject as TokenContext;
    creds = {
      attrs: {
        user_id: c.userId,
        user_domain_id: c.userDomain.id,
        ...(c.project ? { project_id: c.project.id, project_domain_id: c.project.domain.id } : {}),
        ...(c.domain ? { domain_id: c.domain.id } : {}),
        ...(c.scopeType === 'system' ? { system_scope: 'all' } : {}),
        roles: c.roles,
      },
      roles: new Set(c.roles.map((r) => r.toLowerCase())),
    };
  } else {
    const p = subject as PolicyCredentials;
    creds = { attrs: p, roles: new Set(p.roles.map((r) => r.toLowerCase())) };
  }
  contextCredentials.set(subject, creds);
  return creds;
}

/**
 * An RBAC policy in the manner of oslo.policy: named rules, where actions (`compute:servers:create`) are rules
 * too and may be given by wildcard (`compute:*`). Rules are parsed and compiled once, at load; a decision is a
 * Map lookup and a few closure calls.
 */
export class Policy {
  private readonly resolved = new Map<string, Resolved>();

  private constructor(
    private readonly parsed: Map<string, RuleNode>,
    private readonly compiled: Map<string, CompiledRule>,
    private readonly sources: Readonly<Record<string, string>>,
  ) {}

  /**
   * Parses and compiles `rules` (name -> rule text). A syntax error, an unknown `rule:` reference or a cycle
   * throws `InvalidInput` naming the rule (`policy.<name>`) and the position in its text.
   */
  static load(rules: Record<string, string>): Policy {
    const r = parseInput(rulesSchema, rules, 'policy');
    const parsed = new Map<string, RuleNode>();
    for (const [name, text] of Object.entries(r)) parsed.set(name, parseRule(name, text));
    return new Policy(parsed, compileRules(parsed), { ...r });
  }

  /** This policy with `overrides` replacing or adding rules (as a deployment's policy file over the defaults). */
  extend(overrides: Record<string, string>): Policy {
    return Policy.load({ ...this.sources, ...overrides });
  }

  /** The rule texts this policy was loaded from. */
  rules(): Record<string, string> {
    return { ...this.sources };
  }

  /** Names of the rules and actions in this policy. */
  names(): string[] {
    return [...this.parsed.keys()];
  }

  /**
   * Decides whether `subject` (a verified token's context, or plain credentials) may perform `action` on
   * `target`. Never throws for a denial; see {@link enforce}.
   */
  authorize(subject: TokenContext | PolicyCredentials, action: string, target: PolicyTarget = {}): Decision {
    let entry = this.resolved.get(action);
    if (!entry) {
      parseInput(actionSchema, action, 'action');
      parseInput(targetSchema, target, 'target');
      entry = this.resolve(action);
    }
    const creds = credentialsOf(subject);
    if (entry.check?.(creds, target)) return entry.allow;
    if (!entry.check) return { allowed: false, action, rule: undefined, reason: entry.denyReason };
    const why = explainDenial(
      this.parsed.get(entry.rule as string) as RuleNode,
      this.parsed,
      this.compiled,
      creds,
      target,
    );
    return { allowed: false, action, rule: entry.rule, reason: `"${entry.rule}" denied: ${why} failed` };
  }

  /** Like {@link authorize}, but a denial throws `Forbidden` with the decision in `details`. */
  enforce(subject: TokenContext | PolicyCredentials, action: string, target: PolicyTarget = {}): Decision {
    const decision = this.authorize(subject, action, target);
    if (!decision.allowed)
      throw forbidden(`not allowed to ${action}: ${decision.reason}`, {
        action,
        rule: decision.rule,
        reason: decision.reason,
      });
    return decision;
  }

  private resolve(action: string): Resolved {
    let rule: string | undefined;
    if (this.parsed.has(action)) rule = action;
    else {
      // Most specific wildcard first: a:b:c -> a:b:* -> a:* -> * -> default.
      const parts = action.split(':');
      for (let n = parts.length - 1; n >= 1 && !rule; n--) {
        const candidate = `${parts.slice(0, n).join(':')}:*`;
        if (this.parsed.has(candidate)) rule = candidate;
      }
      if (!rule && this.parsed.has('*')) rule = '*';
      if (!rule && this.parsed.has('default')) rule = 'default';
    }
    const resolved: Resolved = {
      rule,
      check: rule ? this.compiled.get(rule) : undefined,
      allow: Object.freeze({ allowed: true, action, rule, reason: `allowed by "${rule}"` }),
      denyReason: `no rule matches "${action}" and the policy has no default`,
    };
    // Bounded so that arbitrary action strings from callers cannot grow memory without limit.
    if (this.resolved.size < 10_000) this.resolved.set(action, resolved);
    return resolved;
  }
}
