// A clone's map checkpoint: <clone>/map, written to map.tmp, synced and renamed, so it is always either
// the old or the new one. Everything after the magic is covered by a CRC32C; a damaged file fails the
// clone instead of serving wrong data.
import { crc32c } from '@node-rs/crc32';
import { readFile, rename, writeFile } from 'node:fs/promises';
import fs from 'node:fs';
import { BlockMap } from './block-map.ts';
import { fdatasync, fsyncDir } from './fs-callbacks.ts';
import path from 'node:path';

const MAGIC = 'THKMAP01';
const HEADER_BYTES = 48;

export interface Checkpoint {
  lsn: number;
  dataBlocks: number;
  map: BlockMap;
}

export function encodeCheckpoint(lsn: number, dataBlocks: number, map: BlockMap): Buffer {
  const owned = map.owned.size;
  const zero = map.zero.size;
  const buf = Buffer.allocUnsafe(HEADER_BYTES + owned * 16 + zero * 16);
  buf.write(MAGIC, 0, 'latin1');
  buf.writeDoubleLE(lsn, 16);
  buf.writeDoubleLE(dataBlocks, 24);
  buf.writeUInt32LE(owned, 32);
  buf.writeUInt32LE(zero, 36);
  buf.writeUInt32LE(0, 12);
  buf.writeUInt32LE(0, 40);
  buf.writeUInt32LE(0, 44);
  let off = HEADER_BYTES;
  for (const [lba, p] of map.owned) {
    buf.writeDoubleLE(lba, off);
    buf.writeDoubleLE(p, off + 8);
    off += 16;
  }
  for (const [s, e] of map.zero.intervals()) {
    buf.writeDoubleLE(s, off);
    buf.writeDoubleLE(e, off + 8);
    off += 16;
  }
  buf.writeUInt32LE(0, 8);
  buf.writeUInt32LE(crc32c(buf.subarray(12)) >>> 0, 8);
  return buf;
}

export class CheckpointDamagedError extends Error {}

export function decodeCheckpoint(buf: Buffer): Checkpoint {
  if (buf.length < HEADER_BYTES || buf.toString('latin1', 0, 8) !== MAGIC) throw new CheckpointDamagedError('map checkpoint has no valid header');
  if ((crc32c(buf.subarray(12)) >>> 0) !== buf.readUInt32LE(8)) throw new CheckpointDamagedError('map checkpoint checksum mismatch');
  const owned = buf.readUInt32LE(32);
  const zero = buf.readUInt32LE(36);
  if (buf.length !== HEADER_BYTES + owned * 16 + zero * 16) throw new CheckpointDamagedError('map checkpoint has the wrong length');
  const map = new BlockMap();
  let off = HEADER_BYTES;
  for (let i = 0; i < owned; i++) {
    map.owned.set(buf.readDoubleLE(off), buf.readDoubleLE(off + 8));
    off += 16;
  }
  for (let i = 0; i < zero; i++) {
    map.zero.add(buf.readDoubleLE(off), buf.readDoubleLE(off + 8));
    off += 16;
  }
  return { lsn: buf.readDoubleLE(16), dataBlocks: buf.readDoubleLE(24), map };
}

export async function writeCheckpoint(dir: string, content: Buffer): Promise<void> {
  await fs.promises.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, 'map.tmp');
  await writeFile(tmp, content);
  const fd = fs.openSync(tmp, 'r');
  try {
    await fdatasync(fd);
  } finally {
    fs.closeSync(fd);
  }
  await rename(tmp, path.join(dir, 'map'));
  await fsyncDir(dir);
}

export async function readCheckpoint(dir: string): Promise<Checkpoint | undefined> {
  let buf: Buffer;
  try {
    buf = await readFile(path.join(dir, 'map'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return decodeCheckpoint(buf);
}
