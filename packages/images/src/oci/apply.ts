import { randomBytes } from 'node:crypto';
import {
  chmod,
  lchown,
  link,
  lutimes,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rm,
  symlink,
  utimes,
} from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { type CommandRunner, commandRunner, isNubesError, NubesError } from '@nubes/core';
import { type Extract, extract, type Header } from 'tar-stream';
import type { Mount } from './lowerdir.js';
import { mountAll, unmount } from './mount.js';
import { entryPath, layerRefused, symlinkStaysInside } from './paths.js';
import { classifyEntry, planWhiteouts } from './whiteouts.js';

type Kind = 'dir' | 'file' | 'symlink' | 'other';

/** What {@link applyLayer} did. */
export interface ApplyResult {
  /** Tar entries written (whiteouts and opaque markers not counted). */
  entries: number;
  /** File bytes written. */
  bytes: number;
  /** Whiteouts turned into overlayfs whiteouts (after dropping those an opaque directory covers). */
  whiteouts: number;
  /** Opaque directories applied. */
  opaques: number;
}

/** Options of {@link applyLayer}. */
export interface ApplyOptions {
  /** Runs mount, umount and mknod. Default: the core runner. */
  runner?: CommandRunner;
  /** A directory on the same filesystem for the temporary mount point. */
  scratch: string;
}

/** The directory a snapshot's mounts write to: the bind source, or overlay's `upperdir`. */
export function writableDir(mounts: readonly Mount[]): { dir: string; hasParent: boolean } {
  const m = mounts[0];
  if (mounts.length !== 1 || !m) throw new NubesError('InvalidInput', 'mounts: expected exactly one mount');
  if (m.type === 'bind' && !m.options.includes('ro')) return { dir: m.source, hasParent: false };
  const upper = m.options.find((o) => o.startsWith('upperdir='));
  if (m.type === 'overlay' && upper) return { dir: upper.slice('upperdir='.length), hasParent: true };
  throw new NubesError('InvalidInput', 'mounts: not a writable snapshot');
}

/**
 * Unpacks an uncompressed layer tar into the writable directory of a freshly prepared snapshot, the way
 * containerd applies a diff: entries are written directly into the layer, never outside it (absolute
 * names, `..`, writes through a symlink, symlinks that climb out and hard links to anything but an
 * earlier entry are refused), ownership is kept when running as root, and OCI whiteouts and opaque
 * directories become overlayfs whiteouts through a temporary overlay mount on the parents (root).
 * On a refusal the caller removes the snapshot: a half-applied layer is never committed.
 */
export async function applyLayer(
  tar: AsyncIterable<Uint8Array> | Iterable<Uint8Array> | Readable,
  mounts: readonly Mount[],
  options: ApplyOptions,
): Promise<ApplyResult> {
  const runner = options.runner ?? commandRunner;
  const { dir: root, hasParent } = writableDir(mounts);
  const kinds = new Map<string, Kind>([['', 'dir']]);
  const dirTimes: { path: string; mtime: Date }[] = [];
  const whiteouts: string[] = [];
  const opaques: string[] = [];
  const asRoot = process.getuid?.() === 0;
  const result: ApplyResult = { entries: 0, bytes: 0, whiteouts: 0, opaques: 0 };

  const ensureParents = async (path: string, entry: string) => {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      const kind = kinds.get(p);
      if (kind === 'dir') continue;
      if (kind === 'symlink')
        throw layerRefused('through-symlink', `${entry} would be written through the symlink ${p}`, {
          entry,
        });
      if (kind !== undefined)
        throw layerRefused('not-a-directory', `${entry} needs ${p} to be a directory`, { entry });
      await mkdir(join(root, p), { mode: 0o755 });
      kinds.set(p, 'dir');
    }
  };
  const clear = async (path: string, keepDir: boolean) => {
    const kind = kinds.get(path);
    if (kind === undefined || (keepDir && kind === 'dir')) return;
    await rm(join(root, path), { recursive: true, force: true });
    for (const k of kinds.keys()) if (k === path || k.startsWith(`${path}/`)) kinds.delete(k);
  };
  const finish = async (path: string, h: Header, kind: Kind) => {
    const target = join(root, path);
    if (asRoot) await lchown(target, h.uid ?? 0, h.gid ?? 0);
    if (kind !== 'symlink') await chmod(target, (h.mode ?? (kind === 'dir' ? 0o755 : 0o644)) & 0o7777);
    const mtime = h.mtime ?? new Date(0);
    if (kind === 'dir') dirTimes.push({ path: target, mtime });
    else if (kind === 'symlink') await lutimes(target, mtime, mtime);
    else await utimes(target, mtime, mtime);
  };

  const unpacker = extract();
  const feeding = feed(tar, unpacker);
  // Its error also reaches the entry loop below; this only keeps it from counting as unhandled meanwhile.
  feeding.catch(() => {});
  try {
    for await (const entry of unpacker) {
      const h = entry.header;
      const path = entryPath(h.name);
      const meaning = classifyEntry(path);
      if (meaning.kind !== 'entry') {
        entry.resume();
        if (meaning.kind === 'whiteout') {
          checkParents(path, h.name, kinds);
          whiteouts.push(meaning.target);
        } else if (meaning.kind === 'opaque') {
          if (meaning.dir !== '') {
            await ensureParents(`${meaning.dir}/x`, h.name);
          }
          opaques.push(meaning.dir);
        }
        continue;
      }
      if (path === '') {
        // The layer root ("./"): its metadata belongs to the snapshot, not to the layer.
        entry.resume();
        continue;
      }
      await ensureParents(path, h.name);
      const target = join(root, path);
      switch (h.type) {
        case 'directory':
          await clear(path, true);
          if (kinds.get(path) !== 'dir') await mkdir(target, { mode: 0o755 });
          kinds.set(path, 'dir');
          entry.resume();
          await finish(path, h, 'dir');
          break;
        case 'file':
        case 'contiguous-file': {
          await clear(path, false);
          const file = await open(target, 'wx', 0o600);
          try {
            for await (const chunk of entry) await file.write(chunk as Buffer);
          } finally {
            await file.close();
          }
          kinds.set(path, 'file');
          result.bytes += h.size ?? 0;
          await finish(path, h, 'file');
          break;
        }
        case 'symlink': {
          entry.resume();
          const to = h.linkname ?? '';
          if (to === '' || !symlinkStaysInside(path, to))
            throw layerRefused('link-escape', `symlink ${h.name} -> ${to} points outside the layer`, {
              entry: h.name,
              linkname: to,
            });
          await clear(path, false);
          await symlink(to, target);
          kinds.set(path, 'symlink');
          await finish(path, h, 'symlink');
          break;
        }
        case 'link': {
          entry.resume();
          const from = entryPath(h.linkname ?? '');
          const kind = kinds.get(from);
          if (from === '' || (kind !== 'file' && kind !== 'symlink' && kind !== 'other'))
            throw layerRefused(
              'hardlink-target',
              `hard link ${h.name} -> ${h.linkname} is not an earlier file of this layer`,
              {
                entry: h.name,
                linkname: h.linkname,
              },
            );
          await clear(path, false);
          await link(join(root, from), target);
          kinds.set(path, kind);
          break;
        }
        case 'character-device':
        case 'block-device':
        case 'fifo': {
          entry.resume();
          await clear(path, false);
          const type =
            h.type === 'fifo'
              ? ['p']
              : [h.type === 'block-device' ? 'b' : 'c', String(h.devmajor ?? 0), String(h.devminor ?? 0)];
          await runner.run('mknod', ['-m', ((h.mode ?? 0o644) & 0o777).toString(8), target, ...type]);
          kinds.set(path, 'other');
          await finish(path, h, 'other');
          break;
        }
        default:
          entry.resume();
          throw layerRefused('bad-entry', `entry ${h.name} has unsupported type ${h.type}`, {
            entry: h.name,
          });
      }
      result.entries++;
    }
    await feeding;
  } catch (error) {
    unpacker.destroy();
    await feeding.catch(() => {});
    throw asLayerError(error);
  }

  const own = new Set(kinds.keys());
  const plan = planWhiteouts({ whiteouts, opaques, own, hasParent });
  if (plan.length > 0) {
    await mkdir(options.scratch, { recursive: true });
    const mountpoint = await mkdtemp(join(options.scratch, `apply-${randomBytes(3).toString('hex')}-`));
    await mountAll(mounts, mountpoint, { runner });
    try {
      for (const step of plan) {
        if (step.op === 'remove') {
          await rm(join(mountpoint, step.path), { recursive: true, force: true });
          result.whiteouts++;
        } else {
          await hideLower(mountpoint, step.path, kinds);
          result.opaques++;
        }
      }
    } finally {
      await unmount(mountpoint, { runner });
      await rm(mountpoint, { recursive: true, force: true });
    }
  }
  // Last, because writing a directory's children changed its mtime; deepest first for the same reason.
  for (const { path, mtime } of dirTimes.reverse()) await utimes(path, mtime, mtime);
  return result;
}

/** Refuses a whiteout under a symlink or a file of this layer (as hostile as a write there) without creating anything. */
function checkParents(path: string, entry: string, kinds: ReadonlyMap<string, Kind>): void {
  const parts = path.split('/');
  for (let i = 1; i < parts.length; i++) {
    const kind = kinds.get(parts.slice(0, i).join('/'));
    if (kind === 'symlink') throw layerRefused('through-symlink', `${entry} lies under a symlink`, { entry });
    if (kind !== undefined && kind !== 'dir')
      throw layerRefused('not-a-directory', `${entry} lies under a file`, { entry });
  }
}

/** Writes a byte source into the tar parser with backpressure, ending it at the end of the source. */
async function feed(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array> | Readable,
  sink: Extract,
): Promise<void> {
  try {
    for await (const chunk of source) {
      if (!sink.write(chunk))
        await new Promise<void>((resolve, reject) => {
          const done = () => {
            sink.off('error', fail);
            resolve();
          };
          const fail = (e: Error) => {
            sink.off('drain', done);
            reject(e);
          };
          sink.once('drain', done);
          sink.once('error', fail);
        });
    }
    // streamx's typings want an argument; ending without a final chunk is what is meant.
    (sink as unknown as { end(): void }).end();
  } catch (error) {
    sink.destroy(error as Error);
    throw error;
  }
}

/** Removes, through the mount, what the parents have under `dir` and the layer does not (recursively). */
async function hideLower(mountpoint: string, dir: string, kinds: ReadonlyMap<string, Kind>): Promise<void> {
  let names: string[];
  try {
    names = await readdir(join(mountpoint, dir));
  } catch {
    return;
  }
  for (const name of names) {
    const path = dir ? `${dir}/${name}` : name;
    const kind = kinds.get(path);
    if (kind === undefined) await rm(join(mountpoint, path), { recursive: true, force: true });
    else if (kind === 'dir') await hideLower(mountpoint, path, kinds);
  }
}

function asLayerError(error: unknown): unknown {
  if (isNubesError(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (/unexpected end|premature close|truncated/i.test(message))
    return layerRefused('truncated', `the tar stream ended early (${message})`, {});
  if (/invalid tar header|unknown format|checksum/i.test(message))
    return layerRefused('bad-entry', `not a valid tar stream (${message})`, {});
  return error;
}
