import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';

/** A mounted tree as `path -> "dir 755" | "file 644 <content>" | "link <target>"`, for exact comparisons. */
export function mountedTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const s = lstatSync(join(root, path));
      const mode = (s.mode & 0o7777).toString(8);
      if (s.isDirectory()) {
        out[`${path}/`] = `dir ${mode}`;
        walk(path);
      } else if (s.isSymbolicLink()) out[path] = `link ${readlinkSync(join(root, path))}`;
      else if (s.isFile()) out[path] = `file ${mode} ${readFileSync(join(root, path), 'utf8')}`;
      else out[path] = `other ${s.mode.toString(8)}`;
    }
  };
  walk('');
  return out;
}

/** Unmounts a test mount, lazily if it is busy; never throws (cleanup must go on). */
export async function unmountQuietly(target: string): Promise<void> {
  await runCommand('umount', [target]).catch(() => runCommand('umount', ['-l', target]).catch(() => {}));
}
