import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type CommandRunner, isNubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { type ApplyResult, applyLayer } from './apply.js';
import { chainIds } from './digest.js';
import { type ImageConfig, type LoadImageOptions, loadOciImage, openLayer } from './layout.js';
import type { OverlaySnapshotter } from './snapshotter.js';

/** One layer as {@link unpackOciImage} handled it. */
export interface UnpackedLayer {
  digest: string;
  diffId: string;
  /** The committed snapshot holding this layer and everything under it. */
  chainId: string;
  /** False when the snapshot already existed (another image shares this stack). */
  unpacked: boolean;
  applied?: ApplyResult;
}

/** An image unpacked into snapshots. */
export interface UnpackedImage {
  manifestDigest: string;
  config: ImageConfig;
  layers: UnpackedLayer[];
  /** The top committed snapshot: `prepare(containerKey, snapshot)` gives a container its root. */
  snapshot: string;
}

/** Options of {@link unpackOciImage}. */
export interface UnpackOptions extends LoadImageOptions {
  /** Runs mount/umount/mknod (whiteouts need root). */
  runner?: CommandRunner;
}

/**
 * Unpacks an OCI image layout into committed snapshots named by chain ID, containerd's way: for each
 * layer not already present, prepare a snapshot on the previous one, apply the layer's tar into it
 * (whiteouts and opaque directories included), verify the blob and diff digests, and commit. A layer
 * that fails any check is removed, never committed; layers already unpacked are shared, not redone.
 */
export async function unpackOciImage(
  layoutDir: string,
  snapshotter: OverlaySnapshotter,
  options: UnpackOptions = {},
): Promise<UnpackedImage> {
  const dir = parseInput(z.string().min(1), layoutDir, 'layoutDir');
  const { runner, ...select } = options;
  const image = await loadOciImage(dir, select);
  const chains = chainIds(image.layers.map((l) => l.diffId));
  const layers: UnpackedLayer[] = [];
  let parent: string | undefined;
  for (const [i, layer] of image.layers.entries()) {
    const chainId = chains[i] as string;
    const base = { digest: layer.descriptor.digest, diffId: layer.diffId, chainId };
    if (await snapshotter.exists(chainId)) {
      layers.push({ ...base, unpacked: false });
      parent = chainId;
      continue;
    }
    const key = `extract-${randomBytes(6).toString('hex')} ${chainId}`;
    const mounts = await snapshotter.prepare(key, parent, { labels: { 'nubes.unpack': chainId } });
    try {
      const opened = await openLayer(dir, layer);
      const applied = await applyLayer(opened.tar, mounts, {
        scratch: join(snapshotter.root, 'tmp'),
        ...(runner ? { runner } : {}),
      });
      opened.verify();
      try {
        await snapshotter.commit(chainId, key, {
          labels: { 'nubes.layer.digest': layer.descriptor.digest, 'nubes.layer.diffId': layer.diffId },
        });
      } catch (error) {
        // Another unpack of the same stack won the race: its snapshot is as good as ours.
        if (!(isNubesError(error, 'Conflict') && (await snapshotter.exists(chainId)))) throw error;
        await snapshotter.remove(key);
        layers.push({ ...base, unpacked: false });
        parent = chainId;
        continue;
      }
      layers.push({ ...base, unpacked: true, applied });
    } catch (error) {
      if (await snapshotter.exists(key)) await snapshotter.remove(key);
      throw error;
    }
    parent = chainId;
  }
  return { manifestDigest: image.manifestDigest, config: image.config, layers, snapshot: parent ?? '' };
}
