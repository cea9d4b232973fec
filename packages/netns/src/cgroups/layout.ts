import type { V1Controller } from './render.js';

/** Where the cgroup hierarchies are mounted and which version the library drives. */
export type CgroupLayout =
  | { version: 2; root: string }
  | { version: 1; controllers: Partial<Record<V1Controller, string>>; unified?: string };

const V1: V1Controller[] = ['cpu', 'cpuacct', 'cpuset', 'memory', 'pids', 'freezer', 'blkio'];

/**
 * Reads the layout from the text of /proc/self/mounts. Pure. A machine with any v1 resource
 * controller mounted is driven as v1 (a "hybrid" cgroup2 mount next to it has no controllers);
 * otherwise the cgroup2 mount is used.
 */
export function parseCgroupLayout(mounts: string): CgroupLayout | undefined {
  const controllers: Partial<Record<V1Controller, string>> = {};
  let unified: string | undefined;
  for (const line of mounts.split('\n')) {
    const [, path, type, options] = line.split(' ');
    if (!path || !options) continue;
    const decoded = path.replace(/\\040/g, ' ');
    if (type === 'cgroup2') unified ??= decoded;
    if (type !== 'cgroup') continue;
    for (const option of options.split(',')) {
      if ((V1 as string[]).includes(option)) controllers[option as V1Controller] ??= decoded;
    }
  }
  if (controllers.cpu || controllers.memory || controllers.pids) {
    return { version: 1, controllers, ...(unified ? { unified } : {}) };
  }
  return unified ? { version: 2, root: unified } : undefined;
}
