import { isNubesError, parseInput } from '@nubes/core';
import { cidrSchema, interfaceNameSchema, parseRate, parseSize, rateSchema, renderRate } from '@nubes/netns';
import { describe, expect, it } from 'vitest';

describe('rates and sizes', () => {
  it('parses rates to bits per second and renders them exactly', () => {
    expect(parseRate('10mbit')).toBe(10_000_000);
    expect(parseRate('1.5gbit')).toBe(1_500_000_000);
    expect(parseRate('512kibit')).toBe(524_288);
    expect(parseRate(64_000)).toBe(64_000);
    expect(renderRate(10_000_000)).toBe('10000000bit');
  });

  it('refuses "mbps" because tc reads it as bytes', () => {
    expect(parseRate('10mbps')).toMatch(/ambiguous/);
    expect(() => parseInput(rateSchema, '10mbps', 'rate')).toThrow(/rate: .*ambiguous/);
  });

  it('parses sizes with binary units', () => {
    expect(parseSize('32k')).toBe(32 * 1024);
    expect(parseSize('256MiB')).toBe(256 * 1024 * 1024);
    expect(parseSize(1500)).toBe(1500);
    expect(parseSize('-1')).toMatch(/not a size/);
  });
});

describe('names', () => {
  it('accepts kernel-valid interface names and refuses the rest', () => {
    expect(interfaceNameSchema.safeParse('veth-a.10').success).toBe(true);
    for (const bad of ['', 'a'.repeat(16), 'a b', 'a/b', '-x', 'x:y', 'eth0@if3']) {
      expect(interfaceNameSchema.safeParse(bad).success, bad).toBe(false);
    }
  });

  it('checks CIDR prefix lengths per family', () => {
    expect(cidrSchema.safeParse('10.0.0.1/24').success).toBe(true);
    expect(cidrSchema.safeParse('fd00::1/64').success).toBe(true);
    expect(cidrSchema.safeParse('10.0.0.1/33').success).toBe(false);
    expect(cidrSchema.safeParse('10.0.0.1').success).toBe(false);
    try {
      parseInput(cidrSchema, '300.0.0.1/8', 'cidr');
    } catch (error) {
      expect(isNubesError(error, 'InvalidInput')).toBe(true);
    }
  });
});
