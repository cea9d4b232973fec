import type { ParsedSandboxSpec } from './spec.js';

/**
 * Pure planning of sandbox commands: the argv that starts one and the argv that enters one, as
 * data. Nothing here touches the host, so the exact commands are unit-tested without root.
 */

/** The line the setup script writes on the control pipe once the sandbox is ready. */
export const READY_MARKER = 'nubes-sandbox-ready';

/** The PATH a sandbox and an exec get unless the caller sets one (the host's PATH is not leaked in). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Runs as PID 1 of the new namespaces, still on the host's filesystem, so it can use the host's
 * `ip` and `mount` before the root changes. Every value arrives as a positional parameter.
 *
 * - Errors of the setup go to fd 3 (the control pipe) so the caller can report them; on success
 *   the marker and the script's host pid go there (the host /proc is still mounted, so
 *   /proc/self/stat read by the shell itself names its pid in the host's PID namespace).
 * - The new /proc is mounted after that read: inside the new PID namespace the process is PID 1.
 * - With a root, `unshare --root --wd` (no namespace flags: it only chroots and execs) replaces
 *   `chroot`, which cannot set a working directory inside the new root.
 */
export const SETUP_SCRIPT = [
  'exec 4>&2 2>&3',
  'set -e',
  // Host tools are found on the default PATH; the program gets its own PATH back at the end.
  'program_path=$NUBES_SANDBOX_PATH',
  'unset NUBES_SANDBOX_PATH',
  'unshare_bin=$(command -v unshare)',
  'hostname=$1 mode=$2 root=$3 overlay=$4 cwd=$5 lo=$6',
  'shift 6',
  'read -r hostpid _ < /proc/self/stat',
  'printf "%s" "$hostname" > /proc/sys/kernel/hostname',
  'if [ "$lo" = 1 ]; then ip link set dev lo up; fi',
  'if [ "$mode" = overlay ]; then mount -t overlay nubes-sandbox -o "$overlay" "$root"; fi',
  'if [ "$mode" = host ]; then mount -t proc proc /proc; else',
  '  if [ -d "$root/proc" ]; then mount -t proc proc "$root/proc"; fi',
  '  if [ -d "$root/dev" ]; then',
  '    mount -t tmpfs -o mode=755,nosuid,size=64k nubes-dev "$root/dev"',
  '    mknod -m 666 "$root/dev/null" c 1 3',
  '    mknod -m 666 "$root/dev/zero" c 1 5',
  '    mknod -m 666 "$root/dev/full" c 1 7',
  '    mknod -m 666 "$root/dev/random" c 1 8',
  '    mknod -m 666 "$root/dev/urandom" c 1 9',
  '    mknod -m 666 "$root/dev/tty" c 5 0',
  '  fi',
  'fi',
  `printf "${READY_MARKER} %s\\n" "$hostpid" >&3`,
  'exec 2>&4 3>&- 4>&-',
  'export PATH="$program_path"',
  'if [ "$mode" = host ]; then cd "$cwd"; exec "$@"; fi',
  'exec "$unshare_bin" --root="$root" --wd="$cwd" -- "$@"',
].join('\n');

/** The mount options of an overlay root, in overlayfs syntax. */
export function overlayOptions(overlay: { lower: string[]; upper: string; work: string }): string {
  return `lowerdir=${overlay.lower.join(':')},upperdir=${overlay.upper},workdir=${overlay.work}`;
}

/** What {@link planSandbox} returns: the command after the cgroup launcher, and the environment. */
export interface SandboxPlan {
  /** `[nsenter --net=... --] unshare ... -- /bin/sh -c SETUP_SCRIPT ...`. */
  argv: string[];
  /** The environment of the launcher; the program gets it with `NUBES_SANDBOX_PATH` as its PATH. */
  env: Record<string, string>;
  /** Where the sandbox's root is (`/` for the host's root). */
  root: string;
}

/** Plans the command that starts a sandbox (PID, mount, UTS, IPC and, unless joined, network namespaces). */
export function planSandbox(spec: ParsedSandboxSpec): SandboxPlan {
  let mode: 'host' | 'chroot' | 'overlay' = 'host';
  let root = '/';
  let overlay = '';
  if (spec.root && 'chroot' in spec.root) {
    mode = 'chroot';
    root = spec.root.chroot;
  } else if (spec.root && 'overlay' in spec.root) {
    mode = 'overlay';
    const o = spec.root.overlay;
    // Mounting over the first lower directory needs no extra directory and is safe: overlayfs
    // resolves its layers before the mount is attached, and the mount exists only in the
    // sandbox's private mount namespace.
    root = o.target ?? (o.lower[0] as string);
    overlay = overlayOptions(o);
  }
  const joinNetwork = spec.network ? ['nsenter', `--net=/run/netns/${spec.network.namespace}`, '--'] : [];
  const unshare = [
    'unshare',
    '--pid',
    '--fork',
    // If the unshare process dies (its parent killed it, say) the sandbox dies with it.
    '--kill-child',
    '--mount',
    '--propagation',
    'private',
    '--uts',
    '--ipc',
    ...(spec.network ? [] : ['--net']),
    '--',
  ];
  const setup = [
    '/bin/sh',
    '-c',
    SETUP_SCRIPT,
    'nubes-sandbox',
    spec.hostname ?? spec.name,
    mode,
    root,
    overlay,
    spec.cwd,
    spec.loopbackUp && !spec.network ? '1' : '0',
  ];
  return {
    argv: [...joinNetwork, ...unshare, ...setup, ...spec.argv],
    // The launcher (sh, nsenter, unshare) runs on the host and needs the host's tools, whatever
    // PATH the program wants inside; the setup script swaps the program's PATH in before exec.
    env: { HOME: '/', ...spec.env, PATH: DEFAULT_PATH, NUBES_SANDBOX_PATH: spec.env.PATH ?? DEFAULT_PATH },
    root,
  };
}

/** Where an exec goes: all namespaces (and root) of a process, or one named network namespace. */
export type EnterTarget = { pid: number } | { namespace: string };

/**
 * Plans `env -i ... nsenter ...` for an exec. `env -i` runs on the host before nsenter, so the
 * program inside sees exactly `env` and nothing of the caller's environment.
 */
export function planEnter(
  target: EnterTarget,
  argv: readonly string[],
  options: { env: Record<string, string>; cwd?: string | undefined },
): string[] {
  const env = Object.entries({ PATH: DEFAULT_PATH, HOME: '/', ...options.env }).map(([k, v]) => `${k}=${v}`);
  const enter =
    'pid' in target
      ? [
          'nsenter',
          `--target=${target.pid}`,
          '--pid',
          '--mount',
          '--uts',
          '--ipc',
          '--net',
          // Without a value these take the target's root and working directory: a chroot sandbox's
          // exec lands in the same root, like `kubectl exec`.
          '--root',
          options.cwd ? `--wd=${options.cwd}` : '--wd',
        ]
      : ['nsenter', `--net=/run/netns/${target.namespace}`, ...(options.cwd ? [`--wd=${options.cwd}`] : [])];
  return ['env', '-i', ...env, ...enter, '--', ...argv];
}
