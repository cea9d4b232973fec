import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  ADMIN,
  createMember,
  describeCloud,
  startTestCloud,
  type TestCloud,
  type Who,
} from './helpers/cloud.js';

type Row = Record<string, unknown>;

describeCloud('reference cloud network API (Neutron v2.0), driven by the real openstack CLI', () => {
  let t: TestCloud;
  let alice: Who;
  let bob: Who;

  beforeAll(async () => {
    t = await startTestCloud();
    alice = await createMember(t, 'net-alpha', 'alice');
    bob = await createMember(t, 'net-beta', 'bob');
  });

  afterAll(async () => {
    await t?.close();
  });

  /** Raw HTTP against the network endpoint as `who`. */
  async function http(who: Who, method: string, path: string, body?: unknown | string) {
    const response = await fetch(`${t.base}/network${path}`, {
      method,
      headers: { 'x-auth-token': await t.token(who), 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: (text ? JSON.parse(text) : {}) as Row };
  }

  /** The error of a Neutron error body. */
  const neutronError = (body: Row) => body.NeutronError as { type: string; message: string };

  it('serves networks, subnets, routers, security groups, ports, floating IPs and quotas to the CLI', async () => {
    // Discovery: Neutron's versions document and the extensions the client checks.
    const versions = await fetch(`${t.base}/network/`);
    expect(((await versions.json()) as { versions: Row[] }).versions[0]).toMatchObject({ id: 'v2.0' });
    const ext = await http(alice, 'GET', '/v2.0/extensions');
    const aliases = (ext.body.extensions as Row[]).map((e) => e.alias);
    expect(aliases).toEqual(expect.arrayContaining(['security-group', 'router', 'external-net', 'quotas']));

    // ---- a member builds a tenant network
    const net = await t.ok(alice, ['network', 'create', 'blue']);
    expect(net).toMatchObject({ name: 'blue', status: 'ACTIVE', 'router:external': false, mtu: 1450 });
    const subnet = await t.ok(alice, [
      'subnet',
      'create',
      '--network',
      'blue',
      '--subnet-range',
      '10.0.0.0/24',
      '--dns-nameserver',
      '192.0.2.53',
      'blue-v4',
    ]);
    expect(subnet).toMatchObject({
      cidr: '10.0.0.0/24',
      gateway_ip: '10.0.0.1',
      ip_version: 4,
      enable_dhcp: true,
      dns_nameservers: ['192.0.2.53'],
      allocation_pools: [{ start: '10.0.0.2', end: '10.0.0.254' }],
    });
    const router = await t.ok(alice, ['router', 'create', 'edge']);
    expect(router).toMatchObject({ name: 'edge', status: 'ACTIVE', external_gateway_info: null });
    const added = await t.openstack(alice, ['router', 'add', 'subnet', 'edge', 'blue-v4'], false);
    expect(added.exitCode, added.stderr).toBe(0);

    const sg = await t.ok(alice, ['security', 'group', 'create', '--description', 'web tier', 'web']);
    expect(sg).toMatchObject({ name: 'web', description: 'web tier' });
    const icmp = await t.ok(alice, ['security', 'group', 'rule', 'create', '--protocol', 'icmp', 'web']);
    expect(icmp).toMatchObject({ protocol: 'icmp', direction: 'ingress', ether_type: 'IPv4' });
    const ssh = await t.ok(alice, [
      'security',
      'group',
      'rule',
      'create',
      '--protocol',
      'tcp',
      '--dst-port',
      '22',
      'web',
    ]);
    expect(ssh).toMatchObject({ protocol: 'tcp', port_range_min: 22, port_range_max: 22 });
    // Each project gets its `default` group on first use, as in Neutron.
    const groups = await t.ok<Row[]>(alice, ['security', 'group', 'list']);
    expect(groups.map((g) => g.Name).sort()).toEqual(['default', 'web']);

    const port = await t.ok(alice, ['port', 'create', '--network', 'blue', '--security-group', 'web', 'vm1']);
    expect(port).toMatchObject({ name: 'vm1', status: 'DOWN', security_group_ids: [sg.id] });
    expect(port.fixed_ips).toEqual([{ subnet_id: subnet.id, ip_address: '10.0.0.2' }]);
    expect(String(port.mac_address)).toMatch(/^fa:16:3e:/);

    // Lists and shows by name (the CLI asks for the name as an id first, gets 404, then filters).
    const networks = await t.ok<Row[]>(alice, ['network', 'list']);
    expect(networks.map((n) => n.Name)).toEqual(['blue']);
    expect((await t.ok<Row[]>(alice, ['subnet', 'list'])).map((s) => s.Name)).toEqual(['blue-v4']);
    const ports = await t.ok<Row[]>(alice, ['port', 'list']);
    expect(ports.map((p) => p.Name).sort()).toEqual(['', 'vm1']); // the router's interface and vm1
    expect(await t.ok(alice, ['network', 'show', 'blue'])).toMatchObject({
      id: net.id,
      subnets: [subnet.id],
    });
    expect(await t.ok(alice, ['subnet', 'show', 'blue-v4'])).toMatchObject({ id: subnet.id });
    expect(await t.ok(alice, ['port', 'show', 'vm1'])).toMatchObject({ id: port.id });
    const routerPorts = await http(alice, 'GET', `/v2.0/ports?device_id=${router.id}&fields=device_owner`);
    expect(routerPorts.body).toEqual({ ports: [{ device_owner: 'network:router_interface' }] });

    // ---- the admin provides an external network; the member routes to it and takes a floating IP
    const refused = await t.openstack(alice, ['network', 'create', '--external', 'mine']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/403|disallowed by policy/);
    const pub = await t.ok(ADMIN, ['network', 'create', '--external', 'public']);
    expect(pub['router:external']).toBe(true);
    await t.ok(ADMIN, [
      'subnet',
      'create',
      '--network',
      'public',
      '--subnet-range',
      '203.0.113.0/24',
      '--no-dhcp',
      'public-v4',
    ]);
    // Members see external networks, but not to change them.
    expect((await t.ok<Row[]>(alice, ['network', 'list', '--external'])).map((n) => n.Name)).toEqual([
      'public',
    ]);

    const gw = await t.openstack(alice, ['router', 'set', '--external-gateway', 'public', 'edge'], false);
    expect(gw.exitCode, gw.stderr).toBe(0);
    const edge = await t.ok(alice, ['router', 'show', 'edge']);
    expect(edge.external_gateway_info).toMatchObject({ network_id: pub.id, enable_snat: true });

    const fip = await t.ok(alice, ['floating', 'ip', 'create', 'public']);
    expect(fip).toMatchObject({ floating_network_id: pub.id, port_id: null, status: 'DOWN' });
    expect(String(fip.floating_ip_address)).toMatch(/^203\.0\.113\./);
    const set = await t.openstack(alice, ['floating', 'ip', 'set', '--port', 'vm1', String(fip.id)], false);
    expect(set.exitCode, set.stderr).toBe(0);
    expect(await t.ok(alice, ['floating', 'ip', 'show', String(fip.id)])).toMatchObject({
      port_id: port.id,
      fixed_ip_address: '10.0.0.2',
      router_id: router.id,
      status: 'ACTIVE',
    });
    const unset = await t.openstack(alice, ['floating', 'ip', 'unset', '--port', String(fip.id)], false);
    expect(unset.exitCode, unset.stderr).toBe(0);
    expect(await t.ok(alice, ['floating', 'ip', 'show', String(fip.id)])).toMatchObject({ port_id: null });

    // ---- quotas: Neutron's quota API, backed by @nubes/quota
    const projectId = String(net.project_id);
    const detail = await t.ok<Row[]>(ADMIN, [
      'quota',
      'list',
      '--network',
      '--detail',
      '--project',
      projectId,
    ]);
    const usage = Object.fromEntries(detail.map((r) => [r.Resource, r]));
    expect(usage.networks).toMatchObject({ 'In Use': 1, Limit: 100 });
    expect(usage.ports).toMatchObject({ 'In Use': 1 }); // router interfaces are not counted
    expect(usage.floating_ips).toMatchObject({ 'In Use': 1 });
    // default (1) and web (1); their rules: 4 + 2 default ones + icmp + ssh
    expect(usage.security_groups).toMatchObject({ 'In Use': 2 });
    expect(usage.security_group_rules).toMatchObject({ 'In Use': 8 });
    // `quota show` reads Nova's and Neutron's quota endpoints and prints them as one table.
    const show = await t.ok(ADMIN, ['quota', 'show', 'net-alpha']);
    expect(show).toMatchObject({
      networks: 100,
      subnets: 100,
      ports: 500,
      routers: 10,
      instances: 10,
      cores: 20,
    });
    const quotaSet = await t.openstack(ADMIN, ['quota', 'set', '--networks', '1', 'net-alpha'], false);
    expect(quotaSet.exitCode, quotaSet.stderr).toBe(0);
    const over = await t.openstack(alice, ['network', 'create', 'second']);
    expect(over.exitCode).not.toBe(0);
    expect(over.stderr).toMatch(/Quota exceeded for resources: \['network'\]/);
    const nets = await http(alice, 'GET', '/v2.0/networks?router:external=false&fields=name');
    expect(nets.body).toEqual({ networks: [{ name: 'blue' }] });
    const quotaBody = await http(alice, 'GET', `/v2.0/quotas/${projectId}`);
    expect(quotaBody.body.quota).toMatchObject({ network: 1, subnet: 100 });
    expect((await http(alice, 'PUT', `/v2.0/quotas/${projectId}`, { quota: { network: 5 } })).status).toBe(
      403,
    );

    // ---- isolation: another project sees nothing of it
    const other = await t.openstack(bob, ['network', 'show', 'blue']);
    expect(other.exitCode).not.toBe(0);
    expect((await http(bob, 'GET', `/v2.0/networks/${net.id}`)).status).toBe(404);
    expect((await http(bob, 'DELETE', `/v2.0/ports/${port.id}`)).status).toBe(404);
    expect((await t.ok<Row[]>(bob, ['network', 'list'])).map((n) => n.Name)).toEqual(['public']);
    expect((await http(bob, 'GET', '/v2.0/ports')).body).toEqual({ ports: [] });
    // The admin sees everything.
    expect((await t.ok<Row[]>(ADMIN, ['network', 'list'])).map((n) => n.Name).sort()).toEqual([
      'blue',
      'public',
    ]);

    // ---- bad input over raw HTTP: Neutron's error body naming the field, and nothing changes
    const before = await http(alice, 'GET', '/v2.0/subnets');
    const badCidr = await http(alice, 'POST', '/v2.0/subnets', {
      subnet: { network_id: net.id, ip_version: 4, cidr: '10.0.300.0/24' },
    });
    expect(badCidr.status).toBe(400);
    expect(neutronError(badCidr.body)).toMatchObject({ type: 'HTTPBadRequest' });
    expect(neutronError(badCidr.body).message).toMatch(/^cidr: /);
    const v6 = await http(alice, 'POST', '/v2.0/subnets', {
      subnet: { network_id: net.id, ip_version: 6, cidr: 'fd00::/64' },
    });
    expect(v6.status).toBe(400);
    expect(neutronError(v6.body).message).toMatch(/^ip_version: /);
    const overlap = await http(alice, 'POST', '/v2.0/subnets', {
      subnet: { network_id: net.id, ip_version: 4, cidr: '10.0.0.128/25' },
    });
    expect(overlap.status).toBe(400);
    expect(neutronError(overlap.body).message).toMatch(/^cidr: /);
    const malformed = await http(alice, 'POST', '/v2.0/networks', '{"network": {');
    expect(malformed.status).toBe(400);
    expect(neutronError(malformed.body).type).toBe('HTTPBadRequest');
    const taken = await http(alice, 'POST', '/v2.0/ports', {
      port: { network_id: net.id, fixed_ips: [{ ip_address: '10.0.0.2' }] },
    });
    expect(taken.status).toBe(409);
    expect(neutronError(taken.body).type).toBe('IpAddressAlreadyAllocated');
    const foreign = await http(bob, 'POST', '/v2.0/subnets', {
      subnet: { network_id: net.id, ip_version: 4, cidr: '10.9.0.0/24' },
    });
    expect(foreign.status).toBe(404);
    expect(neutronError(foreign.body).type).toBe('NetworkNotFound');
    expect((await http(alice, 'GET', '/v2.0/subnets')).body).toEqual(before.body);
    expect(((await http(alice, 'GET', '/v2.0/ports')).body.ports as Row[]).length).toBe(2);

    // In use: deleting the network while ports are on it is Neutron's 409.
    const inUse = await http(alice, 'DELETE', `/v2.0/networks/${net.id}`);
    expect(inUse.status).toBe(409);
    expect(neutronError(inUse.body).type).toBe('NetworkInUse');

    // ---- deletes in order leave nothing
    const steps: string[][] = [
      ['floating', 'ip', 'delete', String(fip.id)],
      ['port', 'delete', 'vm1'],
      ['router', 'unset', '--external-gateway', 'edge'],
      ['router', 'remove', 'subnet', 'edge', 'blue-v4'],
      ['router', 'delete', 'edge'],
      ['security', 'group', 'delete', 'web'],
      ['subnet', 'delete', 'blue-v4'],
      ['network', 'delete', 'blue'],
    ];
    for (const step of steps) {
      const r = await t.openstack(alice, step, false);
      expect(r.exitCode, `${step.join(' ')}: ${r.stderr}`).toBe(0);
    }
    expect(await t.ok<Row[]>(alice, ['port', 'list'])).toEqual([]);
    expect(await t.ok<Row[]>(alice, ['router', 'list'])).toEqual([]);
    expect(await t.ok<Row[]>(alice, ['network', 'list', '--internal'])).toEqual([]);
    expect((await http(alice, 'GET', '/v2.0/floatingips')).body).toEqual({ floatingips: [] });
    const after = await http(alice, 'GET', `/v2.0/quotas/${projectId}/details`);
    expect(after.body.quota).toMatchObject({
      network: { used: 0 },
      subnet: { used: 0 },
      port: { used: 0 },
      router: { used: 0 },
      floatingip: { used: 0 },
      security_group: { used: 1 }, // the default group stays
      security_group_rule: { used: 4 },
    });
    for (const step of [
      ['subnet', 'delete', 'public-v4'],
      ['network', 'delete', 'public'],
    ]) {
      const r = await t.openstack(ADMIN, step, false);
      expect(r.exitCode, r.stderr).toBe(0);
    }
    expect(await t.ok<Row[]>(ADMIN, ['network', 'list'])).toEqual([]);
  }, 240_000);
});
