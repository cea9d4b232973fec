import { posix } from 'node:path';
import { NubesError } from '@nubes/core';

/** Why a layer was refused. Stable strings, in `details.reason`. */
export type LayerRefusal =
  | 'absolute-path'
  | 'path-traversal'
  | 'bad-name'
  | 'link-escape'
  | 'through-symlink'
  | 'not-a-directory'
  | 'hardlink-target'
  | 'digest-mismatch'
  | 'size-mismatch'
  | 'truncated'
  | 'bad-entry';

/** An `InvalidInput` for a layer that cannot be unpacked safely; `details.entry` names the tar entry. */
export function layerRefused(
  reason: LayerRefusal,
  message: string,
  details: Record<string, unknown> = {},
): NubesError {
  return new NubesError('InvalidInput', `layer refused: ${message}`, { details: { reason, ...details } });
}

/**
 * The path of a tar entry relative to the layer root, normalized (`./a//b/` -> `a/b`; the root itself is
 * `''`). Absolute names and any `..` component are refused rather than cleaned: a layer that contains
 * them was made to escape, and unpacking it "fixed" would hide that.
 */
export function entryPath(name: string): string {
  if (name.includes('\0')) throw layerRefused('bad-name', 'entry name contains a NUL byte', { entry: name });
  if (name.startsWith('/'))
    throw layerRefused('absolute-path', `absolute entry name ${name}`, { entry: name });
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..'))
    throw layerRefused('path-traversal', `entry name climbs out: ${name}`, { entry: name });
  return parts.join('/');
}

/**
 * Whether a symlink at `path` (layer-relative) pointing to `target` stays inside the layer when
 * resolved lexically. Absolute targets are resolved against the layer root, which is where the
 * container will see them: `/usr/bin` in a layer means the container's `/usr/bin`.
 */
export function symlinkStaysInside(path: string, target: string): boolean {
  if (target.includes('\0')) return false;
  if (target.startsWith('/')) return true;
  // normalize() would clamp at the root and hide the escape, so count the climb by hand.
  let depth = posix.dirname(path) === '.' ? 0 : posix.dirname(path).split('/').length;
  for (const part of target.split('/')) {
    if (part === '..') depth--;
    else if (part !== '' && part !== '.') depth++;
    if (depth < 0) return false;
  }
  return true;
}
