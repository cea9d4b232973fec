import { invalidInput } from '@nubes/core';

/** The operators of Nova's JsonFilter language. */
export const JSON_QUERY_OPERATORS = ['=', '<', '>', 'in', '<=', '>=', 'not', 'or', 'and'] as const;

/** One operator of the query language. */
export type JsonQueryOperator = (typeof JSON_QUERY_OPERATORS)[number];

/** An argument: a nested query, a literal, or a `$variable` (a string starting with `$`). */
export type JsonQueryArgument = JsonQuery | string | number | boolean | null;

/** A parsed query: `[operator, ...arguments]`, e.g. `['>=', '$free.memoryMiB', 1024]`; `[]` matches every host. */
export type JsonQuery = readonly [] | readonly [JsonQueryOperator, ...JsonQueryArgument[]];

/**
 * Bounds on a query, checked before anything is evaluated: a query is data from a user, and
 * an unbounded one would let a single request burn the scheduler's CPU or stack.
 */
export const JSON_QUERY_LIMITS = {
  /** Nesting of operator lists. */
  maxDepth: 16,
  /** Operators, literals and variables together. */
  maxNodes: 512,
  /** Characters of a query given as a JSON string. */
  maxLength: 16_384,
} as const;

const operators = new Set<string>(JSON_QUERY_OPERATORS);

/**
 * Parses and checks a query (a JSON string or an array) or throws `InvalidInput` naming the
 * offending element (`hints.query.2.0`). Depth and size are bounded before any recursion goes deeper.
 */
export function parseJsonQuery(input: unknown, field = 'query'): JsonQuery {
  let value = input;
  if (typeof input === 'string') {
    if (input.length > JSON_QUERY_LIMITS.maxLength)
      throw invalidInput(field, `is longer than ${JSON_QUERY_LIMITS.maxLength} characters`);
    try {
      value = JSON.parse(input);
    } catch {
      throw invalidInput(field, 'is not valid JSON');
    }
  }
  if (!Array.isArray(value)) throw invalidInput(field, 'must be an array [operator, ...arguments]');
  if (value.length === 0) return [];
  const nodes = { count: 0 };
  checkQuery(value, field, 1, nodes);
  return value as unknown as JsonQuery;
}

function checkQuery(query: unknown[], field: string, depth: number, nodes: { count: number }): void {
  if (depth > JSON_QUERY_LIMITS.maxDepth)
    throw invalidInput(field, `nests deeper than ${JSON_QUERY_LIMITS.maxDepth} levels`);
  const op = query[0];
  if (typeof op !== 'string' || !operators.has(op))
    throw invalidInput(
      `${field}.0`,
      `unknown operator ${JSON.stringify(op)}; expected one of ${JSON_QUERY_OPERATORS.join(' ')}`,
    );
  for (let i = 0; i < query.length; i++) {
    if (++nodes.count > JSON_QUERY_LIMITS.maxNodes)
      throw invalidInput(field, `has more than ${JSON_QUERY_LIMITS.maxNodes} elements`);
    if (i === 0) continue;
    const arg = query[i];
    const path = `${field}.${i}`;
    if (Array.isArray(arg)) checkQuery(arg, path, depth + 1, nodes);
    else if (typeof arg === 'number') {
      if (!Number.isFinite(arg)) throw invalidInput(path, 'must be a finite number');
    } else if (typeof arg === 'string') {
      if (arg.length > 1024) throw invalidInput(path, 'is longer than 1024 characters');
    } else if (arg !== null && typeof arg !== 'boolean') {
      throw invalidInput(path, 'must be a query, a string, a number, a boolean or null');
    }
  }
}

/** Looks up a dotted variable path (`free.memoryMiB`) in a host's state; `undefined` when absent. */
export type VariableResolver = (path: string) => unknown;

/**
 * Evaluates a checked query with Nova's semantics: arguments that resolve to nothing are dropped,
 * `=`/`<`/`>`/`<=`/`>=` compare the first term with each of the others, `in` asks whether the first
 * term equals one of the others (or is an element of an array among them), `and`/`or` combine truth.
 * Ordering comparisons only hold between two numbers or two strings.
 */
export function evaluateJsonQuery(query: JsonQuery, resolve: VariableResolver): boolean {
  if (query.length === 0) return true;
  return Boolean(run(query as readonly [JsonQueryOperator, ...JsonQueryArgument[]], resolve));
}

function run(
  query: readonly [JsonQueryOperator, ...JsonQueryArgument[]],
  resolve: VariableResolver,
): unknown {
  const args: unknown[] = [];
  for (let i = 1; i < query.length; i++) {
    const arg = query[i];
    let value: unknown = arg;
    if (Array.isArray(arg))
      value = run(arg as unknown as readonly [JsonQueryOperator, ...JsonQueryArgument[]], resolve);
    else if (typeof arg === 'string' && arg.startsWith('$')) value = resolve(arg.slice(1));
    if (value !== undefined && value !== null) args.push(value);
  }
  const [lhs, ...rest] = args;
  switch (query[0]) {
    case '=':
      return args.length > 0 && rest.every((rhs) => lhs === rhs);
    case '<':
      return rest.length > 0 && rest.every((rhs) => ordered(lhs, rhs) && (lhs as number) < (rhs as number));
    case '>':
      return rest.length > 0 && rest.every((rhs) => ordered(lhs, rhs) && (lhs as number) > (rhs as number));
    case '<=':
      return rest.length > 0 && rest.every((rhs) => ordered(lhs, rhs) && (lhs as number) <= (rhs as number));
    case '>=':
      return rest.length > 0 && rest.every((rhs) => ordered(lhs, rhs) && (lhs as number) >= (rhs as number));
    case 'in':
      return args.length > 0 && rest.some((rhs) => rhs === lhs || (Array.isArray(rhs) && rhs.includes(lhs)));
    case 'not':
      return args.length > 0 && !lhs;
    case 'or':
      return args.some(Boolean);
    case 'and':
      return args.every(Boolean);
  }
}

function ordered(a: unknown, b: unknown): boolean {
  return (typeof a === 'number' && typeof b === 'number') || (typeof a === 'string' && typeof b === 'string');
}

/** Resolves a dotted path inside a plain object, refusing prototype keys. */
export function resolvePath(root: unknown, path: string): unknown {
  let value: unknown = root;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}
