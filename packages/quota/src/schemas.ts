import { z } from 'zod';

/** Project ids become Store key segments, so `/` and control characters are kept out. */
export const projectIdSchema = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$/,
    'project ids start with a letter or digit and use letters, digits, _ . : @ -',
  );

/** The same rule as @nubes/core's resource vectors, so quota names and scheduler names agree. */
export const resourceNameSchema = z
  .string()
  .regex(
    /^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/,
    'resource names start with a letter and use letters, digits, _ . : -',
  );

/** A limit: a whole number of units, or -1 for unlimited. */
export const limitSchema = z.number().int('must be an integer').min(-1, 'must be -1 (unlimited) or more');

/** Amounts asked for or given back: whole units, never negative (a shrink is a `release`). */
export const deltasSchema = z.record(
  resourceNameSchema,
  z.number().int('must be an integer').nonnegative('must not be negative'),
);

/** Per-project overrides; `null` removes an override so the registered default applies again. */
export const limitOverridesSchema = z.record(resourceNameSchema, limitSchema.nullable());

/** Registered defaults. */
export const defaultsSchema = z.record(resourceNameSchema, limitSchema);

/** Idempotency keys are opaque to us; only the Store's key rules constrain them. */
export const idempotencyKeySchema = z
  .string()
  .min(1, 'must not be empty')
  .max(256, 'must be at most 256 characters')
  .refine((key) => ![...key].some((c) => c.charCodeAt(0) < 0x20), 'must not contain control characters');

/** Reservation ids are the UUIDs `reserve` hands out. */
export const reservationIdSchema = z.string().uuid('must be a reservation id returned by reserve');

/** How long a reservation holds its amounts before the sweeper may reclaim them: 1 ms to 7 days. */
export const ttlSchema = z
  .number()
  .int('must be an integer')
  .min(1, 'must be at least 1 ms')
  .max(7 * 24 * 3600 * 1000, 'must be at most 7 days');

/** Enforcement models, named as oslo.limit names them. */
export const modelSchema = z.enum(['flat', 'strict-two-level']);

/** Options of `reserve`. */
export const reserveOptionsSchema = z
  .object({ ttlMs: ttlSchema.optional(), idempotencyKey: idempotencyKeySchema.optional() })
  .strict();

/** Options of `release`. */
export const releaseOptionsSchema = z.object({ idempotencyKey: idempotencyKeySchema.optional() }).strict();

/** Options of the `Quota` constructor, with their defaults. */
export const quotaOptionsSchema = z
  .object({
    keyPrefix: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]+(\/[A-Za-z0-9_.:-]+)*\/$/, 'must be slash-separated segments ending in /')
      .default('quota/'),
    now: z
      .custom<() => number>((v) => typeof v === 'function', 'must be a function returning milliseconds')
      .optional(),
    defaultTtlMs: ttlSchema.default(10 * 60 * 1000),
    receiptTtlMs: z
      .number()
      .int()
      .min(1000)
      .max(365 * 24 * 3600 * 1000)
      .default(24 * 3600 * 1000),
    maxAttempts: z.number().int().min(1).max(10_000).default(200),
  })
  .strict();

/** Options of `startSweeper`. */
export const sweeperOptionsSchema = z
  .object({
    intervalMs: z.number().int().min(10).max(3_600_000).default(5000),
    onError: z
      .custom<(error: unknown) => void>((v) => typeof v === 'function', 'must be a function')
      .optional(),
  })
  .strict();

/** Options of `repair`. */
export const repairOptionsSchema = z
  .object({ projects: z.array(projectIdSchema).max(100_000).optional() })
  .strict();
