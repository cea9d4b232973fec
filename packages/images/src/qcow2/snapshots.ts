import { badImage } from '../errors.js';
import type { HostFile } from '../io/host-file.js';
import { readU64, writeU64 } from './format.js';

/** QEMU's limit on internal snapshots. */
export const MAX_SNAPSHOTS = 65536;

/** One entry of the internal snapshot table. */
export interface SnapshotEntry {
  /** Unique id string (QEMU numbers them "1", "2", ...). */
  id: string;
  /** Snapshot name. */
  name: string;
  l1TableOffset: number;
  l1Size: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  vmStateSize: number;
  /** Virtual disk size when the snapshot was taken (v3 extra data). */
  diskSize: number | undefined;
  /** Instruction count (extra data at byte 56), or undefined. */
  icount: number | undefined;
  /** Extra data this engine does not interpret, kept when the table is rewritten. */
  extraTail: Buffer;
}

/** Reads the snapshot table the header points to, validating every entry against the file. */
export async function readSnapshotTable(
  file: HostFile,
  offset: number,
  count: number,
  clusterSize: number,
): Promise<{ entries: SnapshotEntry[]; byteLength: number }> {
  if (count === 0) return { entries: [], byteLength: 0 };
  if (count > MAX_SNAPSHOTS)
    throw badImage(file.path, 'bad-snapshot-table', `${count} snapshots is more than ${MAX_SNAPSHOTS}`);
  if (offset % clusterSize !== 0)
    throw badImage(file.path, 'bad-snapshot-table', 'snapshot table is not cluster aligned');
  const entries: SnapshotEntry[] = [];
  let at = offset;
  for (let i = 0; i < count; i++) {
    const fixed = await file.readExact(at, 40, 'snapshot table');
    const idLen = fixed.readUInt16BE(12);
    const nameLen = fixed.readUInt16BE(14);
    const extraLen = fixed.readUInt32BE(36);
    if (extraLen > 1024)
      throw badImage(file.path, 'bad-snapshot-table', `snapshot extra data of ${extraLen} bytes`);
    const rest = await file.readExact(at + 40, extraLen + idLen + nameLen, 'snapshot table');
    const extra = rest.subarray(0, extraLen);
    const l1Size = fixed.readUInt32BE(8);
    const entry: SnapshotEntry = {
      l1TableOffset: readU64(fixed, 0, file.path, 'snapshot L1 offset'),
      l1Size,
      dateSec: fixed.readUInt32BE(16),
      dateNsec: fixed.readUInt32BE(20),
      vmClockNsec: readU64(fixed, 24, file.path, 'vm clock'),
      vmStateSize: extraLen >= 8 ? readU64(extra, 0, file.path, 'vm state size') : fixed.readUInt32BE(32),
      diskSize: extraLen >= 16 ? readU64(extra, 8, file.path, 'snapshot disk size') : undefined,
      icount: extraLen >= 24 ? Number(extra.readBigInt64BE(16)) : undefined,
      extraTail: Buffer.from(extra.subarray(Math.min(extraLen, 24))),
      id: rest.toString('utf8', extraLen, extraLen + idLen),
      name: rest.toString('utf8', extraLen + idLen, extraLen + idLen + nameLen),
    };
    if (entry.l1TableOffset % clusterSize !== 0 || entry.l1TableOffset + l1Size * 8 > file.size)
      throw badImage(file.path, 'bad-snapshot-table', `snapshot ${entry.id} has an invalid L1 table`);
    entries.push(entry);
    at += 40 + extraLen + idLen + nameLen;
    at = Math.ceil(at / 8) * 8;
  }
  return { entries, byteLength: at - offset };
}

/** Serializes a snapshot table (v3 layout: 24 bytes of extra data, as QEMU 7.2 writes). */
export function serializeSnapshotTable(entries: SnapshotEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const id = Buffer.from(e.id);
    const name = Buffer.from(e.name);
    const extraLen = 24 + e.extraTail.length;
    const len = Math.ceil((40 + extraLen + id.length + name.length) / 8) * 8;
    const b = Buffer.alloc(len);
    writeU64(b, 0, e.l1TableOffset);
    b.writeUInt32BE(e.l1Size, 8);
    b.writeUInt16BE(id.length, 12);
    b.writeUInt16BE(name.length, 14);
    b.writeUInt32BE(e.dateSec, 16);
    b.writeUInt32BE(e.dateNsec, 20);
    writeU64(b, 24, e.vmClockNsec);
    b.writeUInt32BE(Math.min(e.vmStateSize, 0xffffffff), 32);
    b.writeUInt32BE(extraLen, 36);
    writeU64(b, 40, e.vmStateSize);
    writeU64(b, 48, e.diskSize ?? 0);
    b.writeBigInt64BE(BigInt(e.icount ?? -1), 56);
    e.extraTail.copy(b, 64);
    id.copy(b, 40 + extraLen);
    name.copy(b, 40 + extraLen + id.length);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/** A snapshot as listed by `info` and `snapshot -l`. */
export interface SnapshotInfo {
  id: string;
  name: string;
  /** Size of the saved VM state (0 for disk-only snapshots). */
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  /** Virtual disk size recorded with the snapshot. */
  diskSize: number | undefined;
}
