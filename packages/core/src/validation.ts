import type { z } from 'zod';
import { NubesError } from './errors.js';

/**
 * Parses `input` with a zod schema and returns the typed result, or throws `InvalidInput`
 * naming the first failing field as a dotted path under `field` (`options.limit`, `deltas.vcpus`).
 * Every public entry point of Nubes validates through this, so errors look the same everywhere.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, field: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({
    field: [field, ...issue.path.map(String)].filter((part) => part !== '').join('.'),
    message: issue.message,
  }));
  const first = issues[0] ?? { field, message: 'invalid' };
  return throwInvalid(first.field, first.message, issues);
}

function throwInvalid(field: string, message: string, issues: { field: string; message: string }[]): never {
  throw new NubesError('InvalidInput', `${field}: ${message}`, { details: { field, issues } });
}
