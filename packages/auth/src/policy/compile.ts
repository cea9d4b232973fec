import type { MatchValue, RuleNode } from './ast.js';
import { ruleError } from './parser.js';

/** Credentials as the compiled rules read them: attributes by name and a set of lower-cased role names. */
export interface CompiledCredentials {
  attrs: Readonly<Record<string, unknown>>;
  roles: ReadonlySet<string>;
}

/** The object a rule's `%(target.x)s` substitutions read. */
export type PolicyTarget = Readonly<Record<string, unknown>>;

/** A compiled rule. */
export type CompiledRule = (creds: CompiledCredentials, target: PolicyTarget) => boolean;

function readPath(root: unknown, path: readonly string[]): unknown {
  let value = root;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function equalsValue(actual: unknown, expected: unknown): boolean {
  if (actual === undefined || actual === null || expected === undefined || expected === null) return false;
  if (Array.isArray(actual)) return actual.some((a) => equalsValue(a, expected));
  return actual === expected || String(actual) === String(expected);
}

function compileMatch(keyPath: string[], match: MatchValue): CompiledRule {
  const literalKey = /^'[^']*'$/.test(keyPath.join('.')) ? keyPath.join('.').slice(1, -1) : undefined;
  if (literalKey !== undefined) {
    // `'public':%(target.visibility)s`: a constant compared with the target, as oslo.policy allows.
    if (match.kind === 'literal') return () => equalsValue(literalKey, match.value);
    const path = match.path;
    return (_c, t) => equalsValue(literalKey, readPath(t, path));
  }
  const single = keyPath.length === 1 ? (keyPath[0] as string) : undefined;
  const credValue = single
    ? (c: CompiledCredentials) => c.attrs[single]
    : (c: CompiledCredentials) => readPath(c.attrs, keyPath);
  if (match.kind === 'literal') {
    const expected = match.value;
    return (c) => equalsValue(credValue(c), expected);
  }
  const path = match.path;
  if (path.length === 1) {
    const key = path[0] as string;
    return (c, t) => equalsValue(credValue(c), t[key]);
  }
  return (c, t) => equalsValue(credValue(c), readPath(t, path));
}

/**
 * Compiles parsed rules to closures. `rule:` references are resolved at compile time (an unknown name or a
 * cycle is an error naming the rule and position), so a decision is plain function calls with no lookups.
 */
export function compileRules(parsed: ReadonlyMap<string, RuleNode>): Map<string, CompiledRule> {
  const compiled = new Map<string, CompiledRule>();
  const visiting = new Set<string>();

  const compileNamed = (name: string): CompiledRule => {
    const done = compiled.get(name);
    if (done) return done;
    visiting.add(name);
    const fn = compileNode(name, parsed.get(name) as RuleNode);
    visiting.delete(name);
    compiled.set(name, fn);
    return fn;
  };

  const compileNode = (owner: string, node: RuleNode): CompiledRule => {
    switch (node.type) {
      case 'always':
        return () => true;
      case 'never':
        return () => false;
      case 'role':
        return leafCheck(node);
      case 'rule': {
        if (!parsed.has(node.name)) throw ruleError(owner, node.pos, `unknown rule "${node.name}"`);
        if (visiting.has(node.name))
          throw ruleError(owner, node.pos, `rule "${node.name}" refers back to itself`);
        return compileNamed(node.name);
      }
      case 'generic':
        return leafCheck(node);
      case 'not': {
        const inner = compileNode(owner, node.operand);
        return (c, t) => !inner(c, t);
      }
      case 'and': {
        const parts = node.operands.map((n) => compileNode(owner, n));
        if (parts.length === 2) {
          const [a, b] = parts as [CompiledRule, CompiledRule];
          return (c, t) => a(c, t) && b(c, t);
        }
        return (c, t) => parts.every((p) => p(c, t));
      }
      case 'or': {
        const parts = node.operands.map((n) => compileNode(owner, n));
        if (parts.length === 2) {
          const [a, b] = parts as [CompiledRule, CompiledRule];
          return (c, t) => a(c, t) || b(c, t);
        }
        return (c, t) => parts.some((p) => p(c, t));
      }
    }
  };

  for (const name of parsed.keys()) compileNamed(name);
  return compiled;
}

/** Why a rule denies: the checks that failed, as they are written. Slow path, only for denials. */
export function explainDenial(
  node: RuleNode,
  parsed: ReadonlyMap<string, RuleNode>,
  compiled: ReadonlyMap<string, CompiledRule>,
  creds: CompiledCredentials,
  target: PolicyTarget,
): string {
  const failing = (n: RuleNode): string | undefined => {
    switch (n.type) {
      case 'always':
        return undefined;
      case 'never':
        return '"!" (never)';
      case 'role':
      case 'generic':
        return leafCheck(n)(creds, target) ? undefined : n.text;
      case 'rule':
        return (compiled.get(n.name) as CompiledRule)(creds, target)
          ? undefined
          : `${n.text} (${failing(parsed.get(n.name) as RuleNode) ?? 'failed'})`;
      case 'not':
        return failing(n.operand) === undefined ? `not ${describe(n.operand)}` : undefined;
      case 'and':
        for (const o of n.operands) {
          const f = failing(o);
          if (f) return f;
        }
        return undefined;
      case 'or': {
        const all = n.operands.map(failing);
        return all.every((f) => f !== undefined) ? all.join(' and ') : undefined;
      }
    }
  };
  return failing(node) ?? 'denied';
}

function leafCheck(n: RuleNode & { type: 'role' | 'generic' }): CompiledRule {
  if (n.type === 'role') return (c) => c.roles.has(n.role);
  return compileMatch(n.key.split('.'), n.match);
}

function describe(n: RuleNode): string {
  if (n.type === 'role' || n.type === 'generic' || n.type === 'rule') return n.text;
  if (n.type === 'always') return '@';
  if (n.type === 'never') return '!';
  return '(…)';
}
