import { readFileSync, writeFileSync } from 'node:fs';
import { describeWith } from '@nubes/testing';
import fc from 'fast-check';
import { afterAll, expect, it } from 'vitest';
import { createImage, type DiskImage, openImage } from '../src/index.js';
import { HostFile } from '../src/io/host-file.js';
import { qemuCheck, qemuImg, qemuRaw, scratch } from './helpers.js';

type Op = { kind: 'write' | 'zero' | 'discard'; offset: number; length: number; seed: number };

const SIZE = 1024 * 1024 + 25 * 512;

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (seed + i * 7) & 0xff || 1;
  return b;
}

/** Applies an op to the engine and to a plain buffer model of the guest disk. */
async function apply(
  image: DiskImage,
  model: Buffer,
  op: Op,
  cluster: number,
  hasBacking: boolean,
  v3: boolean,
): Promise<void> {
  const length = Math.min(op.length, SIZE - op.offset);
  if (length <= 0) return;
  if (op.kind === 'write') {
    const data = pattern(length, op.seed);
    await image.write(op.offset, data);
    data.copy(model, op.offset);
  } else if (op.kind === 'zero') {
    await image.writeZeroes(op.offset, length);
    model.fill(0, op.offset, op.offset + length);
  } else {
    await image.discard(op.offset, length);
    // Discard acts on whole clusters only; over a backing file v2 shows the backing again.
    const first = Math.ceil(op.offset / cluster) * cluster;
    let last = Math.floor((op.offset + length) / cluster) * cluster;
    if (op.offset + length === SIZE) last = SIZE;
    if (last > first && (v3 || !hasBacking)) model.fill(0, first, last);
    if (last > first && !v3 && hasBacking) backingPattern().copy(model, first, first, last);
  }
}

function backingPattern(): Buffer {
  return pattern(SIZE, 99);
}

const opArb = fc.record({
  kind: fc.constantFrom<Op['kind']>('write', 'write', 'zero', 'discard'),
  offset: fc.integer({ min: 0, max: SIZE - 1 }),
  length: fc.integer({ min: 1, max: 200_000 }),
  seed: fc.integer({ min: 1, max: 255 }),
});

describeWith(['qemu-img'], 'qcow2 write path', () => {
  const s = scratch();
  afterAll(() => s.cleanup());
  let n = 0;

  for (const variant of [
    { name: 'v3 64k', clusterSize: 65536, version: 3 as const, extendedL2: false, backing: false },
    {
      name: 'v3 4k over a backing file',
      clusterSize: 4096,
      version: 3 as const,
      extendedL2: false,
      backing: true,
    },
    {
      name: 'v2 512 over a backing file',
      clusterSize: 512,
      version: 2 as const,
      extendedL2: false,
      backing: true,
    },
    {
      name: 'extended L2 32k over a backing file',
      clusterSize: 32768,
      version: 3 as const,
      extendedL2: true,
      backing: true,
    },
    {
      name: 'v3 64k refcount_bits=1',
      clusterSize: 65536,
      version: 3 as const,
      extendedL2: false,
      backing: false,
      refcountBits: 1,
    },
  ]) {
    it(`random write/zero/discard sequences match a raw model (${variant.name}) and pass qemu-img check`, async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(opArb, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 3 }),
          async (batches) => {
            const file = s.path(`w${n++}.qcow2`);
            let backingFile: string | undefined;
            const model = Buffer.alloc(SIZE);
            if (variant.backing) {
              backingFile = s.path(`b${n}.raw`);
              writeFileSync(backingFile, backingPattern());
              backingPattern().copy(model);
            }
            await createImage(file, {
              size: SIZE,
              clusterSize: variant.clusterSize,
              version: variant.version,
              extendedL2: variant.extendedL2,
              refcountBits: variant.refcountBits ?? 16,
              ...(backingFile ? { backingFile, backingFormat: 'raw' as const } : {}),
            });
            const expectedSize = Math.ceil(SIZE / 512) * 512;
            const full = Buffer.alloc(expectedSize);
            const image = await openImage(file, { writable: true });
            try {
              for (const batch of batches) {
                for (const op of batch)
                  await apply(image, model, op, variant.clusterSize, variant.backing, variant.version === 3);
                const read = await image.read(0, SIZE);
                expect(read.equals(model)).toBe(true);
              }
            } finally {
              await image.close();
            }
            const check = await qemuCheck(file);
            expect(check.corruptions ?? 0).toBe(0);
            expect(check.leaks ?? 0).toBe(0);
            model.copy(full);
            const viaQemu = await qemuRaw(file, s.path('out.raw'));
            expect(viaQemu.equals(full)).toBe(true);
          },
        ),
        { numRuns: 6 },
      );
    });
  }

  it('grows the refcount table and keeps qemu-img check clean', async () => {
    const file = s.path('grow.qcow2');
    // 512-byte clusters with 64-bit refcounts: one refcount block covers 64 clusters only.
    await createImage(file, { size: 4 * 1024 * 1024, clusterSize: 512, refcountBits: 64 });
    const image = await openImage(file, { writable: true });
    await image.write(0, pattern(3 * 1024 * 1024, 5));
    await image.close();
    expect(await qemuCheck(file)).toMatchObject({ 'check-errors': 0 });
    expect((await qemuCheck(file)).corruptions ?? 0).toBe(0);
    expect((await qemuCheck(file)).leaks ?? 0).toBe(0);
    const raw = await qemuRaw(file, s.path('g.raw'));
    expect(raw.subarray(0, 3 * 1024 * 1024).equals(pattern(3 * 1024 * 1024, 5))).toBe(true);
  });

  it('leaves only leaks, never corruption, when the process dies at any write', async () => {
    const base = s.path('crash-base.qcow2');
    await createImage(base, { size: SIZE, clusterSize: 4096 });
    const seed = await openImage(base, { writable: true });
    await seed.write(0, pattern(40_000, 3));
    await seed.close();
    const original = Buffer.from(readFileSync(base));
    const realWrite = HostFile.prototype.writeAt;
    for (let failAt = 1; failAt < 40; failAt += 1) {
      const file = s.path(`crash${failAt}.qcow2`);
      writeFileSync(file, original);
      let writes = 0;
      HostFile.prototype.writeAt = async function (this: HostFile, offset: number, data: Uint8Array) {
        if (++writes === failAt) throw new Error('simulated crash');
        return realWrite.call(this, offset, data);
      };
      const image = await openImage(file, { writable: true });
      const crashed = await (async () => {
        await image.write(2_000, pattern(30_000, 9));
        await image.writeZeroes(8192, 8192);
        await image.write(600_000, pattern(70_000, 11));
        await image.discard(600_000, 8192);
        return false;
      })().catch(() => true);
      HostFile.prototype.writeAt = realWrite;
      await image.close().catch(() => {});
      const check = await qemuCheck(file);
      expect(check.corruptions ?? 0, `failAt=${failAt}`).toBe(0);
      expect(check['check-errors']).toBe(0);
      if (!crashed) break;
    }
    HostFile.prototype.writeAt = realWrite;
  });

  it('writes compressed clusters qemu-img reads back', async () => {
    const src = s.path('csrc.raw');
    const data = Buffer.alloc(2 * 1024 * 1024);
    pattern(300_000, 4).copy(data, 10_000);
    data.fill('abc', 1_500_000, 1_800_000);
    writeFileSync(src, data);
    const { convertImage } = await import('../src/index.js');
    const out = s.path('c.qcow2');
    await convertImage(src, out, { outputFormat: 'qcow2', compress: true });
    const check = await qemuCheck(out);
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);
    expect(await qemuImg('compare', src, out)).toContain('identical');
    const map = JSON.parse(await qemuImg('map', '--output=json', out)) as {
      data: boolean;
      compressed?: boolean;
    }[];
    expect(map.some((e) => e.data)).toBe(true);
  });
});
