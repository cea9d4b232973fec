import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  mkdirSync,
  openSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { MemoryStore } from '@nubes/core';
import { applyLayer, createImage, ImageStore } from '@nubes/images';
import type { BenchGroup } from './harness.js';
import { defineBenchmarks } from './harness.js';

const MB = 1e6;
const RUNS = 3;
const UPLOAD_BYTES = 256 * 1024 * 1024;
const INSTANCES = 100;
const LAYER_FILES = 2000;
const LAYER_FILE_BYTES = 32 * 1024;

function run(program: string, ...args: string[]): void {
  execFileSync(program, args, { stdio: 'ignore' });
}

/** Times `job` RUNS times (cleanup untimed); each bench call replays one measured sample. */
async function timed(
  job: (i: number) => Promise<unknown> | unknown,
  cleanup: () => Promise<unknown> | unknown,
) {
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = performance.now();
    await job(i);
    samples.push(performance.now() - start);
    await cleanup();
  }
  return samples;
}

function replay(samples: number[]): () => { overriddenDuration: number } {
  let i = 0;
  return () => ({ overriddenDuration: samples[i++ % samples.length] as number });
}

/** A layer tar made by GNU tar from a tree of random files (so both sides read the same bytes). */
function layerTar(path: string, tree: string): number {
  for (let d = 0; d < LAYER_FILES / 50; d++) {
    mkdirSync(join(tree, 'usr', 'share', `d${d}`), { recursive: true });
    for (let f = 0; f < 50; f++)
      writeFileSync(join(tree, 'usr', 'share', `d${d}`, `f${f}`), randomBytes(LAYER_FILE_BYTES));
  }
  run('tar', '-cf', path, '-C', tree, 'usr');
  rmSync(tree, { recursive: true, force: true });
  return statSync(path).size;
}

export default defineBenchmarks({
  name: 'image store and OCI layers: upload hashing, instance disks, layer unpack',
  async setup(ctx) {
    const out = (name: string) => join(ctx.tmpDir, name);
    const source = out('upload.raw');
    const fd = openSync(source, 'w');
    for (let at = 0; at < UPLOAD_BYTES; at += 4 * 1024 * 1024) writeSync(fd, randomBytes(4 * 1024 * 1024));
    closeSync(fd);

    // Upload: the limit is reading, hashing and writing once, as sha256sum followed by cp does.
    const store = new MemoryStore();
    const glance = new ImageStore({ store, dir: out('store-md5'), checksum: 'md5' });
    const lean = new ImageStore({ store, dir: out('store-lean'), checksum: 'none', prefix: 'lean/' });
    const upload = (images: ImageStore) => async () => {
      const image = await images.create({ owner: 'bench', diskFormat: 'raw' });
      await images.upload(image.id, createReadStream(source, { highWaterMark: 1024 * 1024 }));
      return image.id;
    };
    let lastId = '';
    const uploadRef: number[] = [];
    const uploadGlance: number[] = [];
    const uploadLean: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      uploadRef.push(
        ...(
          await timed(
            () => {
              run('sha256sum', source);
              run('cp', source, out('copy.raw'));
            },
            () => rmSync(out('copy.raw'), { force: true }),
          )
        ).slice(0, 1),
      );
      for (const [images, samples] of [
        [glance, uploadGlance],
        [lean, uploadLean],
      ] as const)
        samples.push(
          ...(
            await timed(
              async () => {
                lastId = await upload(images)();
              },
              () => images.delete(lastId),
            )
          ).slice(0, 1),
        );
    }

    // Instance disks: 100 overlays on one cached base.
    const base = out('base.qcow2');
    run('qemu-img', 'create', '-f', 'qcow2', base, '1G');
    const disks = new ImageStore({ store, dir: out('store-disks'), prefix: 'disks/' });
    const image = await disks.create({ owner: 'bench', diskFormat: 'qcow2' });
    await disks.upload(image.id, createReadStream(base));
    const blob = disks.blobs.blobPath((await disks.get(image.id)).digest as string);
    let round = 0;
    const prepareSamples = await timed(
      async () => {
        round++;
        for (let i = 0; i < INSTANCES; i++)
          await disks.prepareInstanceDisk(image.id, { instanceId: `r${round}-vm${i}` });
      },
      async () => {
        for (const d of await disks.listInstanceDisks()) await disks.releaseInstanceDisk(d.instanceId);
      },
    );
    mkdirSync(out('overlays'));
    const overlay = (i: number) => join(out('overlays'), `vm${i}.qcow2`);
    const cleanOverlays = () => {
      rmSync(out('overlays'), { recursive: true, force: true });
      mkdirSync(out('overlays'));
    };
    const qemuSamples = await timed(() => {
      for (let i = 0; i < INSTANCES; i++)
        run('qemu-img', 'create', '-f', 'qcow2', '-b', blob, '-F', 'qcow2', overlay(i));
    }, cleanOverlays);
    const createSamples = await timed(async () => {
      for (let i = 0; i < INSTANCES; i++)
        await createImage(overlay(i), { backingFile: blob, backingFormat: 'qcow2' });
    }, cleanOverlays);

    // Layer unpack: one uncompressed layer of 2000 files, against GNU tar extracting the same file.
    const layer = out('layer.tar');
    const layerBytes = layerTar(layer, out('layer-tree'));
    const target = out('unpacked');
    const fresh = () => {
      rmSync(target, { recursive: true, force: true });
      mkdirSync(target);
    };
    fresh();
    const tarSamples: number[] = [];
    const applySamples: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      tarSamples.push(...(await timed(() => run('tar', '-xf', layer, '-C', target), fresh)).slice(0, 1));
      applySamples.push(
        ...(
          await timed(
            () =>
              applyLayer(
                createReadStream(layer, { highWaterMark: 1024 * 1024 }),
                [{ type: 'bind', source: target, options: ['rw', 'rbind'] }],
                { scratch: out('scratch') },
              ),
            fresh,
          )
        ).slice(0, 1),
      );
    }

    const replayed = { iterations: RUNS, timeMs: 0, noWarmup: true } as const;
    const uploadMb = UPLOAD_BYTES / MB;
    const layerMb = layerBytes / MB;
    const groups: BenchGroup[] = [
      {
        name: `upload ${UPLOAD_BYTES / 2 ** 20} MiB with hashing (MB/s)`,
        ...replayed,
        cases: [
          { name: 'sha256sum + cp', reference: true, opsPerRun: uploadMb, fn: replay(uploadRef) },
          {
            name: 'ImageStore.upload (sha256 + sha512 + md5)',
            opsPerRun: uploadMb,
            fn: replay(uploadGlance),
          },
          {
            name: "ImageStore.upload, checksum: 'none' (sha256 + sha512)",
            opsPerRun: uploadMb,
            fn: replay(uploadLean),
          },
        ],
      },
      {
        name: `instance disks, ${INSTANCES} from one base (disks/s)`,
        ...replayed,
        cases: [
          {
            name: `qemu-img create -b x${INSTANCES}`,
            reference: true,
            opsPerRun: INSTANCES,
            fn: replay(qemuSamples),
          },
          { name: `createImage overlay x${INSTANCES}`, opsPerRun: INSTANCES, fn: replay(createSamples) },
          {
            name: `ImageStore.prepareInstanceDisk x${INSTANCES}`,
            opsPerRun: INSTANCES,
            fn: replay(prepareSamples),
          },
        ],
      },
      {
        name: `unpack a ${Math.round(layerMb)} MB layer of ${LAYER_FILES} files (MB/s)`,
        ...replayed,
        cases: [
          { name: 'GNU tar -xf', reference: true, opsPerRun: layerMb, fn: replay(tarSamples) },
          { name: 'applyLayer (tar-stream)', opsPerRun: layerMb, fn: replay(applySamples) },
        ],
      },
    ];
    return { groups, teardown: () => store.close() };
  },
});
