import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  NetworkHost,
  planEnter,
  planSandbox,
  type Sandbox,
  Sandboxes,
  sandboxSpecSchema,
  type Terminal,
} from '@nubes/netns';
import { describeWith } from '@nubes/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

// Everything host-global these tests create (sandboxes, cgroups, namespaces, directories) is named
// with this prefix and removed in afterEach/afterAll, also when a test fails.
const owner = `nbs-${process.pid}`;
const name = (suffix: string) => `${owner}-${suffix}`;

/** Everything the program printed on stdout, once it has exited. */
async function output(box: Sandbox): Promise<string> {
  let text = '';
  box.stdout.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  box.stderr.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  await box.exited;
  return text;
}

/** Waits until the terminal has printed something matching `pattern` since the call. */
function expectOutput(term: Terminal, pattern: RegExp, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      sub.dispose();
      reject(new Error(`timed out waiting for ${pattern}; got ${JSON.stringify(text)}`));
    }, timeoutMs);
    const sub = term.onData((data) => {
      text += data;
      if (pattern.test(text)) {
        clearTimeout(timer);
        sub.dispose();
        resolve(text);
      }
    });
  });
}

describe('sandbox planning (pure)', () => {
  it('plans unshare with new PID, mount, UTS, IPC and network namespaces', () => {
    const plan = planSandbox(
      sandboxSpecSchema.parse({
        name: 'o-box',
        argv: ['/bin/sh'],
        hostname: 'box',
        root: { chroot: '/srv/r' },
      }),
    );
    expect(plan.argv.slice(0, 11)).toEqual([
      'unshare',
      '--pid',
      '--fork',
      '--kill-child',
      '--mount',
      '--propagation',
      'private',
      '--uts',
      '--ipc',
      '--net',
      '--',
    ]);
    // After the script: its name, then hostname, mode, root, overlay options, cwd, lo, then the program.
    expect(plan.argv.slice(15)).toEqual(['box', 'chroot', '/srv/r', '', '/', '1', '/bin/sh']);
    expect(plan.root).toBe('/srv/r');
    expect(plan.env).toEqual({
      PATH: expect.stringContaining('/usr/bin'),
      HOME: '/',
      NUBES_SANDBOX_PATH: expect.stringContaining('/usr/bin'),
    });
  });

  it('joins a named network namespace instead of a new one, and mounts an overlay', () => {
    const plan = planSandbox(
      sandboxSpecSchema.parse({
        name: 'o-box',
        argv: ['sleep', '1'],
        network: { namespace: 'o-net' },
        root: { overlay: { lower: ['/l1', '/l2'], upper: '/u', work: '/w' } },
      }),
    );
    expect(plan.argv.slice(0, 4)).toEqual(['nsenter', '--net=/run/netns/o-net', '--', 'unshare']);
    expect(plan.argv).not.toContain('--net');
    expect(plan.argv.slice(17)).toEqual([
      'o-box',
      'overlay',
      '/l1',
      'lowerdir=/l1:/l2,upperdir=/u,workdir=/w',
      '/',
      '0',
      'sleep',
      '1',
    ]);
  });

  it('plans nsenter into a pid with a clean environment', () => {
    expect(planEnter({ pid: 42 }, ['sh'], { env: { A: '1' } })).toEqual([
      'env',
      '-i',
      expect.stringMatching(/^PATH=/),
      'HOME=/',
      'A=1',
      'nsenter',
      '--target=42',
      '--pid',
      '--mount',
      '--uts',
      '--ipc',
      '--net',
      '--root',
      '--wd',
      '--',
      'sh',
    ]);
    expect(planEnter({ namespace: 'o-n' }, ['ip', 'link'], { env: {}, cwd: '/tmp' }).slice(4)).toEqual([
      'nsenter',
      '--net=/run/netns/o-n',
      '--wd=/tmp',
      '--',
      'ip',
      'link',
    ]);
  });

  it('refuses bad input naming the field, before touching the host', async () => {
    const sandboxes = new Sandboxes({ owner: 'o' });
    const cases: [unknown, string][] = [
      [{ name: 'other-box', argv: ['sh'] }, 'spec.name'],
      [{ name: 'o-box', argv: [] }, 'spec.argv'],
      [{ name: 'o-box', argv: ['sh'], hostname: 'bad host' }, 'spec.hostname'],
      [{ name: 'o-box', argv: ['sh'], root: { chroot: 'relative' } }, 'spec.root'],
      [
        { name: 'o-box', argv: ['sh'], root: { overlay: { lower: ['/a'], upper: '/b,c', work: '/w' } } },
        'spec.root',
      ],
      [{ name: 'o-box', argv: ['sh'], resources: { memory: { max: 'lots' } } }, 'spec.resources.memory.max'],
      [{ name: 'o-box', argv: ['sh'], env: { 'A B': 'x' } }, 'spec.env'],
      [{ name: 'o-box', argv: ['sh'], root: { chroot: `/nonexistent-${owner}` } }, 'spec.root.chroot'],
    ];
    await expect(sandboxes.exec({ pid: -1 }, ['sh'])).rejects.toMatchObject({
      code: 'InvalidInput',
      details: { field: expect.stringContaining('target') },
    });
    await expect(sandboxes.exec({ namespace: 'o-n' }, [])).rejects.toMatchObject({
      code: 'InvalidInput',
      details: { field: 'argv' },
    });
    await expect(sandboxes.terminal({ namespace: 'o-n' }, ['sh'], { cols: 0 })).rejects.toMatchObject({
      code: 'InvalidInput',
      details: { field: expect.stringContaining('cols') },
    });
    for (const [spec, field] of cases) {
      await expect(sandboxes.start(spec as never), JSON.stringify(spec)).rejects.toMatchObject({
        code: 'InvalidInput',
        details: { field: expect.stringContaining(field) },
      });
    }
  });
});

describeWith(['root', 'busybox', 'ip'], 'sandboxes on the real kernel', () => {
  const sandboxes = new Sandboxes({ owner });
  const net = new NetworkHost({ owner });
  // Made in beforeAll, not while collecting, so a skipped suite leaves no directory behind.
  let scratch = '';
  let rootfs = '';

  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), `${owner}-`));
    rootfs = join(scratch, 'rootfs');
    // A tiny root: the static busybox with one relative link per applet (Debian's /bin is a link
    // to /usr/bin, so `busybox --install -s` would point the links at a path the root lacks).
    for (const dir of ['bin', 'proc', 'dev', 'etc', 'tmp']) mkdirSync(join(rootfs, dir), { recursive: true });
    copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
    execFileSync('chmod', ['755', join(rootfs, 'bin/busybox')]);
    for (const applet of execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n')) {
      if (applet && applet !== 'busybox') symlinkSync('busybox', join(rootfs, 'bin', applet));
    }
    writeFileSync(join(rootfs, 'etc/marker'), 'from the lower layer\n');
  });

  afterEach(async () => {
    await sandboxes.gc();
    await net.gc();
  });

  afterAll(async () => {
    await sandboxes.gc();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    // Nothing left: no group, no mount under the scratch directory, no namespace.
    expect(await sandboxes.list()).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(owner);
    expect((await net.listNamespaces()).filter((n) => n.startsWith(owner))).toEqual([]);
  });

  it('runs its program as PID 1 with its own hostname and no host interfaces, then cleans up', async () => {
    const box = await sandboxes.start({
      name: name('host'),
      hostname: 'nubes-box',
      argv: [
        '/bin/sh',
        '-c',
        'echo pid=$$; hostname; tail -n +3 /proc/net/dev | cut -d: -f1; ls /proc | grep -c "^[0-9]"',
      ],
    });
    const [text, exit] = await Promise.all([output(box), box.exited]);
    const lines = text
      .trim()
      .split('\n')
      .map((l) => l.trim());
    expect(lines[0]).toBe('pid=1');
    expect(lines[1]).toBe('nubes-box');
    expect(lines.slice(2, -1)).toEqual(['lo']);
    // Its /proc shows its own PID namespace only: the shell and ls (and grep).
    expect(Number(lines.at(-1))).toBeLessThanOrEqual(3);
    expect(exit).toEqual({ exitCode: 0, signal: null });
    expect(hostname()).not.toBe('nubes-box');
    expect(await sandboxes.list()).toEqual([]);
    expect(existsSync(`/proc/${box.pid}`)).toBe(false);
  });

  it('chroots into a busybox root', async () => {
    const box = await sandboxes.start({
      name: name('chroot'),
      root: { chroot: rootfs },
      cwd: '/etc',
      env: { PATH: '/bin', GREETING: 'hi' },
      argv: ['/bin/sh', '-c', 'echo $$; pwd; ls /; cat marker; ls /dev; env | sort | tr "\n" " "'],
    });
    const text = await output(box);
    const [pid, cwd, ...rest] = text.trim().split('\n');
    expect(pid).toBe('1');
    expect(cwd).toBe('/etc');
    expect(rest.slice(0, 5)).toEqual(['bin', 'dev', 'etc', 'proc', 'tmp']);
    expect(text).toContain('from the lower layer');
    expect(text).toContain('null');
    // Exactly the spec's environment (plus HOME and the shell's own PWD/SHLVL), nothing of the host's.
    expect(text.trim().split('\n').at(-1)?.trim().split(' ')).toEqual([
      'GREETING=hi',
      'HOME=/',
      'PATH=/bin',
      'PWD=/etc',
      'SHLVL=1',
    ]);
    expect((await box.exited).exitCode).toBe(0);
  });

  it('mounts an overlay root whose writes land in the upper directory only', async () => {
    const upper = join(scratch, 'upper');
    const work = join(scratch, 'work');
    mkdirSync(upper);
    mkdirSync(work);
    const box = await sandboxes.start({
      name: name('overlay'),
      root: { overlay: { lower: [rootfs], upper, work } },
      argv: [
        '/bin/sh',
        '-c',
        'echo written > /new-file; echo changed >> /etc/marker; rm /bin/vi; cat /etc/marker',
      ],
    });
    const text = await output(box);
    expect(text).toBe('from the lower layer\nchanged\n');
    expect(readFileSync(join(upper, 'new-file'), 'utf8')).toBe('written\n');
    expect(readFileSync(join(upper, 'etc/marker'), 'utf8')).toBe('from the lower layer\nchanged\n');
    // The lower layer is untouched, and the host never saw the overlay mount.
    expect(readFileSync(join(rootfs, 'etc/marker'), 'utf8')).toBe('from the lower layer\n');
    expect(existsSync(join(rootfs, 'new-file'))).toBe(false);
    expect(existsSync(join(rootfs, 'bin/vi'))).toBe(true);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(scratch);
  });

  it('applies its cgroup limits (read back from the kernel files) and stop removes everything', async () => {
    const n = name('limits');
    const box = await sandboxes.start({
      name: n,
      argv: ['/bin/sleep', '600'],
      resources: { cpu: { quotaUs: 20_000, periodUs: 100_000 }, memory: { max: '64m' }, pids: { max: 16 } },
    });
    const layout = await sandboxes.cgroups.layout();
    const file = (controller: string, f: string) =>
      layout.version === 2
        ? join(layout.root, 'nubes-sandbox', n, f)
        : join(layout.controllers[controller as 'cpu'] as string, 'nubes-sandbox', n, f);
    const read = (controller: string, f: string) => readFileSync(file(controller, f), 'utf8').trim();
    if (layout.version === 1) {
      expect(read('cpu', 'cpu.cfs_quota_us')).toBe('20000');
      expect(read('cpu', 'cpu.cfs_period_us')).toBe('100000');
      expect(read('memory', 'memory.limit_in_bytes')).toBe(String(64 * 1024 * 1024));
      expect(read('pids', 'pids.max')).toBe('16');
      expect(read('pids', 'cgroup.procs').split('\n').map(Number)).toContain(box.pid);
    } else {
      expect(read('cpu', 'cpu.max')).toBe('20000 100000');
      expect(read('memory', 'memory.max')).toBe(String(64 * 1024 * 1024));
      expect(read('pids', 'pids.max')).toBe('16');
      expect(read('pids', 'cgroup.procs').split('\n').map(Number)).toContain(box.pid);
    }
    expect(readFileSync(`/proc/${box.pid}/cgroup`, 'utf8')).toContain(`/nubes-sandbox/${n}`);
    // A captured exec runs inside, in the same cgroup, with a propagated exit code.
    const exec = await box.exec(['/bin/sh', '-c', 'echo $$ $(hostname); exit 3'], { okExitCodes: [3] });
    expect(exec.exitCode).toBe(3);
    expect(exec.stdout.trim()).toMatch(new RegExp(`^\\d+ ${n}$`));
    expect(await box.stop({ graceMs: 0 })).toEqual({ exitCode: null, signal: 'SIGKILL' });
    expect(existsSync(file('pids', ''))).toBe(false);
    expect(existsSync(`/proc/${box.pid}`)).toBe(false);
    expect(await sandboxes.list()).toEqual([]);
  });

  it('stop sends SIGTERM to PID 1 first, and a program that handles it exits on its own', async () => {
    const box = await sandboxes.start({
      name: name('term'),
      argv: ['/bin/sh', '-c', 'trap "exit 9" TERM; echo up; while :; do sleep 0.05; done'],
    });
    await new Promise((resolve) => box.stdout.once('data', resolve));
    expect(await box.stop({ graceMs: 5000 })).toEqual({ exitCode: 9, signal: null });
    expect(await box.stop()).toEqual({ exitCode: 9, signal: null });
  });

  it('joins a network namespace with the veth it is given', async () => {
    const [a, b] = [name('na'), name('nb')];
    await net.apply({
      namespaces: [a, b],
      links: [{ kind: 'veth', name: 'eth0', namespace: a, peer: { name: 'eth0', namespace: b } }],
      addresses: [
        { namespace: a, dev: 'eth0', cidr: '10.77.0.1/24' },
        { namespace: b, dev: 'eth0', cidr: '10.77.0.2/24' },
      ],
    });
    const box = await sandboxes.start({
      name: name('net'),
      network: { namespace: a },
      root: { chroot: rootfs },
      argv: [
        '/bin/sh',
        '-c',
        'tail -n +3 /proc/net/dev | cut -d: -f1; ping -c 1 -W 2 10.77.0.2 >/dev/null && echo reachable',
      ],
    });
    const text = await output(box);
    expect(
      text
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean)
        .sort(),
    ).toEqual(['eth0', 'lo', 'reachable']);
  });

  it('opens an interactive terminal in a sandbox: input, resize, exit code', async () => {
    const box = await sandboxes.start({
      name: name('pty'),
      root: { chroot: rootfs },
      argv: ['/bin/sleep', '600'],
    });
    const term = await box.terminal(['/bin/sh'], { cols: 80, rows: 24 });
    try {
      term.write('echo $((6*7))\r');
      await expectOutput(term, /^42\r?$/m);
      term.resize(100, 30);
      term.write('stty size; hostname\r');
      await expectOutput(term, new RegExp(`^30 100\\r?\\n${name('pty')}\\r?$`, 'm'));
      term.write('exit 7\r');
      expect(await term.exited).toMatchObject({ exitCode: 7 });
    } finally {
      term.kill();
      await box.stop({ graceMs: 0 });
    }
    expect(() => term.resize(0, 10)).toThrow(expect.objectContaining({ code: 'InvalidInput' }));
  });

  it('opens a terminal in a named network namespace', async () => {
    const ns = name('tty');
    await net.createNamespace(ns);
    const term = await sandboxes.terminal({ namespace: ns }, ['/bin/sh', '-c', 'ip -o link | wc -l; exit 5']);
    const printed = expectOutput(term, /^1\r?$/m);
    expect(await term.exited).toMatchObject({ exitCode: 5 });
    await printed;
  });

  it('gc kills a sandbox left running by a crashed owner', async () => {
    const box = await sandboxes.start({ name: name('stray'), argv: ['/bin/sleep', '600'] });
    expect(await new Sandboxes({ owner }).gc()).toEqual([name('stray')]);
    // Another instance killed it, so this handle only sees unshare's status (1 on util-linux 2.38).
    expect((await box.exited).exitCode).not.toBe(0);
    expect(existsSync(`/proc/${box.pid}`)).toBe(false);
    expect(await sandboxes.list()).toEqual([]);
  });

  it('reports a setup failure and leaves nothing behind', async () => {
    const lower = join(scratch, 'bad-lower');
    mkdirSync(lower);
    // upper inside lower is refused by overlayfs at mount time, inside the sandbox.
    await expect(
      sandboxes.start({
        name: name('broken'),
        root: { overlay: { lower: [lower], upper: lower, work: scratch } },
        argv: ['/bin/true'],
      }),
    ).rejects.toMatchObject({ code: 'CommandFailed', details: { stderr: expect.stringContaining('mount') } });
    expect(await sandboxes.list()).toEqual([]);
  });
});
