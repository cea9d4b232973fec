import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { convertImage, createImage, type DiskImage, openImage } from '@nubes/images';
import type { BenchGroup } from './harness.js';
import { defineBenchmarks } from './harness.js';

const GIB = 1024 ** 3;
const MB = 1e6;
const RUNS = 3;

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: 'ignore' });
}

/** Times a whole 1 GiB job RUNS times in setup; each bench call replays one real sample. */
async function timed(job: () => Promise<void> | void): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = performance.now();
    await job();
    samples.push(performance.now() - start);
  }
  return samples;
}

function replay(samples: number[]): () => { overriddenDuration: number } {
  let i = 0;
  return () => ({ overriddenDuration: samples[i++ % samples.length] as number });
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
    const out = (name: string) => join(ctx.tmpDir, name);

    // Whole-image conversions are too long for tinybench's 64-iteration minimum, so each is run
    // RUNS times here, alternating engines, and the cases replay those measured durations.
    const toRawOurs: number[] = [];
    const toRawQemu: number[] = [];
    const toQcowOurs: number[] = [];
    const toQcowQemu: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      toRawQemu.push(...(await timed(() => qemuImg('convert', '-O', 'raw', qcow, out('q.raw')))).slice(0, 1));
      toRawOurs.push(
        ...(
          await timed(async () => {
            rmSync(out('o.raw'), { force: true });
            await convertImage(qcow, out('o.raw'), { outputFormat: 'raw' });
          })
        ).slice(0, 1),
      );
      toQcowQemu.push(
        ...(await timed(() => qemuImg('convert', '-O', 'qcow2', raw, out('q.qcow2')))).slice(0, 1),
      );
      toQcowOurs.push(
        ...(
          await timed(async () => {
            rmSync(out('o.qcow2'), { force: true });
            await convertImage(raw, out('o.qcow2'), { outputFormat: 'qcow2' });
          })
        ).slice(0, 1),
      );
    }
    for (const f of ['q.raw', 'o.raw', 'q.qcow2', 'o.qcow2']) rmSync(out(f), { force: true });
    const mbPerRun = GIB / MB;

    // Overlay create latency.
    let n = 0;
    const overlay = () => out(`ov${n++ % 50}.qcow2`);

    // Two-deep chain: base (qcow2 above) <- mid <- top, random 4 KiB I/O on top.
    const mid = out('mid.qcow2');
    const top = out('top.qcow2');
    await createImage(mid, { backingFile: qcow, backingFormat: 'qcow2' });
    await createImage(top, { backingFile: mid, backingFormat: 'qcow2' });
    const image: DiskImage = await openImage(top, { writable: true });
    const block = randomBytes(4096);
    const randomOffset = () => Math.floor(Math.random() * (GIB / 4096)) * 4096;
    const qtop = out('qtop.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', qtop);
    const BATCH = 2000;

    const groups: BenchGroup[] = [
      {
        name: 'convert qcow2 -> raw (MB/s)',
        cases: [
          { name: 'qemu-img convert', reference: true, opsPerRun: mbPerRun, fn: replay(toRawQemu) },
          { name: 'convertImage', opsPerRun: mbPerRun, fn: replay(toRawOurs) },
        ],
      },
      {
        name: 'convert raw -> qcow2 (MB/s)',
        cases: [
          { name: 'qemu-img convert', reference: true, opsPerRun: mbPerRun, fn: replay(toQcowQemu) },
          { name: 'convertImage', opsPerRun: mbPerRun, fn: replay(toQcowOurs) },
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
        cases: [
          {
            name: `qemu-img bench -c ${BATCH} (random offsets not available: strided)`,
            reference: true,
            opsPerRun: BATCH,
            fn: () =>
              qemuImg(
                'bench',
                '-c',
                String(BATCH),
                '-s',
                '4096',
                '-S',
                String(GIB / BATCH - ((GIB / BATCH) % 4096)),
                '-f',
                'qcow2',
                qtop,
              ),
          },
          {
            name: `DiskImage.read x${BATCH}`,
            opsPerRun: BATCH,
            fn: async () => {
              for (let i = 0; i < BATCH; i++) await image.read(randomOffset(), 4096);
            },
          },
        ],
      },
      {
        name: 'random 4 KiB writes through a two-deep chain (IOPS)',
        cases: [
          {
            name: `qemu-img bench -w -c ${BATCH} (strided)`,
            reference: true,
            opsPerRun: BATCH,
            fn: () =>
              qemuImg(
                'bench',
                '-w',
                '-c',
                String(BATCH),
                '-s',
                '4096',
                '-S',
                String(GIB / BATCH - ((GIB / BATCH) % 4096)),
                '-f',
                'qcow2',
                qtop,
              ),
          },
          {
            name: `DiskImage.write x${BATCH}`,
            opsPerRun: BATCH,
            fn: async () => {
              for (let i = 0; i < BATCH; i++) await image.write(randomOffset(), block);
            },
          },
        ],
      },
    ];
    return { groups, teardown: () => image.close() };
  },
});
