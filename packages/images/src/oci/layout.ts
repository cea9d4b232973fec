import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { NubesError, notFound, parseInput } from '@nubes/core';
import { z } from 'zod';
import { type ParsedDigest, parseDigest } from './digest.js';
import { layerRefused } from './paths.js';

const MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
};

/** Layer media types and how their bytes are compressed; zstd is refused (Node 20 has no zstd). */
const LAYER_TYPES: Record<string, 'none' | 'gzip'> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

const descriptorSchema = z.looseObject({
  mediaType: z.string().min(1),
  digest: z.string().min(1),
  size: z.number().int().min(0),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: z
    .looseObject({ architecture: z.string(), os: z.string(), variant: z.string().optional() })
    .optional(),
});

/** An OCI content descriptor: what a blob is, its digest and its size. */
export type Descriptor = z.output<typeof descriptorSchema>;

const indexSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(descriptorSchema),
});
const manifestSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
});
const configSchema = z.looseObject({
  architecture: z.string().optional(),
  os: z.string().optional(),
  rootfs: z.object({ type: z.literal('layers'), diff_ids: z.array(z.string()) }),
});

/** An image's config (the parts this library reads; the rest is kept as is). */
export type ImageConfig = z.output<typeof configSchema>;

/** One layer of an image, ready to unpack. */
export interface ImageLayer {
  descriptor: Descriptor;
  /** The digest of the uncompressed tar (from the config's `rootfs.diff_ids`). */
  diffId: string;
  compression: 'none' | 'gzip';
}

/** An image found in a layout, its manifest and config verified against their digests. */
export interface OciImage {
  manifestDigest: string;
  manifest: z.output<typeof manifestSchema>;
  config: ImageConfig;
  layers: ImageLayer[];
}

const selectSchema = z.object({
  /** The `org.opencontainers.image.ref.name` annotation to pick; needed when the index has several images. */
  ref: z.string().min(1).optional(),
  /** The platform to pick from a multi-platform index. Default linux and this machine's architecture. */
  platform: z.object({ os: z.string(), architecture: z.string() }).optional(),
  /** Largest manifest, index or config accepted, in bytes. */
  maxJsonBytes: z
    .number()
    .int()
    .positive()
    .default(4 * 1024 * 1024),
});

/** Options of {@link loadOciImage}. */
export type LoadImageOptions = z.input<typeof selectSchema>;

/** The file of a blob in a layout; the digest is validated first, so the path cannot leave `blobs/`. */
export function blobFile(layoutDir: string, digest: string, field = 'digest'): string {
  const d = parseDigest(digest, field);
  return join(layoutDir, 'blobs', d.algorithm, d.hex);
}

/** Reads a small blob (JSON), checking its size and digest against the descriptor. */
async function readVerified(
  layoutDir: string,
  descriptor: Descriptor,
  maxBytes: number,
  what: string,
): Promise<Buffer> {
  const d = parseDigest(descriptor.digest, `${what}.digest`);
  if (descriptor.size > maxBytes)
    throw new NubesError('PayloadTooLarge', `${what}: ${descriptor.size} bytes is over ${maxBytes}`, {
      details: { digest: descriptor.digest, limit: maxBytes },
    });
  const data = await readFile(blobFile(layoutDir, descriptor.digest)).catch(
    (cause: NodeJS.ErrnoException) => {
      if (cause.code === 'ENOENT') throw notFound('blob', descriptor.digest);
      throw cause;
    },
  );
  verify(d, descriptor, createHash(d.algorithm).update(data).digest('hex'), data.length, what);
  return data;
}

function verify(d: ParsedDigest, descriptor: Descriptor, hex: string, size: number, what: string): void {
  if (size !== descriptor.size)
    throw layerRefused(
      'size-mismatch',
      `${what} ${descriptor.digest} is ${size} bytes, its descriptor says ${descriptor.size}`,
      {
        digest: descriptor.digest,
      },
    );
  if (hex !== d.hex)
    throw layerRefused(
      'digest-mismatch',
      `${what} does not match its digest ${descriptor.digest} (got ${d.algorithm}:${hex})`,
      {
        digest: descriptor.digest,
      },
    );
}

function parseJson<S extends z.ZodType>(schema: S, data: Buffer, what: string): z.output<S> {
  let value: unknown;
  try {
    value = JSON.parse(data.toString('utf8'));
  } catch {
    throw new NubesError('InvalidInput', `${what}: not JSON`, { details: { field: what } });
  }
  return parseInput(schema, value, what);
}

const ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ppc64: 'ppc64le',
  s390x: 's390x',
};

/**
 * Reads an OCI image layout directory (`oci-layout`, `index.json`), picks one image (by `ref`, or by
 * platform from a nested index), and verifies the manifest and config against their digests. Layers are
 * verified as they are unpacked ({@link openLayer}).
 */
export async function loadOciImage(layoutDir: string, options: LoadImageOptions = {}): Promise<OciImage> {
  const dir = parseInput(z.string().min(1), layoutDir, 'layoutDir');
  const o = parseInput(selectSchema, options, 'options');
  const marker = await readFile(join(dir, 'oci-layout'), 'utf8').catch(() => {
    throw new NubesError('NotFound', `${dir} is not an OCI image layout (no oci-layout file)`, {
      details: { dir },
    });
  });
  const version = parseJson(z.object({ imageLayoutVersion: z.string() }), Buffer.from(marker), 'oci-layout');
  if (!version.imageLayoutVersion.startsWith('1.'))
    throw new NubesError('Unsupported', `image layout version ${version.imageLayoutVersion}`, {
      details: { dir },
    });
  const index = parseJson(indexSchema, await readFile(join(dir, 'index.json')), 'index.json');
  const platform = o.platform ?? { os: 'linux', architecture: ARCH[process.arch] ?? process.arch };

  let candidates = index.manifests;
  if (o.ref)
    candidates = candidates.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] === o.ref);
  if (candidates.length === 0) throw notFound('image', o.ref ?? 'index.json');
  if (candidates.length > 1 && !o.ref)
    throw new NubesError('InvalidInput', 'options.ref: the layout holds several images; name one', {
      details: {
        field: 'options.ref',
        refs: candidates.map((c) => c.annotations?.['org.opencontainers.image.ref.name']),
      },
    });
  let chosen = candidates[0] as Descriptor;
  for (let depth = 0; chosen.mediaType === MEDIA.index || chosen.mediaType === MEDIA.dockerList; depth++) {
    if (depth > 4) throw new NubesError('InvalidInput', 'index.json: indexes nest too deeply');
    const nested = parseJson(indexSchema, await readVerified(dir, chosen, o.maxJsonBytes, 'index'), 'index');
    const match = nested.manifests.find(
      (m) =>
        !m.platform || (m.platform.os === platform.os && m.platform.architecture === platform.architecture),
    );
    if (!match) throw notFound('image for platform', `${platform.os}/${platform.architecture}`);
    chosen = match;
  }
  if (chosen.mediaType !== MEDIA.manifest && chosen.mediaType !== MEDIA.dockerManifest)
    throw new NubesError('Unsupported', `manifest media type ${chosen.mediaType}`, {
      details: { digest: chosen.digest },
    });
  const manifest = parseJson(
    manifestSchema,
    await readVerified(dir, chosen, o.maxJsonBytes, 'manifest'),
    'manifest',
  );
  const config = parseJson(
    configSchema,
    await readVerified(dir, manifest.config, o.maxJsonBytes, 'config'),
    'config',
  );
  if (config.rootfs.diff_ids.length !== manifest.layers.length)
    throw new NubesError(
      'InvalidInput',
      `config: ${config.rootfs.diff_ids.length} diff_ids for ${manifest.layers.length} layers`,
      {
        details: { field: 'config.rootfs.diff_ids' },
      },
    );
  const layers = manifest.layers.map((descriptor, i): ImageLayer => {
    const compression = LAYER_TYPES[descriptor.mediaType];
    if (!compression)
      throw new NubesError('Unsupported', `layer media type ${descriptor.mediaType}`, {
        details: { digest: descriptor.digest, mediaType: descriptor.mediaType },
      });
    parseDigest(descriptor.digest, `manifest.layers.${i}.digest`);
    const diffId = config.rootfs.diff_ids[i] as string;
    parseDigest(diffId, `config.rootfs.diff_ids.${i}`);
    return { descriptor, diffId, compression };
  });
  return { manifestDigest: chosen.digest, manifest, config, layers };
}

/**
 * Streams a layer's uncompressed tar, hashing both the blob (its descriptor digest and size) and the
 * tar (its diff ID). Call `verify()` once the stream is consumed: it throws `digest-mismatch` or
 * `size-mismatch` if anything differs, so a tampered layer is never committed.
 */
export async function openLayer(
  layoutDir: string,
  layer: ImageLayer,
): Promise<{
  tar: AsyncIterable<Uint8Array>;
  verify(): void;
  compressedBytes(): number;
  tarBytes(): number;
}> {
  const file = blobFile(layoutDir, layer.descriptor.digest);
  await (
    await open(file, 'r').catch((cause: NodeJS.ErrnoException) => {
      if (cause.code === 'ENOENT') throw notFound('blob', layer.descriptor.digest);
      throw cause;
    })
  ).close();
  const blobDigest = parseDigest(layer.descriptor.digest);
  const diffDigest = parseDigest(layer.diffId);
  const blobHash = createHash(blobDigest.algorithm);
  const diffHash = createHash(diffDigest.algorithm);
  let blobBytes = 0;
  let tarBytes = 0;
  async function* blob(): AsyncGenerator<Buffer> {
    for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
      blobHash.update(chunk as Buffer);
      blobBytes += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
  }
  async function* tar(): AsyncGenerator<Uint8Array> {
    const source = layer.compression === 'gzip' ? gunzip(blob()) : blob();
    for await (const chunk of source) {
      diffHash.update(chunk);
      tarBytes += chunk.length;
      yield chunk;
    }
  }
  return {
    tar: tar(),
    verify() {
      verify(blobDigest, layer.descriptor, blobHash.digest('hex'), blobBytes, 'layer');
      const hex = diffHash.digest('hex');
      if (hex !== diffDigest.hex)
        throw layerRefused(
          'digest-mismatch',
          `uncompressed layer does not match its diff ID ${layer.diffId}`,
          {
            digest: layer.descriptor.digest,
            diffId: layer.diffId,
          },
        );
    },
    compressedBytes: () => blobBytes,
    tarBytes: () => tarBytes,
  };
}

async function* gunzip(source: AsyncIterable<Buffer>): AsyncGenerator<Uint8Array> {
  const out = pipeline(Readable.from(source), createGunzip({ chunkSize: 256 * 1024 }), () => {});
  try {
    for await (const chunk of out) yield chunk as Buffer;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw layerRefused(/unexpected end/i.test(message) ? 'truncated' : 'bad-entry', `gzip: ${message}`, {});
  }
}
