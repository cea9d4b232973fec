import { isNubesError } from '@nubes/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addUsage,
  checkParentChange,
  constraintsFor,
  subtractUsage,
  sumUsage,
  zeroUsage,
} from '../src/hierarchy.js';
import { defaultConfig } from '../src/limits.js';
import { emptyProject, type ProjectRecord } from '../src/records.js';

const usage = fc.record({
  inUse: fc.dictionary(fc.constantFrom('vcpus', 'instances'), fc.nat(100)),
  reserved: fc.dictionary(fc.constantFrom('vcpus', 'instances'), fc.nat(100)),
});

describe('usage arithmetic', () => {
  it('subtracting what was added gives back the start', () => {
    fc.assert(
      fc.property(usage, usage, (a, b) => {
        const back = subtractUsage(addUsage(a, b), b);
        expect(addUsage(back, zeroUsage())).toEqual(addUsage(a, zeroUsage()));
      }),
    );
  });

  it('a parent total is the sum of its children, in any order', () => {
    fc.assert(
      fc.property(fc.array(usage, { maxLength: 6 }), (kids) => {
        const records: ProjectRecord[] = kids.map((u) => ({ ...emptyProject(), parent: 'org', ...u }));
        expect(sumUsage(records)).toEqual(sumUsage([...records].reverse()));
      }),
    );
  });
});

describe('constraintsFor', () => {
  const child: ProjectRecord = { ...emptyProject(), parent: 'org', inUse: { vcpus: 2 } };
  const parent: ProjectRecord = {
    ...emptyProject(),
    limits: { vcpus: 8 },
    children: { inUse: { vcpus: 2 }, reserved: {} },
  };

  it('flat: only the project itself', () => {
    const constraints = constraintsFor(defaultConfig(), 'team', child, parent);
    expect(constraints.map((c) => [c.project, c.scope])).toEqual([['team', 'project']]);
  });

  it('strict: the project, then its parent over the whole tree', () => {
    const config = { ...defaultConfig(), model: 'strict-two-level' as const };
    const constraints = constraintsFor(config, 'team', child, parent);
    expect(constraints.map((c) => [c.project, c.scope, c.limit('vcpus')])).toEqual([
      ['team', 'project', 20],
      ['org', 'tree', 8],
    ]);
    const own = constraintsFor(config, 'org', { ...parent, inUse: { vcpus: 1 } }, undefined);
    expect(own.map((c) => [c.scope, c.usage.inUse.vcpus])).toEqual([['tree', 3]]);
  });
});

describe('checkParentChange', () => {
  const refuses = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      return isNubesError(e, 'InvalidInput') && e.details.field === 'parent';
    }
    return false;
  };

  it('keeps trees at most two levels deep', () => {
    expect(refuses(() => checkParentChange('a', 'a', false, undefined))).toBe(true);
    expect(refuses(() => checkParentChange('a', 'b', true, undefined))).toBe(true);
    expect(refuses(() => checkParentChange('a', 'b', false, { ...emptyProject(), parent: 'c' }))).toBe(true);
    expect(refuses(() => checkParentChange('a', 'b', false, emptyProject()))).toBe(false);
    expect(refuses(() => checkParentChange('a', null, true, undefined))).toBe(false);
  });
});
