import { NubesError } from '@nubes/core';
import { fixCopiedFlags } from './check.js';
import { compressedRange, entryOffset, L2_COMPRESSED_HI, L2_COPIED_HI, writeU64 } from './format.js';
import type { Qcow2Image } from './image.js';
import { readSnapshotTable, type SnapshotEntry, serializeSnapshotTable } from './snapshots.js';

/** Lists the internal snapshots of an image. */
export async function listSnapshots(img: Qcow2Image): Promise<SnapshotEntry[]> {
  const h = img.header;
  return (await readSnapshotTable(img.file, h.snapshotsOffset, h.nbSnapshots, img.clusterSize)).entries;
}

/** Adds `delta` to the refcount of every L2 table and data cluster reachable from `l1`. */
async function adjustTree(img: Qcow2Image, l1: Buffer, delta: number): Promise<void> {
  const cs = img.clusterSize;
  const g = img.g;
  const counts = new Map<number, number>();
  const add = (cluster: number) => counts.set(cluster, (counts.get(cluster) ?? 0) + delta);
  for (let i = 0; i < l1.length / 8; i++) {
    const l2 = entryOffset(l1.readUInt32BE(i * 8), l1.readUInt32BE(i * 8 + 4));
    if (l2 === 0) continue;
    add(l2 / cs);
    const table = await img.loadL2(l2);
    for (let j = 0; j < g.l2Entries; j++) {
      const hi = table.readUInt32BE(j * g.l2EntrySize);
      const lo = table.readUInt32BE(j * g.l2EntrySize + 4);
      if (hi & L2_COMPRESSED_HI) {
        const r = compressedRange(hi, lo, g);
        for (let c = Math.floor(r.offset / cs); c <= Math.floor((r.offset + r.length - 1) / cs); c++) add(c);
      } else {
        const host = entryOffset(hi, lo);
        if (host !== 0) add(host / cs);
      }
    }
  }
  for (const [cluster, d] of counts) await img.adjustRefcounts(cluster, 1, d);
}

async function writeTable(img: Qcow2Image, entries: SnapshotEntry[]): Promise<void> {
  const cs = img.clusterSize;
  const h = img.header;
  const oldOffset = h.snapshotsOffset;
  const old = await readSnapshotTable(img.file, oldOffset, h.nbSnapshots, cs);
  const bytes = serializeSnapshotTable(entries);
  let offset = 0;
  if (bytes.length > 0) {
    offset = await img.allocate(Math.ceil(bytes.length / cs));
    await img.file.writeAt(offset, bytes);
  }
  // nb_snapshots and snapshots_offset are adjacent (bytes 60..71): one write switches tables.
  const fields = Buffer.alloc(12);
  fields.writeUInt32BE(entries.length, 0);
  writeU64(fields, 4, offset);
  await img.file.writeAt(60, fields);
  h.nbSnapshots = entries.length;
  h.snapshotsOffset = offset;
  // The old table is freed only once the header no longer points at it.
  if (old.byteLength > 0) await img.adjustRefcounts(oldOffset / cs, Math.ceil(old.byteLength / cs), -1);
}

function findSnapshot(entries: SnapshotEntry[], idOrName: string, path: string): SnapshotEntry {
  const found = entries.find((e) => e.id === idOrName) ?? entries.find((e) => e.name === idOrName);
  if (!found)
    throw new NubesError('NotFound', `${path}: snapshot ${JSON.stringify(idOrName)} not found`, {
      details: { file: path, snapshot: idOrName },
    });
  return found;
}

/**
 * Creates an internal snapshot (`qemu-img snapshot -c`): copies the active L1 table, takes one
 * more reference on everything it reaches, and clears COPIED so the next write copies first.
 */
export async function createSnapshot(
  img: Qcow2Image,
  name: string,
  now = Date.now(),
): Promise<SnapshotEntry> {
  const entries = await listSnapshots(img);
  if (entries.some((e) => e.name === name))
    throw new NubesError('Conflict', `${img.path}: a snapshot named ${JSON.stringify(name)} exists`, {
      details: { file: img.path },
    });
  const cs = img.clusterSize;
  const l1 = img.l1Table;
  const l1Bytes = l1.length;
  const l1Offset = l1Bytes > 0 ? await img.allocate(Math.ceil(l1Bytes / cs)) : 0;
  if (l1Bytes > 0) await img.file.writeAt(l1Offset, l1);
  await adjustTree(img, l1, 1);
  await fixCopiedFlags(img);
  const nextId = entries.reduce((max, e) => Math.max(max, Number(e.id) || 0), 0) + 1;
  const entry: SnapshotEntry = {
    id: String(nextId),
    name,
    l1TableOffset: l1Offset,
    l1Size: img.header.l1Size,
    dateSec: Math.floor(now / 1000),
    dateNsec: (now % 1000) * 1e6,
    vmClockNsec: 0,
    vmStateSize: 0,
    diskSize: img.virtualSize,
    icount: undefined,
    extraTail: Buffer.alloc(0),
  };
  await writeTable(img, [...entries, entry]);
  return entry;
}

/** Deletes an internal snapshot by id or name (`qemu-img snapshot -d`), freeing what only it used. */
export async function deleteSnapshot(img: Qcow2Image, idOrName: string): Promise<void> {
  const entries = await listSnapshots(img);
  const target = findSnapshot(entries, idOrName, img.path);
  await writeTable(
    img,
    entries.filter((e) => e !== target),
  );
  const l1 = await img.file.readExact(target.l1TableOffset, target.l1Size * 8, 'snapshot L1 table');
  await adjustTree(img, l1, -1);
  if (target.l1Size > 0)
    await img.adjustRefcounts(
      target.l1TableOffset / img.clusterSize,
      Math.ceil((target.l1Size * 8) / img.clusterSize),
      -1,
    );
  img.dropCaches();
  await fixCopiedFlags(img);
}

/** Reverts the active image to a snapshot (`qemu-img snapshot -a`). */
export async function applySnapshot(img: Qcow2Image, idOrName: string): Promise<void> {
  const entries = await listSnapshots(img);
  const target = findSnapshot(entries, idOrName, img.path);
  if (target.l1Size > img.header.l1Size) await img.grow(target.diskSize ?? img.virtualSize);
  const snapL1 = await img.file.readExact(target.l1TableOffset, target.l1Size * 8, 'snapshot L1 table');
  const oldL1 = img.l1Table;
  await adjustTree(img, snapL1, 1);
  const active = Buffer.alloc(img.header.l1Size * 8);
  snapL1.copy(active);
  for (let i = 0; i < active.length / 8; i++)
    active.writeUInt32BE((active.readUInt32BE(i * 8) & ~L2_COPIED_HI) >>> 0, i * 8);
  await img.file.writeAt(img.header.l1TableOffset, active);
  img.replaceL1(active, img.header.l1TableOffset, img.header.l1Size);
  await adjustTree(img, oldL1, -1);
  if (target.diskSize !== undefined && target.diskSize !== img.virtualSize) {
    const sizeField = Buffer.alloc(8);
    writeU64(sizeField, 0, target.diskSize);
    await img.file.writeAt(24, sizeField);
    img.header.size = target.diskSize;
  }
  img.dropCaches();
  await fixCopiedFlags(img);
}
