import { isNubesError } from '@nubes/core';
import { describeWith } from '@nubes/testing';
import { afterAll, afterEach, expect, it } from 'vitest';
import { ns, sleep, testHost, testOwner, waitForOutput } from './helpers.js';

describeWith(['root', 'ip'], 'NetworkHost on the real kernel', () => {
  const host = testHost();
  const a = ns('a');
  const b = ns('b');
  const r = ns('r');

  afterEach(async () => {
    await host.gc();
  });
  afterAll(async () => {
    const left = (await host.listNamespaces()).filter((n) => n.startsWith(`${testOwner}-`));
    expect(left).toEqual([]);
  });

  const ping = (from: string, to: string) => host.exec(from, ['ping', '-c', '1', '-W', '2', to]);

  it('joins two namespaces with a veth (IPv4 and IPv6) and carries TCP between them; apply is idempotent', async () => {
    const topology = {
      namespaces: [a, b],
      links: [
        {
          kind: 'veth' as const,
          name: 'va',
          namespace: a,
          mtu: 1400,
          peer: { name: 'vb', namespace: b, mtu: 1400 },
        },
      ],
      addresses: [
        { namespace: a, dev: 'va', cidr: '10.77.0.1/24' },
        { namespace: a, dev: 'va', cidr: 'fd77::1/64' },
        { namespace: b, dev: 'vb', cidr: '10.77.0.2/24' },
        { namespace: b, dev: 'vb', cidr: 'fd77::2/64' },
      ],
    };
    const first = await host.apply(topology);
    expect(first.createdNamespaces).toEqual([a, b]);
    expect(first.commands).toBe(3);
    await ping(a, '10.77.0.2');
    await ping(b, 'fd77::1');

    const server = host.spawn(b, ['socat', 'TCP-LISTEN:7000,reuseaddr', 'EXEC:cat']);
    try {
      await sleep(200);
      const echoed = await host.exec(a, ['socat', '-t', '2', '-', 'TCP:10.77.0.2:7000'], {
        input: 'hello nubes\n',
      });
      expect(echoed.stdout).toBe('hello nubes\n');
    } finally {
      server.kill();
    }

    const again = await host.apply(topology);
    expect(again).toEqual({ createdNamespaces: [], createdLinks: [], commands: 0 });
    const va = await host.link('va', a);
    expect(va).toMatchObject({ kind: 'veth', mtu: 1400, up: true, owner: testOwner });
    expect((await host.addresses(b)).map((x) => x.cidr)).toEqual(
      expect.arrayContaining(['10.77.0.2/24', 'fd77::2/64']),
    );

    await expect(
      host.apply({ ...topology, links: [{ ...topology.links[0]!, mtu: 9000 }] }),
    ).rejects.toMatchObject({ code: 'Conflict' });
  });

  it('bridges three namespaces with STP off, and reads ports back', async () => {
    const hub = ns('hub');
    await host.apply({
      namespaces: [hub, a, b],
      links: [
        { kind: 'bridge', name: 'br0', namespace: hub },
        { kind: 'veth', name: 'p-a', namespace: hub, master: 'br0', peer: { name: 'eth0', namespace: a } },
        { kind: 'veth', name: 'p-b', namespace: hub, master: 'br0', peer: { name: 'eth0', namespace: b } },
      ],
      addresses: [
        { namespace: a, dev: 'eth0', cidr: '10.78.0.1/24' },
        { namespace: b, dev: 'eth0', cidr: '10.78.0.2/24' },
      ],
    });
    const links = await host.links(hub);
    expect(links.find((l) => l.name === 'br0')).toMatchObject({ kind: 'bridge', bridge: { stp: false } });
    expect(
      links
        .filter((l) => l.master === 'br0')
        .map((l) => l.name)
        .sort(),
    ).toEqual(['p-a', 'p-b']);
    await ping(a, '10.78.0.2');
    await host.setLink({ namespace: hub, name: 'p-b', up: false });
    await expect(ping(a, '10.78.0.2')).rejects.toMatchObject({ code: 'CommandFailed' });
  });

  it('routes through a router namespace with ip_forward, a default route and a route in another table', async () => {
    await host.apply({
      namespaces: [a, r, b],
      links: [
        { kind: 'veth', name: 'ra', namespace: r, peer: { name: 'eth0', namespace: a } },
        { kind: 'veth', name: 'rb', namespace: r, peer: { name: 'eth0', namespace: b } },
      ],
      addresses: [
        { namespace: a, dev: 'eth0', cidr: '10.79.1.2/24' },
        { namespace: r, dev: 'ra', cidr: '10.79.1.1/24' },
        { namespace: r, dev: 'rb', cidr: '10.79.2.1/24' },
        { namespace: b, dev: 'eth0', cidr: '10.79.2.2/24' },
      ],
      routes: [
        { namespace: a, to: 'default', via: '10.79.1.1' },
        { namespace: b, to: 'default', via: '10.79.2.1' },
        { namespace: a, to: '10.99.0.0/16', via: '10.79.1.1', table: 100 },
      ],
    });
    await expect(ping(a, '10.79.2.2')).rejects.toMatchObject({ code: 'CommandFailed' });
    await host.setSysctls(r, { ipForward: true, rpFilter: 2 });
    expect(await host.sysctls(r)).toMatchObject({ ipForward: true, rpFilter: 2, proxyArp: false });
    await ping(a, '10.79.2.2');
    const routes = await host.routes(a);
    expect(routes).toContainEqual(
      expect.objectContaining({ to: 'default', via: '10.79.1.1', table: 'main', family: 4 }),
    );
    expect(routes).toContainEqual(expect.objectContaining({ to: '10.99.0.0/16', table: '100' }));
    await host.deleteRoute({ namespace: a, to: 'default', via: '10.79.1.1' });
    await host.deleteRoute({ namespace: a, to: 'default', via: '10.79.1.1' });
    await expect(ping(a, '10.79.2.2')).rejects.toMatchObject({ code: 'CommandFailed' });
  });

  it('carries traffic over VXLAN with learning off and static FDB entries, plus static neighbors', async () => {
    await host.apply({
      namespaces: [a, b],
      links: [
        { kind: 'veth', name: 'u0', namespace: a, peer: { name: 'u0', namespace: b } },
        {
          kind: 'vxlan',
          name: 'vx0',
          namespace: a,
          vni: 4242,
          local: '10.80.0.1',
          dev: 'u0',
          remotes: ['10.80.0.2'],
        },
        {
          kind: 'vxlan',
          name: 'vx0',
          namespace: b,
          vni: 4242,
          local: '10.80.0.2',
          dev: 'u0',
          remotes: ['10.80.0.1'],
        },
      ],
      addresses: [
        { namespace: a, dev: 'u0', cidr: '10.80.0.1/24' },
        { namespace: b, dev: 'u0', cidr: '10.80.0.2/24' },
        { namespace: a, dev: 'vx0', cidr: '10.81.0.1/24' },
        { namespace: b, dev: 'vx0', cidr: '10.81.0.2/24' },
      ],
      neighbors: [{ namespace: a, dev: 'u0', address: '10.80.0.9', lladdr: '02:00:00:00:00:09' }],
    });
    expect(await host.link('vx0', a)).toMatchObject({
      kind: 'vxlan',
      vxlan: { vni: 4242, learning: false, port: 4789 },
    });
    const fdb = await host.iproute.bridge(['fdb', 'show', 'dev', 'vx0'], { namespace: a });
    expect(fdb.stdout).toMatch(/00:00:00:00:00:00 dst 10\.80\.0\.2/);
    await ping(a, '10.81.0.2');
    expect(await host.neighbors(a)).toContainEqual(
      expect.objectContaining({ address: '10.80.0.9', lladdr: '02:00:00:00:00:09', state: ['PERMANENT'] }),
    );
  });

  it('creates tap (with an owner) and ifb devices', async () => {
    await host.apply({
      namespaces: [a],
      links: [
        {
          kind: 'tap',
          name: 'tap0',
          namespace: a,
          user: 0,
          up: false,
          mac: '02:00:00:00:00:aa',
          alias: 'vm-1',
        },
        { kind: 'ifb', name: 'ifb0', namespace: a },
      ],
    });
    const tap = await host.link('tap0', a);
    expect(tap).toMatchObject({
      kind: 'tun',
      tap: { user: 'root' },
      mac: '02:00:00:00:00:aa',
      up: false,
      alias: 'vm-1',
    });
    expect(await host.link('ifb0', a)).toMatchObject({ kind: 'ifb', up: true });
  });

  it('refuses bad input before touching the host', async () => {
    const before = await host.listNamespaces();
    const bad = [
      { namespaces: [ns('ok'), 'not-owned'] },
      { namespaces: [ns('x')], links: [{ kind: 'veth', name: 'much-too-long-name', peer: { name: 'p' } }] },
      { namespaces: [ns('x')], addresses: [{ namespace: ns('x'), dev: 'lo', cidr: '10.0.0.1/40' }] },
      { namespaces: [ns('x')], routes: [{ namespace: ns('x'), to: 'default' }] },
    ];
    const fields: string[] = [];
    for (const topology of bad) {
      try {
        await host.apply(topology as never);
        expect.unreachable('accepted bad input');
      } catch (error) {
        expect(isNubesError(error, 'InvalidInput')).toBe(true);
        fields.push(String((error as { details: { field: string } }).details.field));
      }
    }
    expect(fields).toEqual([
      'topology.namespaces.1',
      'topology.links.0.name',
      'topology.addresses.0.cidr',
      'topology.routes.0.via',
    ]);
    expect(await host.listNamespaces()).toEqual(before);
  });

  it('rolls back what it created when a later step fails', async () => {
    await host.createNamespace(a);
    await expect(
      host.apply({
        namespaces: [b],
        links: [{ kind: 'veth', name: 'va', namespace: a, peer: { name: 'vb', namespace: b } }],
        // The gateway is on no connected network, so this line fails after the veth exists.
        routes: [{ namespace: a, to: 'default', via: '192.0.2.1' }],
      }),
    ).rejects.toMatchObject({ code: 'CommandFailed' });
    expect(await host.listNamespaces()).not.toContain(b);
    expect((await host.links(a)).map((l) => l.name)).toEqual(['lo']);
  });

  it('runs commands with env, cwd and a timeout, and gc removes everything of the owner', async () => {
    await host.createNamespace(a);
    const out = await host.exec(a, ['sh', '-c', 'echo "$GREETING $(pwd)"; ip -o link show | wc -l'], {
      env: { GREETING: 'hi' },
      cwd: '/tmp',
    });
    expect(out.stdout).toBe('hi /tmp\n1\n');
    await expect(host.exec(a, ['sleep', '5'], { timeoutMs: 200 })).rejects.toMatchObject({ code: 'Timeout' });
    const child = host.spawn(a, ['sh', '-c', 'echo ready; sleep 30']);
    await waitForOutput(child, /ready/);
    child.kill();

    await host.iproute.ip([
      'link',
      'add',
      'name',
      `${testOwner.slice(-8)}x`,
      'type',
      'veth',
      'peer',
      'name',
      `${testOwner.slice(-8)}y`,
    ]);
    await host.iproute.ip(['link', 'set', 'dev', `${testOwner.slice(-8)}x`, 'alias', `nubes:${testOwner}`]);
    const removed = await host.gc();
    expect(removed.namespaces).toEqual([a]);
    expect(removed.links).toEqual([`${testOwner.slice(-8)}x`]);
    expect(await host.listNamespaces()).not.toContain(a);
  });
});
