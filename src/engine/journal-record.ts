// Byte layout of pool journal records. One record holds one clone's map changes from one flush, and
// optionally the 4 KiB payloads of small flushes, under a single CRC32C: a torn record is discarded
// whole. Numbers are little-endian; LBAs and block numbers are float64 (exact below 2^53).
import { crc32c } from '@node-rs/crc32';
import { BLOCK_SIZE_BYTES } from './block-size.ts';

export const RECORD_HEADER_BYTES = 56;
export const ENTRY_BYTES = 24;
export const RECORD_TYPE_MAP = 1;
export const RECORD_TYPE_RESET = 2;
/**
 * Fills the gap between a commit's last record and the next boundary of a direct write (direct-io.ts):
 * it keeps the log a gapless chain of records. No clone's, skipped by replay.
 */
export const RECORD_TYPE_PAD = 3;
/**
 * Flag (header bytes 42-43, zero in records written before it existed): the clone's data file was
 * fdatasync'ed before this record was written, so it holds every block at least as new as any payload
 * of an earlier record; recovery must not redo those older payloads over it.
 */
export const RECORD_FLAG_DATA_SYNCED = 1;

/** An entry maps [lba, lba+n) to value: a block number (consecutive for the run), MAP_ZERO or MAP_INHERIT. */
export interface MapEntry {
  lba: number;
  n: number;
  value: number;
}

export interface DecodedRecord {
  type: number;
  flags: number;
  epoch: number;
  lsn: number;
  cloneId: string;
  entries: MapEntry[];
  /** Payload blocks belong to the last payloads.length entries (each n = 1). */
  payloads: Buffer[];
  length: number;
}

// Encoded ids, kept because every flush of a clone encodes its id again (a regex and a hex parse cost
// about 1 µs). Bounded: cleared when it reaches ID_CACHE_LIMIT entries.
const ID_CACHE_LIMIT = 65_536;
const idCache = new Map<string, Buffer>();

export function uuidToBytes(id: string, out: Buffer, offset: number): void {
  let bytes = idCache.get(id);
  if (!bytes) {
    bytes = Buffer.alloc(16);
    bytes.write(id.replace(/-/g, ''), 0, 16, 'hex');
    if (idCache.size >= ID_CACHE_LIMIT) idCache.clear();
    idCache.set(id, bytes);
  }
  bytes.copy(out, offset);
}

/** The 16 bytes of a UUID string, as records store it (a clone keeps its own; see uuidToBytes). */
export function uuidBytes(id: string): Buffer {
  const out = Buffer.alloc(16);
  uuidToBytes(id, out, 0);
  return out;
}

/** Shared zero padding (a record's padding is at most 7 bytes). */
const PAD = Buffer.alloc(8);

export function bytesToUuid(buf: Buffer, offset: number): string {
  const h = buf.toString('hex', offset, offset + 16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}

/**
 * Encodes a record as a gather list: [header+entries, ...payload views, padding]. The payload views are
 * not copied. The epoch and CRC are filled in by sealRecord when the journal knows which file (epoch)
 * the record goes to. Payload blocks belong to the last payloads.length entries.
 */
export function encodeRecord(
  type: number,
  lsn: number,
  cloneId: string,
  entries: MapEntry[],
  payloads: Buffer[],
  flags = 0,
): { buffers: Buffer[]; length: number } {
  const buffers: Buffer[] = [PAD.subarray(0, 0), ...payloads];
  const length = encodeRecordInto(buffers, type, lsn, uuidBytes(cloneId), entries, payloads.length, flags);
  return { buffers, length };
}

/**
 * encodeRecord for the flush path, without intermediate arrays: `buffers` holds a placeholder at index 0
 * (replaced by the header) followed by the last `payloadCount` entries' payload blocks; padding is pushed
 * when needed. Returns the record's length.
 */
export function encodeRecordInto(
  buffers: Buffer[],
  type: number,
  lsn: number,
  idBytes: Buffer,
  entries: readonly MapEntry[],
  payloadCount: number,
  flags = 0,
): number {
  const headLength = RECORD_HEADER_BYTES + entries.length * ENTRY_BYTES;
  const rawLength = headLength + payloadCount * BLOCK_SIZE_BYTES;
  const length = pad8(rawLength);
  // allocUnsafe takes small headers from Node's pool instead of a new zeroed ArrayBuffer each; every
  // byte is written below (the 56-byte header zeroed first, then every entry).
  const head = Buffer.allocUnsafe(headLength);
  head.fill(0, 0, RECORD_HEADER_BYTES);
  head.writeUInt32LE(length, 4);
  head.writeDoubleLE(lsn, 16);
  idBytes.copy(head, 24);
  head.writeUInt16LE(type, 40);
  head.writeUInt16LE(flags, 42);
  head.writeUInt32LE(entries.length, 44);
  head.writeUInt32LE(payloadCount, 48);
  let off = RECORD_HEADER_BYTES;
  for (const e of entries) {
    head.writeDoubleLE(e.lba, off);
    head.writeDoubleLE(e.n, off + 8);
    head.writeDoubleLE(e.value, off + 16);
    off += ENTRY_BYTES;
  }
  buffers[0] = head;
  if (length > rawLength) buffers.push(PAD.subarray(0, length - rawLength));
  return length;
}

/** Stamps the epoch of the journal file the record is written to and its CRC over everything but the CRC. */
export function sealRecord(buffers: Buffer[], epoch: number): void {
  const head = buffers[0];
  head.writeDoubleLE(epoch, 8);
  let crc = crc32c(head.subarray(4));
  for (let i = 1; i < buffers.length; i++) crc = crc32c(buffers[i], crc);
  head.writeUInt32LE(crc >>> 0, 0);
}

/** sealRecord for a record already copied whole into `buf` at `offset`: one CRC over contiguous bytes. */
export function sealRecordAt(buf: Buffer, offset: number, length: number, epoch: number): void {
  buf.writeDoubleLE(epoch, offset + 8);
  buf.writeUInt32LE(crc32c(buf.subarray(offset + 4, offset + length)) >>> 0, offset);
}

/** Writes a sealed padding record of `length` bytes (a multiple of 8, at least RECORD_HEADER_BYTES). */
export function writePadRecord(buf: Buffer, offset: number, length: number, epoch: number): void {
  buf.fill(0, offset, offset + length);
  buf.writeUInt32LE(length, offset + 4);
  buf.writeUInt16LE(RECORD_TYPE_PAD, offset + 40);
  sealRecordAt(buf, offset, length, epoch);
}

/**
 * Decodes the record at `offset` of `buf` (a journal read into memory). Returns undefined for anything
 * that is not a complete, intact record of `epoch`: the end of the log.
 */
export function decodeRecord(buf: Buffer, offset: number, epoch: number): DecodedRecord | undefined {
  if (offset + RECORD_HEADER_BYTES > buf.length) return undefined;
  const length = buf.readUInt32LE(offset + 4);
  if (length < RECORD_HEADER_BYTES || length % 8 !== 0 || offset + length > buf.length) return undefined;
  if (buf.readDoubleLE(offset + 8) !== epoch) return undefined;
  const entryCount = buf.readUInt32LE(offset + 44);
  const payloadCount = buf.readUInt32LE(offset + 48);
  if (payloadCount > entryCount) return undefined;
  if (RECORD_HEADER_BYTES + entryCount * ENTRY_BYTES + payloadCount * BLOCK_SIZE_BYTES > length) return undefined;
  const crc = crc32c(buf.subarray(offset + 4, offset + length)) >>> 0;
  if (crc !== buf.readUInt32LE(offset)) return undefined;
  const entries: MapEntry[] = [];
  let off = offset + RECORD_HEADER_BYTES;
  for (let i = 0; i < entryCount; i++) {
    entries.push({ lba: buf.readDoubleLE(off), n: buf.readDoubleLE(off + 8), value: buf.readDoubleLE(off + 16) });
    off += ENTRY_BYTES;
  }
  const payloads: Buffer[] = [];
  for (let i = 0; i < payloadCount; i++) {
    payloads.push(buf.subarray(off, off + BLOCK_SIZE_BYTES));
    off += BLOCK_SIZE_BYTES;
  }
  return {
    type: buf.readUInt16LE(offset + 40),
    flags: buf.readUInt16LE(offset + 42),
    epoch,
    lsn: buf.readDoubleLE(offset + 16),
    cloneId: bytesToUuid(buf, offset + 24),
    entries,
    payloads,
    length,
  };
}
