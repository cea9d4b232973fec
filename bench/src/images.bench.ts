import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { convertImage, createImage, type DiskImage, openImage } from '@nubes/images';
import type { BenchGroup } from './harness.js';
import { defineBenchmarks } from './harness.js';

const GIB = 1024 ** 3;
const MB = 1e6;
/** Requests per run of the random I/O cases: enough that qemu-img's process start (~5 ms) is noise. */
const IO_COUNT = 20000;
/** Requests per run of the allocating-write case (each allocates and copies a cluster). */
const ALLOC_COUNT = 2000;

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: 'ignore' });
}

/** The step qemu-img bench is given so that `count` requests spread over the whole image. */
function strideFor(count: number): number {
  const s = Math.floor(GIB / count);
  return s - (s % 4096);
}

/**
 * The offsets `qemu-img bench -c count -S stride` visits (QEMU 7.2 wraps with `offset %= size`),
 * shuffled: the engine gets the same set of 4 KiB blocks, in a random order.
 */
function benchOffsets(count: number, stride: number): number[] {
  const offsets = Array.from({ length: count }, (_, i) => (i * stride) % GIB);
  for (let i = offsets.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [offsets[i], offsets[j]] = [offsets[j] as number, offsets[i] as number];
  }
  return offsets;
}

/** `count` requests from a pool of `depth` concurrent workers (the engine's reads may overlap). */
async function inFlight(
  depth: number,
  offsets: number[],
  op: (offset: number) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < offsets.length) await op(offsets[next++] as number);
  };
  await Promise.all(Array.from({ length: depth }, worker));
}

export default defineBenchmarks({
  name: 'qcow2 engine against qemu-img: 1 GiB image, half random data, half zeros',
  async setup(ctx) {
    const raw = join(ctx.tmpDir, 'src.raw');
    const fd = openSync(raw, 'w');
    ftruncateSync(fd, GIB);
    // Random data in the first half, in 2 MiB runs alternating with zero runs over the whole image.
    for (let at = 0; at < GIB; at += 4 * 1024 * 1024)
      writeSync(fd, randomBytes(2 * 1024 * 1024), 0, 2 * 1024 * 1024, at);
    closeSync(fd);
    const qcow = join(ctx.tmpDir, 'src.qcow2');
    qemuImg('convert', '-O', 'qcow2', raw, qcow);
    // The same content with its zeros written out (no holes): qemu-img can no longer skip the zero
    // half with SEEK_DATA/SEEK_HOLE, which Node cannot call, so both engines read every byte.
    const dense = join(ctx.tmpDir, 'dense.raw');
    const dfd = openSync(dense, 'w');
    const zeros = Buffer.alloc(2 * 1024 * 1024);
    for (let at = 0; at < GIB; at += 4 * 1024 * 1024) {
      writeSync(dfd, randomBytes(2 * 1024 * 1024), 0, 2 * 1024 * 1024, at);
      writeSync(dfd, zeros, 0, zeros.length, at + 2 * 1024 * 1024);
    }
    closeSync(dfd);
    const out = (name: string) => join(ctx.tmpDir, name);
    const mbPerRun = GIB / MB;
    // One untimed run of each conversion: page cache and JIT warm, outputs exist (both engines
    // then replace an existing output, as qemu-img convert truncates it).
    qemuImg('convert', '-O', 'raw', qcow, out('q.raw'));
    await convertImage(qcow, out('o.raw'), { outputFormat: 'raw', overwrite: true });
    qemuImg('convert', '-O', 'qcow2', raw, out('q.qcow2'));
    await convertImage(raw, out('o.qcow2'), { outputFormat: 'qcow2', overwrite: true });
    await convertImage(dense, out('o.qcow2'), { outputFormat: 'qcow2', overwrite: true });

    // Overlay create latency.
    let n = 0;
    const overlay = () => out(`ov${n++ % 50}.qcow2`);

    // Two-deep chain: base (qcow2 above) <- mid <- top. Reads go to empty tops (through the chain
    // to the base); writes go to separate tops primed with one pass, so that both engines measure
    // steady-state overwrites of clusters the top already owns.
    const mid = out('mid.qcow2');
    await createImage(mid, { backingFile: qcow, backingFormat: 'qcow2' });
    const top = out('top.qcow2');
    const qtop = out('qtop.qcow2');
    const wtop = out('wtop.qcow2');
    const qwtop = out('qwtop.qcow2');
    for (const f of [top, wtop]) await createImage(f, { backingFile: mid, backingFormat: 'qcow2' });
    for (const f of [qtop, qwtop]) qemuImg('create', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', f);
    const reader: DiskImage = await openImage(top);
    const writer: DiskImage = await openImage(wtop, { writable: true });
    const block = randomBytes(4096);
    const stride = strideFor(IO_COUNT);
    const offsets = benchOffsets(IO_COUNT, stride);
    const qemuBench = (extra: string[], file: string, count = IO_COUNT, step = stride) =>
      qemuImg('bench', ...extra, '-c', String(count), '-s', '4096', '-S', String(step), '-f', 'qcow2', file);
    qemuBench(['-w', '-d', '1'], qwtop);
    for (const o of offsets) await writer.write(o, block);
    const allocStride = strideFor(ALLOC_COUNT);
    const allocOffsets = benchOffsets(ALLOC_COUNT, allocStride);

    // Whole-image jobs take a fraction of a second each: a few real runs, warmed up above.
    const heavy = { iterations: 8, timeMs: 0, noWarmup: true } as const;
    // The I/O cases run 20000 requests per call; the priming above stands in for a warm-up.
    const io = { iterations: 6, timeMs: 0, noWarmup: true } as const;
    const groups: BenchGroup[] = [
      {
        name: 'convert qcow2 -> raw (MB/s)',
        ...heavy,
        cases: [
          {
            name: 'qemu-img convert',
            reference: true,
            opsPerRun: mbPerRun,
            fn: () => qemuImg('convert', '-O', 'raw', qcow, out('q.raw')),
          },
          {
            name: 'convertImage',
            opsPerRun: mbPerRun,
            fn: () => convertImage(qcow, out('o.raw'), { outputFormat: 'raw', overwrite: true }),
          },
        ],
      },
      {
        name: 'convert raw -> qcow2 (MB/s)',
        ...heavy,
        cases: [
          {
            name: 'qemu-img convert',
            reference: true,
            opsPerRun: mbPerRun,
            fn: () => qemuImg('convert', '-O', 'qcow2', raw, out('q.qcow2')),
          },
          {
            name: 'convertImage',
            opsPerRun: mbPerRun,
            fn: () => convertImage(raw, out('o.qcow2'), { outputFormat: 'qcow2', overwrite: true }),
          },
        ],
      },
      {
        name: 'convert fully allocated raw -> qcow2 (MB/s)',
        ...heavy,
        cases: [
          {
            name: 'qemu-img convert',
            reference: true,
            opsPerRun: mbPerRun,
            fn: () => qemuImg('convert', '-O', 'qcow2', dense, out('q.qcow2')),
          },
          {
            name: 'convertImage',
            opsPerRun: mbPerRun,
            fn: () => convertImage(dense, out('o.qcow2'), { outputFormat: 'qcow2', overwrite: true }),
          },
        ],
      },
      {
        name: 'overlay create (per second)',
        cases: [
          {
            name: 'qemu-img create -b',
            reference: true,
            fn: () => qemuImg('create', '-f', 'qcow2', '-b', qcow, '-F', 'qcow2', overlay()),
          },
          {
            name: 'createImage overlay',
            fn: () => createImage(overlay(), { backingFile: qcow, backingFormat: 'qcow2', overwrite: true }),
          },
        ],
      },
      {
        name: 'random 4 KiB reads through a two-deep chain (IOPS)',
        ...io,
        cases: [
          {
            name: `qemu-img bench -d 1 -c ${IO_COUNT} (one request at a time)`,
            reference: true,
            opsPerRun: IO_COUNT,
            fn: () => qemuBench(['-d', '1'], qtop),
          },
          {
            name: `DiskImage.read x${IO_COUNT}, awaited one by one`,
            opsPerRun: IO_COUNT,
            fn: async () => {
              for (const o of offsets) await reader.read(o, 4096);
            },
          },
          {
            name: `qemu-img bench -d 64 (its default depth)`,
            opsPerRun: IO_COUNT,
            fn: () => qemuBench(['-d', '64'], qtop),
          },
          {
            name: 'DiskImage.read, 64 in flight',
            opsPerRun: IO_COUNT,
            fn: () => inFlight(64, offsets, (o) => reader.read(o, 4096)),
          },
        ],
      },
      {
        name: 'random 4 KiB writes through a two-deep chain (IOPS)',
        ...io,
        cases: [
          {
            name: `qemu-img bench -w -d 1 -c ${IO_COUNT}`,
            reference: true,
            opsPerRun: IO_COUNT,
            fn: () => qemuBench(['-w', '-d', '1'], qwtop),
          },
          {
            name: `DiskImage.write x${IO_COUNT}, awaited one by one`,
            opsPerRun: IO_COUNT,
            fn: async () => {
              for (const o of offsets) await writer.write(o, block);
            },
          },
          {
            name: 'qemu-img bench -w -d 64 (its default depth)',
            opsPerRun: IO_COUNT,
            fn: () => qemuBench(['-w', '-d', '64'], qwtop),
          },
        ],
      },
      {
        name: 'first 4 KiB writes into a fresh overlay: allocate + copy-on-write (IOPS)',
        ...heavy,
        cases: [
          {
            name: `qemu-img create + bench -w -d 1 -c ${ALLOC_COUNT}`,
            reference: true,
            opsPerRun: ALLOC_COUNT,
            fn: () => {
              qemuImg('create', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', out('qalloc.qcow2'));
              qemuBench(['-w', '-d', '1'], out('qalloc.qcow2'), ALLOC_COUNT, allocStride);
            },
          },
          {
            name: `createImage + DiskImage.write x${ALLOC_COUNT} + close`,
            opsPerRun: ALLOC_COUNT,
            fn: async () => {
              const file = out('alloc.qcow2');
              await createImage(file, { backingFile: mid, backingFormat: 'qcow2', overwrite: true });
              const image = await openImage(file, { writable: true });
              try {
                for (const o of allocOffsets) await image.write(o, block);
              } finally {
                await image.close();
              }
            },
          },
        ],
      },
    ];
    return {
      groups,
      teardown: async () => {
        await reader.close();
        await writer.close();
        for (const f of ['q.raw', 'o.raw', 'q.qcow2', 'o.qcow2']) rmSync(out(f), { force: true });
      },
    };
  },
});
