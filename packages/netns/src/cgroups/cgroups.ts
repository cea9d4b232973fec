import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { invalidInput, NubesError, notFound, parseInput } from '@nubes/core';
import { z } from 'zod';
import { cgroupNameSchema, ownerSchema } from '../names.js';
import { type CgroupLayout, parseCgroupLayout } from './layout.js';
import { type CgroupWrite, renderV1, renderV2, type V1Controller, v2Controllers } from './render.js';
import { type ResourceSpec, resourceSpecSchema } from './spec.js';
import { type CgroupStats, type StatFiles, statsFromV1, statsFromV2 } from './stats.js';

/** Options of {@link Cgroups}. */
export interface CgroupsOptions {
  /** Owner tag: group names must start with `<owner>-`, and {@link Cgroups.gc} removes those. Default `nubes`. */
  owner?: string;
  /** The parent group every group is created under (default `nubes`). */
  parent?: string;
  /** The layout to drive; detected from /proc/self/mounts when omitted (tests pass a fake root). */
  layout?: CgroupLayout;
}

const V1_USED: V1Controller[] = ['cpu', 'cpuacct', 'cpuset', 'memory', 'pids', 'freezer', 'blkio'];
const pidSchema = z.number().int().positive();
const parentSchema = z
  .string()
  .regex(
    /^[A-Za-z0-9_][A-Za-z0-9_.-]*(\/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$/,
    'must be a relative path of safe names',
  );

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Detects the cgroup layout of this machine, or throws `Unavailable` when no cgroup fs is mounted. */
export async function detectCgroupLayout(): Promise<CgroupLayout> {
  const layout = parseCgroupLayout(await readFile('/proc/self/mounts', 'utf8'));
  if (!layout) throw new NubesError('Unavailable', 'no cgroup filesystem is mounted');
  return layout;
}

/**
 * Control groups under one parent, on cgroup v1 or v2 with one resource spec. Operations are
 * writes to the kernel's cgroup files (not commands), so they need root or a delegated subtree.
 */
export class Cgroups {
  /** The owner tag. */
  readonly owner: string;
  /** The parent group. */
  readonly parent: string;
  private layoutPromise: Promise<CgroupLayout> | undefined;

  constructor(options: CgroupsOptions = {}) {
    this.owner = parseInput(ownerSchema, options.owner ?? 'nubes', 'owner');
    this.parent = parseInput(parentSchema, options.parent ?? 'nubes', 'parent');
    if (options.layout) this.layoutPromise = Promise.resolve(options.layout);
  }

  /** The layout in use (detected once). */
  layout(): Promise<CgroupLayout> {
    this.layoutPromise ??= detectCgroupLayout();
    return this.layoutPromise;
  }

  private checkName(name: string, field = 'name'): string {
    const n = parseInput(cgroupNameSchema, name, field);
    if (!n.startsWith(`${this.owner}-`))
      throw invalidInput(field, `must start with the owner prefix "${this.owner}-"`);
    return n;
  }

  /** Every directory of a group: one on v2, one per mounted controller hierarchy on v1 (deduplicated). */
  async paths(name: string): Promise<{ controller?: V1Controller; path: string }[]> {
    const n = this.checkName(name);
    const layout = await this.layout();
    if (layout.version === 2) return [{ path: join(layout.root, this.parent, n) }];
    const seen = new Set<string>();
    const out: { controller: V1Controller; path: string }[] = [];
    for (const c of V1_USED) {
      const mount = layout.controllers[c];
      if (!mount || seen.has(mount)) continue;
      seen.add(mount);
      out.push({ controller: c, path: join(mount, this.parent, n) });
    }
    return out;
  }

  private async pathFor(name: string, controller?: V1Controller): Promise<string> {
    const paths = await this.paths(name);
    const layout = await this.layout();
    if (layout.version === 2) return (paths[0] as { path: string }).path;
    const mount = controller ? layout.controllers[controller] : undefined;
    const found = paths.find((p) => mount && p.path.startsWith(`${mount}/`));
    if (!found) throw new NubesError('Unsupported', `the ${controller} controller is not mounted`);
    return found.path;
  }

  /**
   * Creates a group and applies a spec. Idempotent: an existing group gets the spec applied.
   * The spec is validated first, so bad input changes nothing; a failed write removes a group
   * this call created.
   */
  async create(name: string, spec: ResourceSpec = {}): Promise<void> {
    const n = this.checkName(name);
    const parsed = parseInput(resourceSpecSchema, spec, 'spec');
    const layout = await this.layout();
    const paths = await this.paths(n);
    const created = !existsSync((paths[0] as { path: string }).path);
    try {
      if (layout.version === 2) {
        await this.enableV2Controllers(layout.root, v2Controllers(parsed));
        await mkdir(join(layout.root, this.parent, n), { recursive: true });
      } else {
        for (const p of paths) {
          await mkdir(p.path, { recursive: true });
          // A new v1 cpuset group has no CPUs or memory nodes and refuses tasks until it inherits some.
          if (p.controller === 'cpuset') await this.inheritCpuset(p.path);
        }
      }
      await this.writeAll(n, layout.version === 2 ? renderV2(parsed) : renderV1(parsed));
    } catch (error) {
      if (created) await this.delete(n).catch(() => undefined);
      throw error;
    }
  }

  /** Applies a spec to an existing group (`NotFound` if it does not exist). */
  async update(name: string, spec: ResourceSpec): Promise<void> {
    const n = this.checkName(name);
    const parsed = parseInput(resourceSpecSchema, spec, 'spec');
    if (!(await this.exists(n))) throw notFound('cgroup', n);
    const layout = await this.layout();
    if (layout.version === 2) await this.enableV2Controllers(layout.root, v2Controllers(parsed));
    await this.writeAll(n, layout.version === 2 ? renderV2(parsed) : renderV1(parsed));
  }

  /** True when the group exists. */
  async exists(name: string): Promise<boolean> {
    const paths = await this.paths(name);
    return paths.length > 0 && existsSync((paths[0] as { path: string }).path);
  }

  private async enableV2Controllers(root: string, needed: string[]): Promise<void> {
    if (needed.length === 0) return;
    const available = (await readOptional(join(root, 'cgroup.controllers')))?.trim().split(/\s+/) ?? [];
    const missing = needed.filter((c) => !available.includes(c));
    if (missing.length) {
      throw new NubesError('Unsupported', `cgroup v2 controllers not available: ${missing.join(', ')}`, {
        details: { missing },
      });
    }
    let dir = root;
    for (const part of this.parent.split('/')) {
      await writeFile(join(dir, 'cgroup.subtree_control'), needed.map((c) => `+${c}`).join(' '));
      dir = join(dir, part);
      await mkdir(dir, { recursive: true });
    }
    await writeFile(join(dir, 'cgroup.subtree_control'), needed.map((c) => `+${c}`).join(' '));
  }

  private async inheritCpuset(path: string): Promise<void> {
    // Top-down: each new level copies from its parent, which must already be filled in.
    const parts = path.split('/');
    for (let depth = 2; depth < parts.length; depth++) {
      const dir = parts.slice(0, depth + 1).join('/');
      for (const file of ['cpuset.cpus', 'cpuset.mems']) {
        const own = (await readOptional(join(dir, file)))?.trim();
        if (own !== '') continue;
        const parent = (await readOptional(join(parts.slice(0, depth).join('/'), file)))?.trim();
        if (parent) await writeFile(join(dir, file), parent);
      }
    }
  }

  private async writeAll(name: string, writes: CgroupWrite[]): Promise<void> {
    for (const w of writes) {
      const dir = await this.pathFor(name, w.controller);
      const candidates = [w.file, ...(w.alternatives ?? [])];
      const file = candidates.find((f) => existsSync(join(dir, f))) ?? w.file;
      try {
        await writeFile(join(dir, file), w.value);
      } catch (cause) {
        throw new NubesError('CommandFailed', `writing ${w.value} to ${file} of cgroup ${name} failed`, {
          cause,
          details: { file: join(dir, file), value: w.value, errno: (cause as NodeJS.ErrnoException).code },
        });
      }
    }
  }

  /** Moves a process (all its threads) into the group. */
  async addProcess(name: string, pid: number): Promise<void> {
    const p = parseInput(pidSchema, pid, 'pid');
    for (const { path } of await this.paths(name)) {
      try {
        await writeFile(join(path, 'cgroup.procs'), String(p));
      } catch (cause) {
        const code = (cause as NodeJS.ErrnoException).code;
        if (code === 'ESRCH') throw notFound('process', String(p));
        if (code === 'ENOENT') throw notFound('cgroup', name);
        throw new NubesError('CommandFailed', `adding ${p} to cgroup ${name} failed`, { cause });
      }
    }
  }

  /** Process ids in the group. */
  async processes(name: string): Promise<number[]> {
    const paths = await this.paths(name);
    const all = new Set<number>();
    for (const { path } of paths) {
      const text = await readOptional(join(path, 'cgroup.procs'));
      if (text === undefined) throw notFound('cgroup', name);
      for (const line of text.split('\n')) if (line.trim()) all.add(Number(line));
    }
    return [...all].sort((a, b) => a - b);
  }

  /**
   * The argv that runs `argv` already inside the group: a tiny `sh` writes its own pid into the
   * group's cgroup.procs files and then execs the program, so not one instruction runs outside the
   * limits. The program and its arguments are positional parameters, never shell text. Use it to
   * start a program with your own spawn (a pty, other stdio); {@link Cgroups.spawn} uses it.
   */
  async launchArgv(name: string, argv: readonly string[]): Promise<string[]> {
    const args = parseInput(z.array(z.string()).min(1, 'must name a program'), [...argv], 'argv');
    const files = (await this.paths(name)).map((p) => join(p.path, 'cgroup.procs'));
    const script =
      'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 126; shift; n=$((n-1)); done; exec "$@"';
    return ['/bin/sh', '-c', script, 'sh', String(files.length), ...files, ...args];
  }

  /** Starts a program already inside the group (see {@link Cgroups.launchArgv}); stdin is ignored. */
  async spawn(
    name: string,
    argv: readonly string[],
    options: { env?: Record<string, string> } = {},
  ): Promise<ChildProcess> {
    const [program, ...args] = (await this.launchArgv(name, argv)) as [string, ...string[]];
    return spawn(program, args, {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** Freezes every process in the group and waits until the kernel reports it frozen. */
  async freeze(name: string): Promise<void> {
    await this.setFrozen(name, true);
  }

  /** Thaws a frozen group. */
  async thaw(name: string): Promise<void> {
    await this.setFrozen(name, false);
  }

  private async setFrozen(name: string, frozen: boolean): Promise<void> {
    const layout = await this.layout();
    if (layout.version === 2) {
      const dir = await this.pathFor(name);
      await writeFile(join(dir, 'cgroup.freeze'), frozen ? '1' : '0');
      await this.waitFor(
        async () =>
          parseKeyedLine(await readOptional(join(dir, 'cgroup.events')), 'frozen') === (frozen ? 1 : 0),
      );
      return;
    }
    const dir = await this.pathFor(name, 'freezer');
    await writeFile(join(dir, 'freezer.state'), frozen ? 'FROZEN' : 'THAWED');
    await this.waitFor(
      async () => (await readOptional(join(dir, 'freezer.state')))?.trim() === (frozen ? 'FROZEN' : 'THAWED'),
    );
  }

  private async waitFor(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline)
        throw new NubesError('Timeout', 'the cgroup did not reach the expected state in time');
      await sleep(10);
    }
  }

  /** Reads CPU, memory (current, peak, OOM events) and pids statistics. */
  async stats(name: string): Promise<CgroupStats> {
    const layout = await this.layout();
    if (!(await this.exists(name))) throw notFound('cgroup', name);
    const read = async (controller: V1Controller | undefined, files: string[]): Promise<StatFiles> => {
      let dir: string;
      try {
        dir = await this.pathFor(name, controller);
      } catch {
        return {};
      }
      return Object.fromEntries(
        await Promise.all(files.map(async (f) => [f, await readOptional(join(dir, f))])),
      );
    };
    if (layout.version === 2) {
      return statsFromV2(
        await read(undefined, [
          'cpu.stat',
          'memory.current',
          'memory.peak',
          'memory.events',
          'pids.current',
          'pids.peak',
          'pids.events',
        ]),
      );
    }
    const parts = await Promise.all([
      read('cpuacct', ['cpuacct.usage', 'cpuacct.stat']),
      read('cpu', ['cpu.stat']),
      read('memory', ['memory.usage_in_bytes', 'memory.max_usage_in_bytes', 'memory.oom_control']),
      read('pids', ['pids.current', 'pids.peak', 'pids.events']),
    ]);
    return statsFromV1(Object.assign({}, ...parts));
  }

  /**
   * Kills every process in the group and removes it; succeeds if it does not exist. On v2 this
   * is cgroup.kill; on v1 the group is frozen first so nothing can fork while it is being emptied.
   */
  async delete(name: string): Promise<void> {
    const paths = await this.paths(name);
    const key = (paths[0] as { path: string }).path;
    // Two deletes of one group must not interleave: one's freeze would undo the other's thaw.
    const running = deletesInFlight.get(key);
    if (running) return running;
    const deletion = this.deleteNow(name, paths).finally(() => deletesInFlight.delete(key));
    deletesInFlight.set(key, deletion);
    return deletion;
  }

  private async deleteNow(name: string, paths: { path: string }[]): Promise<void> {
    if (!paths.some((p) => existsSync(p.path))) return;
    // The common case, an empty group, needs no freeze and kill round: rmdir is refused (EBUSY)
    // if a process joined meanwhile, and then the full path below runs.
    if ((await this.processes(name).catch(() => [1])).length === 0 && (await removeAll(paths))) return;
    const layout = await this.layout();
    const dir = (paths[0] as { path: string }).path;
    if (layout.version === 2 && existsSync(join(dir, 'cgroup.kill'))) {
      await writeFile(join(dir, 'cgroup.kill'), '1');
    } else {
      const freezer = layout.version === 1 && layout.controllers.freezer;
      if (freezer) await this.freeze(name).catch(() => undefined);
      for (const pid of await this.processes(name).catch(() => [] as number[])) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      if (freezer) await this.thaw(name).catch(() => undefined);
    }
    await this.waitFor(async () => (await this.processes(name).catch(() => [])).length === 0);
    for (const p of paths) {
      await rmdirRetry(p.path);
    }
  }

  /** Names of this owner's groups. */
  async list(): Promise<string[]> {
    const layout = await this.layout();
    const base =
      layout.version === 2
        ? join(layout.root, this.parent)
        : join(
            layout.controllers.pids ?? layout.controllers.memory ?? layout.controllers.cpu ?? '',
            this.parent,
          );
    const entries = await readdir(base, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory() && e.name.startsWith(`${this.owner}-`)).map((e) => e.name);
  }

  /** Deletes every group of this owner (with their processes); returns their names. */
  async gc(): Promise<string[]> {
    const names = await this.list();
    for (const n of names) await this.delete(n);
    // The shared parent goes too once it is empty; another owner's groups keep it (ENOTEMPTY).
    const layout = await this.layout();
    const mounts = layout.version === 2 ? [layout.root] : [...new Set(Object.values(layout.controllers))];
    for (const mount of mounts) await rmdir(join(mount, this.parent)).catch(() => undefined);
    return names;
  }
}

/** Deletes under way in this process, by group directory (shared by every {@link Cgroups} instance). */
const deletesInFlight = new Map<string, Promise<void>>();

function parseKeyedLine(text: string | undefined, key: string): number | undefined {
  const line = text?.split('\n').find((l) => l.startsWith(`${key} `));
  return line ? Number(line.split(' ')[1]) : undefined;
}

/** Removes every directory; false (nothing thrown) when one is still busy. */
async function removeAll(paths: { path: string }[]): Promise<boolean> {
  for (const p of paths) {
    try {
      await rmdir(p.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return false;
    }
  }
  return true;
}

async function rmdirRetry(path: string): Promise<void> {
  // The kernel may briefly keep a dying task's reference after cgroup.procs reads empty: EBUSY.
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(path);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || attempt > 100)
        throw new NubesError('CommandFailed', `removing cgroup ${path} failed`, { cause: error });
      await sleep(20);
    }
  }
}
