import { describeWith } from '@nubes/testing';
import { afterAll, expect, it } from 'vitest';
import { runCli } from '../src/index.js';
import { qemuCheck, qemuImg, qemuIo, scratch } from './helpers.js';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
  return { code, out, err };
}

describeWith(['qemu-img'], 'nubes-img CLI with qemu-img flags', () => {
  const s = scratch();
  afterAll(() => s.cleanup());

  it('create -b -F, info --output=json, map, check exit codes', async () => {
    const base = s.path('base.qcow2');
    expect((await cli('create', '-f', 'qcow2', '-o', 'cluster_size=4096', base, '2M')).code).toBe(0);
    await qemuIo(base, 'write -P 1 0 64k');
    const top = s.path('top.qcow2');
    expect((await cli('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top)).code).toBe(0);
    const info = JSON.parse((await cli('info', '--output=json', top)).out);
    expect(info).toMatchObject({
      'virtual-size': 2 << 20,
      'backing-filename': base,
      'backing-filename-format': 'qcow2',
    });
    const chain = JSON.parse((await cli('info', '--output=json', '--backing-chain', top)).out);
    expect(chain).toHaveLength(2);
    const map = JSON.parse((await cli('map', '--output=json', top)).out);
    expect(map).toEqual(JSON.parse(await qemuImg('map', '--output=json', top)));
    const check = await cli('check', '--output=json', top);
    expect(check.code).toBe(0);
    expect(JSON.parse(check.out)).toEqual(JSON.parse(await qemuImg('check', '--output=json', top)));
  });

  it('check returns 3 for leaks and 0 after -r leaks; 1 when the check cannot run', async () => {
    const file = s.path('leak.qcow2');
    await qemuImg('create', '-f', 'qcow2', file, '1M');
    const { openImage } = await import('../src/index.js');
    const img = (await openImage(file, { writable: true })) as import('../src/index.js').Qcow2Image;
    const spare = await img.allocate(1);
    await img.file.writeAt(spare, Buffer.alloc(img.clusterSize));
    await img.close();
    expect((await cli('check', file)).code).toBe(3);
    expect((await cli('check', '-r', 'leaks', file)).code).toBe(0);
    expect((await qemuCheck(file)).leaks ?? 0).toBe(0);
    expect((await cli('check', s.path('nope.qcow2'))).code).toBe(1);
  });

  it('convert -c -p, compare, resize, snapshot, commit, rebase, measure', async () => {
    const src = s.path('src.qcow2');
    await qemuImg('create', '-f', 'qcow2', src, '4M');
    await qemuIo(src, 'write -P 5 0 1M');
    const packed = s.path('packed.qcow2');
    const conv = await cli('convert', '-c', '-p', '-O', 'qcow2', src, packed);
    expect(conv.code).toBe(0);
    expect(conv.err).toContain('100.00/100%');
    expect((await cli('compare', src, packed)).code).toBe(0);
    // -t CACHE as in qemu-img: unsafe (the default) skips the final fsync, writeback does it.
    const synced = s.path('synced.raw');
    expect((await cli('convert', '-t', 'writeback', '-O', 'raw', src, synced)).code).toBe(0);
    expect((await cli('compare', src, synced)).code).toBe(0);
    expect((await cli('convert', '-t', 'bogus', '-O', 'raw', src, synced)).code).toBe(1);
    await qemuIo(packed, 'write -P 6 0 4k');
    const diff = await cli('compare', src, packed);
    expect(diff.code).toBe(1);
    expect(diff.out).toContain('Content mismatch at offset 0!');
    expect((await cli('resize', packed, '+1M')).code).toBe(0);
    expect(JSON.parse(await qemuImg('info', '--output=json', packed))['virtual-size']).toBe(5 << 20);
    expect((await cli('snapshot', '-c', 'one', packed)).code).toBe(0);
    expect((await cli('snapshot', '-l', packed)).out).toContain('one');
    expect((await cli('snapshot', '-d', 'one', packed)).code).toBe(0);
    const top = s.path('ctop.qcow2');
    await cli('create', '-f', 'qcow2', '-b', src, '-F', 'qcow2', top);
    await qemuIo(top, 'write -P 9 0 64k');
    expect((await cli('commit', top)).code).toBe(0);
    expect((await cli('rebase', '-u', '-b', packed, '-F', 'qcow2', top)).code).toBe(0);
    const m = JSON.parse((await cli('measure', '--output=json', '-O', 'qcow2', '--size', '1G')).out);
    expect(m).toEqual(JSON.parse(await qemuImg('measure', '--output=json', '-O', 'qcow2', '--size', '1G')));
    const bad = await cli('create', '-f', 'qcow2', '-o', 'cluster_size=1000', s.path('x.qcow2'), '1M');
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('clusterSize');
  });
});
