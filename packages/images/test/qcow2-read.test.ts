import { describeWith } from '@nubes/testing';
import { afterAll, expect, it } from 'vitest';
import { isInvalidImage, openImage } from '../src/index.js';
import { qemuImg, qemuIo, qemuRaw, scratch } from './helpers.js';

describeWith(['qemu-img'], 'qcow2 read path against images qemu-img made', () => {
  const s = scratch();
  afterAll(() => s.cleanup());

  async function expectSameAsQemu(file: string): Promise<void> {
    const expected = await qemuRaw(file, s.path('expected.raw'));
    const image = await openImage(file);
    try {
      expect(image.virtualSize).toBe(expected.length);
      const actual = await image.read(0, image.virtualSize);
      expect(actual.equals(expected)).toBe(true);
    } finally {
      await image.close();
    }
  }

  async function fill(file: string): Promise<void> {
    await qemuIo(
      file,
      'write -P 0x11 0 70000',
      'write -P 0x22 1M 300k',
      'write -z 1100k 64k',
      'write -P 0x33 3000000 5000',
      'discard 1M 64k',
    );
  }

  for (const [compat, cluster] of [
    ['0.10', '512'],
    ['0.10', '65536'],
    ['1.1', '512'],
    ['1.1', '4096'],
    ['1.1', '65536'],
    ['1.1', '2M'],
  ] as const) {
    it(`reads compat=${compat} cluster_size=${cluster} with data, zero and discarded clusters`, async () => {
      const file = s.path(`v${compat}-${cluster}.qcow2`);
      await qemuImg('create', '-f', 'qcow2', '-o', `compat=${compat},cluster_size=${cluster}`, file, '4M');
      await fill(file);
      await expectSameAsQemu(file);
    });
  }

  it('reads extended L2 entries with subclusters, refcount orders 0..6', async () => {
    const file = s.path('extl2.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', file, '4M');
    await qemuIo(file, 'write -P 7 4k 2k', 'write -z 64k 4k', 'write -P 9 200k 100k');
    await expectSameAsQemu(file);
    for (const bits of [1, 2, 4, 8, 32, 64]) {
      const f = s.path(`rc${bits}.qcow2`);
      await qemuImg('create', '-f', 'qcow2', '-o', `refcount_bits=${bits}`, f, '2M');
      await qemuIo(f, 'write -P 5 0 100k');
      await expectSameAsQemu(f);
    }
  });

  it('reads compressed clusters written by convert -c', async () => {
    const src = s.path('plain.qcow2');
    await qemuImg('create', '-f', 'qcow2', src, '4M');
    await fill(src);
    const packed = s.path('packed.qcow2');
    await qemuImg('convert', '-c', '-O', 'qcow2', src, packed);
    await expectSameAsQemu(packed);
  });

  it('reads internal snapshots and a three-deep chain over raw', async () => {
    const base = s.path('base.raw');
    await qemuImg('create', '-f', 'raw', base, '3M');
    await qemuIo(base, 'write -P 1 0 3M');
    const mid = s.path('mid.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'raw', mid);
    await qemuIo(mid, 'write -P 2 64k 64k', 'write -z 1M 128k');
    const top = s.path('top.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top, '4M');
    await qemuIo(top, 'write -P 3 100k 10k');
    await qemuImg('snapshot', '-c', 'one', top);
    await qemuIo(top, 'write -P 4 0 4k');
    await expectSameAsQemu(top);
  });

  it('refuses unknown incompatible features and encryption, and reports missing backing files', async () => {
    const file = s.path('odd.qcow2');
    await qemuImg('create', '-f', 'qcow2', file, '1M');
    const { open } = await import('node:fs/promises');
    const h = await open(file, 'r+');
    await h.write(Buffer.from([0x80]), 0, 1, 79); // incompatible feature bit 7
    await h.close();
    await expect(openImage(file)).rejects.toMatchObject({ code: 'Unsupported' });
    const enc = s.path('enc.qcow2');
    await qemuImg('create', '-f', 'qcow2', enc, '1M');
    const e = await open(enc, 'r+');
    await e.write(Buffer.from([0, 0, 0, 2]), 0, 4, 32); // crypt_method = LUKS
    await e.close();
    await expect(openImage(enc)).rejects.toMatchObject({ code: 'Unsupported' });
    const orphan = s.path('orphan.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', orphan, '1M');
    await expect(openImage(orphan)).rejects.toMatchObject({ code: 'NotFound', details: { file: orphan } });
    const a = s.path('a.qcow2');
    const b = s.path('b.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-u', '-b', 'b.qcow2', '-F', 'qcow2', a, '1M');
    await qemuImg('create', '-f', 'qcow2', '-u', '-b', 'a.qcow2', '-F', 'qcow2', b, '1M');
    const cycle = await openImage(a).catch((e: unknown) => e);
    expect(isInvalidImage(cycle, 'backing-cycle')).toBe(true);
    const truncated = s.path('trunc.qcow2');
    const { writeFileSync, readFileSync } = await import('node:fs');
    writeFileSync(truncated, readFileSync(file).subarray(0, 100));
    await expect(openImage(truncated)).rejects.toMatchObject({ code: 'InvalidInput' });
  });
});
