import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { available, type Constraint, evaluate, minAvailable, UNLIMITED } from '../src/index.js';

const constraint = (limit: number, inUse: number, reserved: number): Constraint => ({
  project: 'p',
  scope: 'project',
  limit: () => limit,
  usage: { inUse: { r: inUse }, reserved: { r: reserved } },
});

describe('available', () => {
  it('is the room left, never negative, -1 when unlimited', () => {
    expect(available(10, 3, 2)).toBe(5);
    expect(available(10, 12, 0)).toBe(0);
    expect(available(UNLIMITED, 1e9, 1e9)).toBe(UNLIMITED);
  });

  it('minAvailable treats -1 as larger than anything', () => {
    expect(minAvailable(UNLIMITED, 3)).toBe(3);
    expect(minAvailable(4, UNLIMITED)).toBe(4);
    expect(minAvailable(UNLIMITED, UNLIMITED)).toBe(UNLIMITED);
    expect(minAvailable(4, 3)).toBe(3);
  });
});

describe('evaluate', () => {
  it('fits exactly when every constraint has room for the request', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: -1, max: 50 }), fc.nat(30), fc.nat(30)), {
          minLength: 1,
          maxLength: 3,
        }),
        fc.nat(40),
        (limits, requested) => {
          const constraints = limits.map(([l, u, r]) => constraint(l, u, r));
          const verdict = evaluate({ r: requested }, constraints);
          const expected = constraints.every((c) => {
            const limit = c.limit('r');
            return (
              requested === 0 ||
              limit === -1 ||
              (c.usage.inUse.r ?? 0) + (c.usage.reserved.r ?? 0) + requested <= limit
            );
          });
          expect(verdict.fits).toBe(expected);
          expect(verdict.failures.length === 0).toBe(expected);
          expect(verdict.checks).toHaveLength(constraints.length);
          // Headroom is what a request may take: asking for exactly `available` fits every bounded constraint.
          for (const check of verdict.checks) {
            if (check.limit !== -1) expect(check.fits).toBe(requested === 0 || requested <= check.available);
          }
        },
      ),
    );
  });

  it('names each failing resource and constraint', () => {
    const verdict = evaluate({ a: 5, b: 1 }, [
      {
        project: 'child',
        scope: 'project',
        limit: (r) => (r === 'a' ? 4 : 10),
        usage: { inUse: {}, reserved: {} },
      },
      { project: 'parent', scope: 'tree', limit: () => 5, usage: { inUse: { b: 5 }, reserved: {} } },
    ]);
    expect(verdict.failures.map((f) => [f.project, f.scope, f.resource])).toEqual([
      ['child', 'project', 'a'],
      ['parent', 'tree', 'b'],
    ]);
  });
});
