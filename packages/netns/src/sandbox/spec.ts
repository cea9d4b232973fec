import { z } from 'zod';
import { resourceSpecSchema } from '../cgroups/spec.js';
import { cgroupNameSchema, namespaceNameSchema } from '../names.js';

/**
 * Schemas of a sandbox. Everything here reaches the setup script as positional parameters (never
 * shell text), so the only characters refused are the ones the kernel or a mount option string
 * would misread.
 */

/** An absolute path without NUL bytes or `..` components (it is interpreted by the kernel as given). */
export const absolutePathSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(4096, 'must be at most 4096 characters')
  .refine((p) => p.startsWith('/'), 'must be an absolute path')
  .refine((p) => !p.includes('\0'), 'must not contain NUL')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".." components');

// overlayfs splits its option string on "," and lowerdir on ":"; escaping is not portable across
// kernels, so such paths are refused instead of half-supported.
const overlayDirSchema = absolutePathSchema.refine(
  (p) => !/[,:\s\\]/.test(p),
  'must not contain ",", ":", whitespace or backslashes (overlayfs option syntax)',
);

/** A hostname: dot-separated labels of letters, digits and `-`, at most 64 characters (the UTS limit). */
export const hostnameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters (the kernel limit)')
  .regex(
    /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/,
    'must be letters, digits and "-" in dot-separated labels',
  );

/** A program and its arguments: at least one string, none with NUL (exec could not pass it). */
const argvSchema = z
  .array(z.string().refine((s) => !s.includes('\0'), 'must not contain NUL'))
  .min(1, 'must name a program');

/** Environment variables: POSIX names, values without NUL. */
const envSchema = z.record(
  z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a variable name'),
  z.string().refine((s) => !s.includes('\0'), 'must not contain NUL'),
);

const chrootSchema = z.object({ chroot: absolutePathSchema }).strict();

const overlaySchema = z
  .object({
    overlay: z
      .object({
        /** Read-only layers, top first (overlayfs order). */
        lower: z.array(overlayDirSchema).min(1, 'needs at least one lower directory').max(64),
        /** Where writes land. */
        upper: overlayDirSchema,
        /** overlayfs scratch space: an empty directory on the same filesystem as `upper`. */
        work: overlayDirSchema,
        /** Where the merged tree is mounted inside the sandbox (default: over the first lower directory). */
        target: absolutePathSchema.optional(),
      })
      .strict(),
  })
  .strict();

/** The schema of {@link SandboxSpec}. */
export const sandboxSpecSchema = z
  .object({
    name: cgroupNameSchema.max(64, 'must be at most 64 characters'),
    argv: argvSchema,
    hostname: hostnameSchema.optional(),
    root: z.union([chrootSchema, overlaySchema]).optional(),
    network: z.object({ namespace: namespaceNameSchema }).strict().optional(),
    loopbackUp: z.boolean().default(true),
    resources: resourceSpecSchema.default({}),
    env: envSchema.default({}),
    cwd: absolutePathSchema.default('/'),
    startTimeoutMs: z.number().int().positive().max(600_000).default(10_000),
  })
  .strict();

/**
 * What to run and how to isolate it.
 *
 * ```ts
 * { name: 'acme-web', argv: ['/bin/sh'], hostname: 'web', root: { chroot: '/srv/rootfs' },
 *   resources: { memory: { max: '128m' }, pids: { max: 64 } } }
 * ```
 */
export type SandboxSpec = z.input<typeof sandboxSpecSchema>;

/** A validated {@link SandboxSpec} with defaults filled in. */
export type ParsedSandboxSpec = z.output<typeof sandboxSpecSchema>;

/** Options of an exec into a sandbox or namespace. */
export const execOptionsSchema = z
  .object({
    env: envSchema.optional(),
    cwd: absolutePathSchema.optional(),
  })
  .strict();

/** A terminal size: columns and rows, as a terminal emulator reports them. */
export const terminalSizeSchema = z
  .object({
    cols: z.number().int().min(1).max(1000),
    rows: z.number().int().min(1).max(1000),
  })
  .strict();

export { argvSchema as sandboxArgvSchema, envSchema as sandboxEnvSchema };
