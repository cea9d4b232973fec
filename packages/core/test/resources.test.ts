import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addResources,
  fitsResources,
  isNubesError,
  isZeroResources,
  maxResources,
  parseResources,
  type Resources,
  resourceShortfall,
  scaleResources,
  subtractResources,
} from '../src/index.js';

const names = fc.constantFrom('vcpus', 'memoryMiB', 'diskGiB', 'gpus', 'CUSTOM_FPGA');
const vector = fc.dictionary(names, fc.integer({ min: 0, max: 1_000_000 }));

describe('resource vectors', () => {
  it('add and subtract per resource, treating missing names as zero', () => {
    const a = { vcpus: 4, memoryMiB: 8192 };
    const b = { vcpus: 1, diskGiB: 20 };
    expect(addResources(a, b)).toEqual({ vcpus: 5, memoryMiB: 8192, diskGiB: 20 });
    expect(subtractResources(a, b)).toEqual({ vcpus: 3, memoryMiB: 8192, diskGiB: -20 });
    expect(subtractResources(a, a)).toEqual({});
    expect(scaleResources(b, 3)).toEqual({ vcpus: 3, diskGiB: 60 });
    expect(maxResources(a, b)).toEqual({ vcpus: 4, memoryMiB: 8192, diskGiB: 20 });
  });

  it('fit when every requested amount is available, and report the shortfall otherwise', () => {
    const free = { vcpus: 4, memoryMiB: 4096 };
    expect(fitsResources({ vcpus: 4 }, free)).toBe(true);
    expect(fitsResources({ vcpus: 2, gpus: 1 }, free)).toBe(false);
    expect(resourceShortfall({ vcpus: 6, memoryMiB: 1024, gpus: 1 }, free)).toEqual({ vcpus: 2, gpus: 1 });
  });

  it('obey the algebra: (a + b) - b = a, and a fits in a + b', () => {
    fc.assert(
      fc.property(vector, vector, (a, b) => {
        const sum = addResources(a, b);
        expect(subtractResources(sum, b)).toEqual(subtractResources(a, {}));
        expect(fitsResources(a, sum)).toBe(true);
        expect(isZeroResources(subtractResources(a, a))).toBe(true);
        expect(fitsResources(a, b)).toBe(Object.keys(resourceShortfall(a, b)).length === 0);
      }),
    );
  });

  it('validate names and amounts, naming the field', () => {
    expect(parseResources({ vcpus: 2, CUSTOM_GPU: 1 })).toEqual({ vcpus: 2, CUSTOM_GPU: 1 });
    const bad: [unknown, string][] = [
      [{ vcpus: -1 }, 'resources.vcpus'],
      [{ vcpus: Number.POSITIVE_INFINITY }, 'resources.vcpus'],
      [{ '1bad': 1 }, 'resources.1bad'],
      ['lots', 'resources'],
    ];
    for (const [input, field] of bad) {
      try {
        parseResources(input as Resources);
        expect.unreachable();
      } catch (error) {
        expect(isNubesError(error, 'InvalidInput')).toBe(true);
        if (isNubesError(error)) expect(error.details.field).toBe(field);
      }
    }
  });
});
