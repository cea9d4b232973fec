import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareKeys, prefixEnd } from '../src/store/keys.js';

describe('key order', () => {
  it('is UTF-8 byte order for any strings, surrogate pairs included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), (a, b) => {
        expect(Math.sign(compareKeys(a, b))).toBe(Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b))));
      }),
      { numRuns: 2000 },
    );
    expect(compareKeys('p/😀', 'p/\uffee')).toBeGreaterThan(0);
    expect(compareKeys('a', 'a/')).toBeLessThan(0);
  });

  it('puts every key with a prefix below the prefix end', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, unit: 'grapheme' }),
        fc.string({ unit: 'grapheme' }),
        (prefix, rest) => {
          const end = prefixEnd(prefix) as Buffer;
          expect(Buffer.compare(Buffer.from(prefix + rest), end)).toBeLessThan(0);
          expect(Buffer.compare(Buffer.from(prefix), end)).toBeLessThan(0);
        },
      ),
    );
    expect(prefixEnd('')).toBeUndefined();
  });
});
