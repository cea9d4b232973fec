import { z } from 'zod';

const idSchema = z
  .string()
  .regex(
    /^[a-zA-Z][a-zA-Z0-9_-]{0,19}$/,
    'must start with a letter and hold at most 20 letters, digits, _ or -',
  );
const pathSchema = z.string().min(1, 'must not be empty');
const macSchema = z
  .string()
  .regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i, 'must be a MAC address like 52:54:00:12:34:56')
  .refine((mac) => (Number.parseInt(mac.slice(0, 2), 16) & 1) === 0, 'must be a unicast address');

/** Cache modes, as libvirt names them (each maps to `cache.direct`, `cache.no-flush` and `write-cache`). */
export const CACHE_MODES = ['none', 'writeback', 'writethrough', 'directsync', 'unsafe'] as const;

const driveSchema = z
  .object({
    /** Device id; the block nodes are `<id>-file` and `<id>-fmt`. */
    id: idSchema,
    path: pathSchema,
    format: z.enum(['qcow2', 'raw']),
    interface: z.enum(['virtio', 'scsi', 'ide']).default('virtio'),
    cache: z.enum(CACHE_MODES).default('writeback'),
    aio: z.enum(['threads', 'native', 'io_uring']).default('threads'),
    readOnly: z.boolean().default(false),
    serial: z
      .string()
      .regex(/^[a-zA-Z0-9_-]{1,20}$/)
      .optional(),
  })
  .strict()
  .refine((d) => d.aio !== 'native' || d.cache === 'none' || d.cache === 'directsync', {
    message: 'aio "native" needs cache "none" or "directsync" (O_DIRECT)',
    path: ['aio'],
  });

const forwardSchema = z
  .object({
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
    hostAddress: z.string().default('127.0.0.1'),
    hostPort: z.number().int().min(1).max(65535),
    guestPort: z.number().int().min(1).max(65535),
  })
  .strict();

const nicSchema = z
  .object({
    id: idSchema,
    mac: macSchema.optional(),
    model: z.enum(['virtio-net-pci', 'e1000', 'rtl8139']).default('virtio-net-pci'),
    network: z.discriminatedUnion('type', [
      z.object({ type: z.literal('user'), forwards: z.array(forwardSchema).default([]) }).strict(),
      z
        .object({
          type: z.literal('tap'),
          ifname: z
            .string()
            .regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'must be an interface name (at most 15 characters)'),
        })
        .strict(),
    ]),
  })
  .strict();

const bootSchema = z.discriminatedUnion('from', [
  z
    .object({
      from: z.literal('kernel'),
      kernel: pathSchema,
      initrd: pathSchema.optional(),
      cmdline: z.string().optional(),
    })
    .strict(),
  z.object({ from: z.literal('drive'), drive: idSchema }).strict(),
]);

/** The zod schema of {@link VmSpec}. */
export const vmSpecSchema = z
  .object({
    name: z
      .string()
      .regex(
        /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,47}$/,
        'must be 1-48 letters, digits, _, . or -, not starting with a symbol',
      ),
    machine: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'must be a machine type name')
      .default('pc'),
    accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
    cpu: z
      .object({
        model: z
          .string()
          .regex(/^[a-zA-Z0-9_.,=+-]+$/)
          .optional(),
        count: z.number().int().min(1).max(288).default(1),
        sockets: z.number().int().min(1).optional(),
        cores: z.number().int().min(1).optional(),
        threads: z.number().int().min(1).optional(),
        maxCount: z.number().int().min(1).max(288).optional(),
      })
      .strict()
      .default({ count: 1 })
      .refine((c) => c.maxCount === undefined || c.maxCount >= c.count, {
        message: 'must be at least cpu.count',
        path: ['maxCount'],
      })
      .refine(
        (c) =>
          c.sockets === undefined ||
          c.cores === undefined ||
          c.threads === undefined ||
          c.sockets * c.cores * c.threads === (c.maxCount ?? c.count),
        { message: 'sockets × cores × threads must equal the vCPU count (or maxCount)', path: ['sockets'] },
      ),
    memoryMiB: z
      .number()
      .int()
      .min(16, 'must be at least 16 MiB')
      .max(16 * 1024 * 1024),
    balloon: z.boolean().default(true),
    boot: bootSchema.optional(),
    drives: z.array(driveSchema).default([]),
    nics: z.array(nicSchema).default([]),
    serial: z.boolean().default(true),
    vnc: z
      .union([
        z.object({ socket: z.literal(true) }).strict(),
        z
          .object({ host: z.string().default('127.0.0.1'), display: z.number().int().min(0).max(100) })
          .strict(),
      ])
      .optional(),
    cloudInit: z
      .object({
        userData: z.string(),
        metaData: z.string().optional(),
        networkConfig: z.string().optional(),
      })
      .strict()
      .optional(),
    incoming: z.boolean().default(false),
    paused: z.boolean().default(false),
    extraArgs: z.array(z.string()).default([]),
  })
  .strict()
  .superRefine((spec, ctx) => {
    const seen = new Map<string, string>();
    const claim = (id: string, path: (string | number)[]) => {
      const other = seen.get(id);
      if (other)
        ctx.addIssue({ code: 'custom', message: `duplicate device id "${id}" (also ${other})`, path });
      else seen.set(id, path.join('.'));
    };
    for (const [i, d] of spec.drives.entries()) claim(d.id, ['drives', i, 'id']);
    for (const [i, n] of spec.nics.entries()) claim(n.id, ['nics', i, 'id']);
    const macs = new Set<string>();
    spec.nics.forEach((n, i) => {
      if (!n.mac) return;
      const mac = n.mac.toLowerCase();
      if (macs.has(mac))
        ctx.addIssue({ code: 'custom', message: `duplicate MAC ${mac}`, path: ['nics', i, 'mac'] });
      macs.add(mac);
    });
    if (
      spec.boot?.from === 'drive' &&
      !spec.drives.some((d) => d.id === (spec.boot as { drive: string }).drive)
    )
      ctx.addIssue({ code: 'custom', message: 'names no drive of this spec', path: ['boot', 'drive'] });
  });

/** A virtual machine as the caller describes it (before defaults). */
export type VmSpec = z.input<typeof vmSpecSchema>;
/** A {@link VmSpec} with every default filled in. */
export type ResolvedVmSpec = z.output<typeof vmSpecSchema>;
/** One drive of a resolved spec. */
export type DriveSpec = ResolvedVmSpec['drives'][number];
/** One NIC of a resolved spec. */
export type NicSpec = ResolvedVmSpec['nics'][number];
/** The zod schema of one drive (used for hot-plug too). */
export const driveSpecSchema = driveSchema;
/** The zod schema of one NIC (used for hot-plug too). */
export const nicSpecSchema = nicSchema;
