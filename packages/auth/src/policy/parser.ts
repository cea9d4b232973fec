import { invalidInput, type NubesError } from '@nubes/core';
import type { MatchValue, RuleNode } from './ast.js';

interface Token {
  kind: 'lparen' | 'rparen' | 'and' | 'or' | 'not' | 'word';
  text: string;
  pos: number;
}

/** A syntax error at `pos` of rule `name`: `InvalidInput` naming `policy.<name>` and the position. */
export function ruleError(name: string, pos: number, message: string): NubesError {
  return invalidInput(`policy.${name}`, `${message} at position ${pos}`, { rule: name, position: pos });
}

function tokenize(name: string, source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const c = source[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '(') {
      tokens.push({ kind: 'lparen', text: c, pos: i++ });
      continue;
    }
    if (c === ')') {
      tokens.push({ kind: 'rparen', text: c, pos: i++ });
      continue;
    }
    const start = i;
    while (i < source.length && !/[\s()]/.test(source[i] as string)) {
      const ch = source[i] as string;
      if (ch === '%' && source[i + 1] === '(') {
        // `%(target.x)s` holds parentheses that are part of the word, not grouping.
        const close = source.indexOf(')', i);
        if (close === -1) throw ruleError(name, i, 'unterminated %(...)s substitution');
        i = close + 1;
      } else if ((ch === "'" || ch === '"') && source[i - 1] === ':') {
        const close = source.indexOf(ch, i + 1);
        if (close === -1) throw ruleError(name, i, 'unterminated quoted string');
        i = close + 1;
      } else i++;
    }
    const text = source.slice(start, i);
    const lower = text.toLowerCase();
    const kind = lower === 'and' ? 'and' : lower === 'or' ? 'or' : lower === 'not' ? 'not' : 'word';
    tokens.push({ kind, text, pos: start });
  }
  return tokens;
}

function parseMatch(name: string, text: string, pos: number): MatchValue {
  const sub = /^%\(([A-Za-z0-9_.-]+)\)s$/.exec(text);
  if (sub) {
    const path = (sub[1] as string).split('.');
    // `%(target.project_id)s` and oslo's `%(project_id)s` both read the target.
    return { kind: 'target', path: path[0] === 'target' && path.length > 1 ? path.slice(1) : path };
  }
  if (text.startsWith('%(')) throw ruleError(name, pos, `malformed substitution ${JSON.stringify(text)}`);
  if (/^'.*'$|^".*"$/.test(text)) return { kind: 'literal', value: text.slice(1, -1) };
  if (text === 'True') return { kind: 'literal', value: true };
  if (text === 'False') return { kind: 'literal', value: false };
  if (text === '') throw ruleError(name, pos, 'empty match value');
  return { kind: 'literal', value: text };
}

function parseCheck(name: string, token: Token): RuleNode {
  if (token.text === '@') return { type: 'always', pos: token.pos };
  if (token.text === '!') return { type: 'never', pos: token.pos };
  const colon = token.text.indexOf(':');
  if (colon <= 0)
    throw ruleError(
      name,
      token.pos,
      `expected a check such as role:admin, found ${JSON.stringify(token.text)}`,
    );
  const kind = token.text.slice(0, colon);
  const rest = token.text.slice(colon + 1);
  if (rest === '') throw ruleError(name, token.pos + colon + 1, `missing value after "${kind}:"`);
  if (kind === 'role') return { type: 'role', role: rest.toLowerCase(), pos: token.pos, text: token.text };
  if (kind === 'rule') return { type: 'rule', name: rest, pos: token.pos, text: token.text };
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$|^'[^']*'$/.test(kind))
    throw ruleError(name, token.pos, `invalid check kind ${JSON.stringify(kind)}`);
  return {
    type: 'generic',
    key: kind,
    match: parseMatch(name, rest, token.pos + colon + 1),
    pos: token.pos,
    text: token.text,
  };
}

/**
 * Parses one rule in the oslo.policy language: checks (`role:x`, `rule:name`, `key:%(target.path)s`,
 * `key:literal`, `@`, `!`) joined by `not`, `and`, `or` (in that precedence) and parentheses. An empty rule
 * means "always", as in oslo.policy. Throws `InvalidInput` with the position of the first error.
 */
export function parseRule(name: string, source: string): RuleNode {
  const tokens = tokenize(name, source);
  if (tokens.length === 0) return { type: 'always', pos: 0 };
  let i = 0;
  const peek = () => tokens[i];
  const end = () => source.length;

  const parseOr = (): RuleNode => {
    const first = parseAnd();
    const operands = [first];
    while (peek()?.kind === 'or') {
      i++;
      operands.push(parseAnd());
    }
    return operands.length === 1 ? first : { type: 'or', operands, pos: first.pos };
  };
  const parseAnd = (): RuleNode => {
    const first = parseNot();
    const operands = [first];
    while (peek()?.kind === 'and') {
      i++;
      operands.push(parseNot());
    }
    return operands.length === 1 ? first : { type: 'and', operands, pos: first.pos };
  };
  const parseNot = (): RuleNode => {
    const t = peek();
    if (t?.kind === 'not') {
      i++;
      return { type: 'not', operand: parseNot(), pos: t.pos };
    }
    return parseAtom();
  };
  const parseAtom = (): RuleNode => {
    const t = peek();
    if (!t) throw ruleError(name, end(), 'unexpected end of rule');
    if (t.kind === 'lparen') {
      i++;
      const inner = parseOr();
      const close = peek();
      if (close?.kind !== 'rparen') throw ruleError(name, close?.pos ?? end(), 'expected ")"');
      i++;
      return inner;
    }
    if (t.kind !== 'word') throw ruleError(name, t.pos, `unexpected "${t.text}"`);
    i++;
    return parseCheck(name, t);
  };

  const node = parseOr();
  const extra = peek();
  if (extra) throw ruleError(name, extra.pos, `unexpected "${extra.text}"`);
  return node;
}
