import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { describeWith } from '@nubes/testing';
import { afterAll, expect, it } from 'vitest';
import { convertImage, createImage, openImage, snapshotApply, snapshotCreate } from '../src/index.js';
import { HostFile } from '../src/io/host-file.js';
import { qemuCheck, qemuImg, qemuIo, qemuRaw, scratch } from './helpers.js';

const MIB = 1024 * 1024;

function noise(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed * 2654435761;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 24) | 1;
  }
  return b;
}

/** A sparse raw file: `runs` of [offset, length] filled with non-zero bytes, zeros (holes) elsewhere. */
function sparseRaw(path: string, size: number, runs: [number, number][]): Buffer {
  const model = Buffer.alloc(size);
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  runs.forEach(([at, len], k) => {
    const bytes = noise(len, k + 1);
    writeSync(fd, bytes, 0, len, at);
    bytes.copy(model, at);
  });
  closeSync(fd);
  return model;
}

describeWith(['qemu-img'], 'fast paths (convert zero detection, chain reads, in-place writes)', () => {
  const s = scratch();
  afterAll(() => s.cleanup());

  // Data straddling convert's 2 MiB chunks and 64 KiB zero-detection spans, single bytes in
  // otherwise zero clusters, and a size that is not a multiple of the cluster or chunk size.
  const SIZE = 7 * MIB + 3 * 512;
  const RUNS: [number, number][] = [
    [0, 4096],
    [2 * MIB - 5000, 10_000],
    [3 * MIB + 65_536 * 3 + 17, 1],
    [4 * MIB - 1, 1],
    [5 * MIB, 600_000],
    [SIZE - 700, 700],
  ];

  it('convert raw -> qcow2 leaves zero clusters unallocated; qemu-img check and compare agree', async () => {
    const raw = s.path('z.raw');
    const model = sparseRaw(raw, SIZE, RUNS);
    for (const clusterSize of [512, 4096, 65536, 2 * MIB]) {
      const out = s.path(`z-${clusterSize}.qcow2`);
      await convertImage(raw, out, { outputFormat: 'qcow2', clusterSize });
      const check = await qemuCheck(out);
      expect(check.corruptions ?? 0).toBe(0);
      expect(check.leaks ?? 0).toBe(0);
      expect(await qemuImg('compare', raw, out)).toContain('identical');
      const back = await openImage(out);
      try {
        expect((await back.read(0, SIZE)).equals(model)).toBe(true);
      } finally {
        await back.close();
      }
      // Exactly the clusters holding a non-zero byte are allocated, as with qemu-img convert.
      const expected = new Set<number>();
      for (let i = 0; i < SIZE; i++) if (model[i] !== 0) expected.add(Math.floor(i / clusterSize));
      const map = JSON.parse(await qemuImg('map', '--output=json', out)) as {
        length: number;
        data: boolean;
      }[];
      const allocated = map.filter((e) => e.data).reduce((n, e) => n + e.length, 0);
      expect(allocated).toBe(
        [...expected].reduce((n, c) => n + Math.min(clusterSize, SIZE - c * clusterSize), 0),
      );
    }
  });

  it('convert qcow2 (chain with zero, unallocated and compressed clusters) -> raw matches qemu-img', async () => {
    const raw = s.path('c.raw');
    sparseRaw(raw, SIZE, RUNS);
    const base = s.path('c-base.qcow2');
    await qemuImg('convert', '-c', '-O', 'qcow2', raw, base);
    const top = s.path('c-top.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await qemuIo(top, 'write -z 2M 64k', 'write -P 5 6M 100k', 'write -z 5M 4k');
    const expected = await qemuRaw(top, s.path('c-expected.raw'));
    const out = s.path('c-out.raw');
    await convertImage(top, out, { outputFormat: 'raw' });
    expect(readFileSync(out).equals(expected)).toBe(true);
    // And back to qcow2 from the chain directly.
    const flat = s.path('c-flat.qcow2');
    await convertImage(top, flat, { outputFormat: 'qcow2' });
    expect(await qemuImg('compare', top, flat)).toContain('identical');
    expect((await qemuCheck(flat)).corruptions ?? 0).toBe(0);
  });

  it('convert fsyncs the output only with sync: true (qemu-img convert does not by default)', async () => {
    const raw = s.path('s.raw');
    sparseRaw(raw, 3 * MIB, [[MIB, 4096]]);
    const realSync = HostFile.prototype.sync;
    let syncs = 0;
    HostFile.prototype.sync = async function (this: HostFile) {
      syncs++;
      return realSync.call(this);
    };
    try {
      for (const outputFormat of ['qcow2', 'raw'] as const) {
        // Creating a qcow2 syncs its few metadata clusters (qemu-img create does too); the copied
        // content is synced only on request.
        syncs = 0;
        await convertImage(raw, s.path(`s1.${outputFormat}`), { outputFormat });
        const plain = syncs;
        expect(plain).toBe(outputFormat === 'qcow2' ? 1 : 0);
        syncs = 0;
        await convertImage(raw, s.path(`s2.${outputFormat}`), { outputFormat, sync: true });
        expect(syncs).toBe(plain + 1);
        expect(await qemuImg('compare', raw, s.path(`s1.${outputFormat}`))).toContain('identical');
      }
    } finally {
      HostFile.prototype.sync = realSync;
    }
  });

  it('reads through a two-deep chain (qcow2 over qcow2 over raw) match qemu-img, any size and alignment', async () => {
    const raw = s.path('r-base.raw');
    sparseRaw(raw, SIZE, RUNS);
    const mid = s.path('r-mid.qcow2');
    const top = s.path('r-top.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', raw, '-F', 'raw', mid);
    await qemuIo(mid, 'write -P 3 1M 64k', 'write -z 5M 8k');
    await qemuImg('create', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top);
    await qemuIo(top, 'write -P 4 1040k 4k', 'write -P 6 6M 12k');
    const expected = await qemuRaw(top, s.path('r-expected.raw'));
    const image = await openImage(top);
    try {
      let x = 7;
      for (let i = 0; i < 400; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        const length = i % 3 === 0 ? 4096 : 1 + (x % 150_000);
        const offset = (x >>> 3) % (SIZE - length);
        const at = i % 2 === 0 ? offset - (offset % 4096) : offset;
        const got = await image.read(at, length);
        expect(got.equals(expected.subarray(at, at + length)), `read ${at}+${length}`).toBe(true);
      }
      expect((await image.read(0, SIZE)).equals(expected)).toBe(true);
    } finally {
      await image.close();
    }
  });

  it('overwrites owned clusters in place, and copies shared ones (after a snapshot) instead', async () => {
    const file = s.path('w.qcow2');
    await createImage(file, { size: 4 * MIB, clusterSize: 65536 });
    const image = await openImage(file, { writable: true });
    const first = noise(65536, 1);
    await image.write(0, first);
    const patch = noise(4096, 2);
    await image.write(8192, patch); // owned: in place
    patch.copy(first, 8192);
    expect((await image.read(0, 65536)).equals(first)).toBe(true);
    await image.close();
    const before = JSON.parse(await qemuImg('info', '--output=json', file))['actual-size'];

    await snapshotCreate(file, 'snap');
    const again = await openImage(file, { writable: true });
    await again.write(8192, noise(4096, 3)); // shared with the snapshot: must not write in place
    await again.close();
    expect(JSON.parse(await qemuImg('info', '--output=json', file))['actual-size']).toBeGreaterThan(before);
    const check = await qemuCheck(file);
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);
    await snapshotApply(file, 'snap');
    const restored = await openImage(file);
    try {
      expect((await restored.read(0, 65536)).equals(first)).toBe(true);
    } finally {
      await restored.close();
    }
  });
});
