import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { evaluateJsonQuery, JSON_QUERY_LIMITS, parseJsonQuery, resolvePath } from '../src/index.js';

const state = {
  free_ram_mb: 2048,
  name: 'h1',
  labels: { rack: 'r1' },
  traits: ['SSD', 'GPU'],
  metrics: { cpu: 0.5 },
};
const run = (q: unknown) => evaluateJsonQuery(parseJsonQuery(q), (p) => resolvePath(state, p));

describe('JSON query language (Nova JsonFilter)', () => {
  it('implements every operator with Nova semantics', () => {
    expect(run(['=', '$name', 'h1'])).toBe(true);
    expect(run(['=', 1, 1, 2])).toBe(false);
    expect(run(['<', '$free_ram_mb', 4096, 3000])).toBe(true);
    expect(run(['>', '$free_ram_mb', 1024])).toBe(true);
    expect(run(['<=', '$free_ram_mb', 2048])).toBe(true);
    expect(run(['>=', '$free_ram_mb', 2049])).toBe(false);
    expect(run(['in', '$labels.rack', 'r1', 'r2'])).toBe(true);
    expect(run(['in', 'GPU', '$traits'])).toBe(true);
    expect(run(['not', ['=', '$name', 'h2']])).toBe(true);
    expect(run(['or', ['=', 1, 2], ['=', 2, 2]])).toBe(true);
    expect(run(['and', ['=', 1, 1], ['>', '$metrics.cpu', 0.9]])).toBe(false);
    expect(run([])).toBe(true);
  });

  it('drops variables that resolve to nothing, as Nova does', () => {
    expect(run(['=', '$nope', 'x'])).toBe(true);
    expect(run(['<', '$nope', 5])).toBe(false);
    expect(run(['and', '$nope'])).toBe(true);
    expect(run(['>', '$labels.rack', 1])).toBe(false);
  });

  it('does not reach into prototypes', () => {
    expect(resolvePath(state, 'constructor')).toBeUndefined();
    expect(resolvePath(state, 'labels.__proto__')).toBeUndefined();
  });

  it('rejects unknown operators, bad literals, deep nesting and huge input, naming the field', () => {
    expect(() => parseJsonQuery(['like', '$name', 'h'], 'hints.query')).toThrow(
      /hints\.query\.0: unknown operator "like"/,
    );
    expect(() => parseJsonQuery(['and', ['=', 1, 1], ['~', 1]], 'q')).toThrow(/q\.2\.0/);
    expect(() => parseJsonQuery(['=', { a: 1 }, 1], 'q')).toThrow(/q\.1/);
    expect(() => parseJsonQuery('{"op": 1}', 'q')).toThrow(/q: must be an array/);
    expect(() => parseJsonQuery('[=', 'q')).toThrow(/not valid JSON/);
    let deep: unknown[] = ['=', 1, 1];
    for (let i = 0; i < 10_000; i++) deep = ['not', deep];
    expect(() => parseJsonQuery(deep, 'q')).toThrow(/deeper than 16/);
    const wide = ['or', ...Array.from({ length: 1000 }, () => ['=', 1, 1])];
    expect(() => parseJsonQuery(wide, 'q')).toThrow(/more than 512 elements/);
    expect(() => parseJsonQuery(`["=", "${'x'.repeat(JSON_QUERY_LIMITS.maxLength)}"]`, 'q')).toThrow(
      /longer than/,
    );
  });

  it('never throws on valid queries (property)', () => {
    const leaf = fc.oneof(
      fc.integer(),
      fc.constantFrom('$free_ram_mb', '$name', '$labels.rack', '$missing', 'h1'),
      fc.boolean(),
    );
    const { query } = fc.letrec((tie) => ({
      query: fc
        .tuple(
          fc.constantFrom('=', '<', '>', 'in', '<=', '>=', 'not', 'or', 'and'),
          fc.array(fc.oneof({ depthSize: 'small' }, leaf, tie('query')), { maxLength: 4 }),
        )
        .map(([op, args]) => [op, ...args]),
    }));
    fc.assert(
      fc.property(query, (q) => {
        try {
          expect(typeof run(q)).toBe('boolean');
        } catch (error) {
          expect(String(error)).toMatch(/deeper|more than/);
        }
      }),
    );
  });
});
