import { posix } from 'node:path';

/** A mount as data (containerd's `Mount`): what to mount, performed by the caller. */
export interface Mount {
  /** `overlay` or `bind`. */
  type: 'overlay' | 'bind';
  /** `overlay` for overlayfs; the directory for a bind mount. */
  source: string;
  /** mount(8) options: `lowerdir=...`, `upperdir=...`, `workdir=...`, `ro`, `rbind`... */
  options: string[];
}

/** The page the kernel copies mount options into: longer option strings are refused. */
export const MOUNT_OPTIONS_LIMIT = 4096;

/**
 * Makes an overlay mount's options fit in a page by rewriting every directory option relative to the
 * common parent of all of them; the mount must then run with that directory as its working directory
 * (`cwd`), as containerd does for deep chains. Options that already fit come back unchanged. Pure.
 */
export function compactOverlayOptions(
  options: readonly string[],
  limit = MOUNT_OPTIONS_LIMIT,
): { options: string[]; cwd?: string } {
  if (options.join(',').length < limit) return { options: [...options] };
  const dirs: string[] = [];
  for (const o of options) {
    const [k, v] = splitOption(o);
    if (k === 'lowerdir') dirs.push(...(v as string).split(':'));
    else if (k === 'upperdir' || k === 'workdir') dirs.push(v as string);
  }
  const cwd = commonDir(dirs);
  const rel = (d: string) => posix.relative(cwd, d) || '.';
  const compact = options.map((o) => {
    const [k, v] = splitOption(o);
    if (k === 'lowerdir') return `lowerdir=${(v as string).split(':').map(rel).join(':')}`;
    if (k === 'upperdir' || k === 'workdir') return `${k}=${rel(v as string)}`;
    return o;
  });
  return { options: compact, cwd };
}

function splitOption(option: string): [string, string | undefined] {
  const at = option.indexOf('=');
  return at < 0 ? [option, undefined] : [option.slice(0, at), option.slice(at + 1)];
}

/** The deepest directory containing every one of `paths` (absolute). */
export function commonDir(paths: readonly string[]): string {
  if (paths.length === 0) return '/';
  const split = paths.map((p) => posix.normalize(p).split('/').filter(Boolean));
  const first = split[0] as string[];
  let n = 0;
  while (n < first.length && split.every((parts) => parts[n] === first[n])) n++;
  return `/${first.slice(0, n).join('/')}`;
}
