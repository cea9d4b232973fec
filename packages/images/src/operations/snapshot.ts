import { NubesError, parseInput } from '@nubes/core';
import { z } from 'zod';
import { Qcow2Image } from '../qcow2/image.js';
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from '../qcow2/snapshot-ops.js';
import type { SnapshotInfo } from '../qcow2/snapshots.js';
import { openImage } from './open.js';

const nameSchema = z.string().min(1).max(1024);

async function withQcow2<T>(
  path: string,
  writable: boolean,
  fn: (img: Qcow2Image) => Promise<T>,
): Promise<T> {
  const image = await openImage(path, { writable, backing: false });
  try {
    if (!(image instanceof Qcow2Image))
      throw new NubesError('Unsupported', `${path}: internal snapshots need a qcow2 image`, {
        details: { file: path },
      });
    return await fn(image);
  } finally {
    await image.close();
  }
}

/** Lists internal snapshots (`qemu-img snapshot -l`). */
export async function snapshotList(path: string): Promise<SnapshotInfo[]> {
  return withQcow2(path, false, async (img) =>
    (await listSnapshots(img)).map((s) => ({
      id: s.id,
      name: s.name,
      vmStateSize: s.vmStateSize,
      dateSec: s.dateSec,
      dateNsec: s.dateNsec,
      vmClockNsec: s.vmClockNsec,
      diskSize: s.diskSize,
    })),
  );
}

/** Creates an internal snapshot (`qemu-img snapshot -c name`). */
export async function snapshotCreate(path: string, name: string): Promise<void> {
  const n = parseInput(nameSchema, name, 'name');
  await withQcow2(path, true, (img) => createSnapshot(img, n));
}

/** Reverts the image to a snapshot, by id or name (`qemu-img snapshot -a`). */
export async function snapshotApply(path: string, name: string): Promise<void> {
  const n = parseInput(nameSchema, name, 'name');
  await withQcow2(path, true, (img) => applySnapshot(img, n));
}

/** Deletes a snapshot, by id or name (`qemu-img snapshot -d`). */
export async function snapshotDelete(path: string, name: string): Promise<void> {
  const n = parseInput(nameSchema, name, 'name');
  await withQcow2(path, true, (img) => deleteSnapshot(img, n));
}
