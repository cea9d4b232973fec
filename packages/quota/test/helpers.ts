import { isNubesError, type NubesError } from '@nubes/core';
import { expect } from 'vitest';

/** Awaits `promise`, expects a NubesError with `code` (and `field`, when given), and returns it. */
export async function expectError(
  promise: Promise<unknown>,
  code: string,
  field?: string,
): Promise<NubesError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isNubesError(error), `expected NubesError ${code}, got ${String(error)}`).toBe(true);
  const e = error as NubesError;
  expect(e.code).toBe(code);
  if (field !== undefined) expect(e.details.field).toBe(field);
  return e;
}
