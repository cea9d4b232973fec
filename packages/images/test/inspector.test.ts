import { readFileSync } from 'node:fs';
import { describeWith } from '@nubes/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { InvalidImage, inspectBuffer, inspectImage } from '../src/index.js';
import { qemuImg, scratch } from './helpers.js';

describeWith(['qemu-img'], 'inspector for untrusted images', () => {
  const s = scratch();
  const samples: Record<string, Buffer> = {};
  beforeAll(async () => {
    for (const [name, args] of [
      ['qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512']],
      ['vmdk', ['-f', 'vmdk']],
      ['vhd', ['-f', 'vpc']],
      ['vhdx', ['-f', 'vhdx']],
      ['raw', ['-f', 'raw']],
    ] as const) {
      const file = s.path(`sample.${name}`);
      await qemuImg('create', ...args, file, '1M');
      samples[name] = readFileSync(file);
    }
    await qemuImg('create', '-f', 'qcow2', s.path('base.qcow2'), '1M');
    await qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', s.path('overlay.qcow2'));
    await qemuImg('create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', s.path('flat.vmdk'), '1M');
  });
  afterAll(() => s.cleanup());

  it('detects each format and its virtual size', async () => {
    for (const name of ['qcow2', 'vmdk', 'vhdx', 'raw'] as const) {
      const r = await inspectBuffer(samples[name] as Buffer);
      expect(r.format).toBe(name);
      expect(r.virtualSize).toBe(1 << 20);
    }
    // VHD rounds the size to its CHS geometry, as qemu-img info reports it.
    const vhd = await inspectImage(s.path('sample.vhd'));
    expect(vhd.format).toBe('vhd');
    expect(vhd.virtualSize).toBe(
      JSON.parse(await qemuImg('info', '--output=json', s.path('sample.vhd')))['virtual-size'],
    );
    const iso = Buffer.alloc(40_000);
    iso.write('CD001', 0x8001, 'latin1');
    expect((await inspectBuffer(iso)).format).toBe('iso');
  });

  it('rejects backing files, external extents, ambiguity and absurd sizes with reason codes', async () => {
    const reason = async (p: Promise<unknown>) => ((await p.catch((e: unknown) => e)) as InvalidImage).reason;
    expect(await reason(inspectImage(s.path('overlay.qcow2')))).toBe('backing-file');
    expect(await reason(inspectImage(s.path('flat.vmdk')))).toBe('external-extent');
    const both = Buffer.from(samples.qcow2 as Buffer);
    const padded = Buffer.concat([both, Buffer.alloc(40_000)]);
    padded.write('CD001', 0x8001, 'latin1');
    expect(await reason(inspectBuffer(padded))).toBe('ambiguous-format');
    const huge = Buffer.from(samples.qcow2 as Buffer);
    huge.writeUInt32BE(0x10000, 24); // virtual size 2^48
    expect(await reason(inspectBuffer(huge, { maxVirtualSize: 2 ** 40 }))).toBe('bad-virtual-size');
    const far = Buffer.from(samples.qcow2 as Buffer);
    far.writeUInt32BE(0x100000, 44); // L1 table offset far past the end
    expect(['offset-out-of-range', 'overlapping-metadata']).toContain(await reason(inspectBuffer(far)));
    const overlap = Buffer.from(samples.qcow2 as Buffer);
    overlap.writeUInt32BE(overlap.readUInt32BE(52), 44); // L1 table on top of the refcount table
    expect(await reason(inspectBuffer(overlap))).toBe('overlapping-metadata');
  });

  it('survives tens of thousands of mutated headers and tables: typed rejections only, bounded reads', async () => {
    const bases = Object.values(samples).map((b) => b.subarray(0, Math.min(b.length, 8192)));
    const budget = 256 * 1024;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: bases.length - 1 }),
        fc.array(fc.record({ at: fc.nat(4096), value: fc.nat(255) }), { minLength: 1, maxLength: 12 }),
        fc.option(fc.nat(8192)),
        async (which, mutations, cut) => {
          const image = Buffer.from(bases[which] as Buffer);
          for (const m of mutations) if (m.at < image.length) image[m.at] = m.value;
          const input = cut === null ? image : image.subarray(0, cut);
          try {
            const r = await inspectBuffer(input, { maxReadBytes: budget });
            expect(r.bytesRead).toBeLessThanOrEqual(budget);
            expect(Number.isSafeInteger(r.virtualSize)).toBe(true);
          } catch (error) {
            expect(error).toBeInstanceOf(InvalidImage);
            expect(typeof (error as InvalidImage).reason).toBe('string');
          }
        },
      ),
      { numRuns: 20_000 },
    );
  });
});
