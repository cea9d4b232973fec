import { describe, expect, it } from 'vitest';
import { ERROR_STATUS, errorCode, invalidInput, isNubesError, NubesError, notFound } from '../src/index.js';

describe('NubesError', () => {
  it('carries a stable code, its HTTP status, details and cause', () => {
    const cause = new Error('disk full');
    const error = new NubesError('Unavailable', 'store down', { cause, details: { path: '/x' } });
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe('Unavailable');
    expect(error.httpStatus).toBe(503);
    expect(error.cause).toBe(cause);
    expect(error.toJSON()).toEqual({
      error: { code: 'Unavailable', message: 'store down', status: 503, details: { path: '/x' } },
    });
  });

  it('maps every code to a status between 400 and 599', () => {
    for (const [code, status] of Object.entries(ERROR_STATUS)) {
      expect(new NubesError(code as keyof typeof ERROR_STATUS, 'x').httpStatus).toBe(status);
      expect(status).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(600);
    }
  });

  it('is told apart by code', () => {
    const conflict = new NubesError('Conflict', 'raced');
    expect(isNubesError(conflict)).toBe(true);
    expect(isNubesError(conflict, 'Conflict', 'NotFound')).toBe(true);
    expect(isNubesError(conflict, 'NotFound')).toBe(false);
    expect(isNubesError(new Error('plain'))).toBe(false);
    expect(errorCode(conflict)).toBe('Conflict');
    expect(errorCode('nope')).toBeUndefined();
  });

  it('has helpers that name the field or the missing thing', () => {
    expect(invalidInput('spec.vcpus', 'must be positive')).toMatchObject({
      code: 'InvalidInput',
      httpStatus: 400,
      message: 'spec.vcpus: must be positive',
      details: { field: 'spec.vcpus' },
    });
    expect(notFound('image', 'abc')).toMatchObject({
      code: 'NotFound',
      details: { kind: 'image', id: 'abc' },
    });
  });
});
