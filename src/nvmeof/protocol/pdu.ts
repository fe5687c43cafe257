// Encoders for the PDUs a controller sends. Payloads are never copied. The small PDUs have two forms:
// encodeX() returns a fresh buffer; writeX(b, off, …) writes the same bytes into a caller's buffer (the
// TCP queue's output arena: no allocation per PDU, and consecutive PDUs leave as one chunk).
import { crc32c } from './digest.ts';
import { DATA_PDU_HLEN, DIGEST_BYTES, IC_PDU_BYTES, PDU_FLAG, PDU_TYPE } from './constants.ts';

export interface Digests {
  hdgst: boolean;
  ddgst: boolean;
}

export function encodeIcResp(options: { cpda: number; hdgst: boolean; ddgst: boolean; maxh2cdata: number }): Buffer {
  const b = Buffer.alloc(IC_PDU_BYTES);
  b[0] = PDU_TYPE.ICResp;
  b[2] = IC_PDU_BYTES; // HLEN
  b.writeUInt32LE(IC_PDU_BYTES, 4); // PLEN
  b.writeUInt16LE(0, 8); // PFV
  b[10] = options.cpda;
  b[11] = (options.hdgst ? 1 : 0) | (options.ddgst ? 2 : 0);
  b.writeUInt32LE(options.maxh2cdata, 12);
  return b;
}

function u16(b: Buffer, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}

function u32(b: Buffer, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

/** Bytes of a CapsuleResp, an R2T, or a C2HData header before its padding. */
export function smallPduBytes(d: Digests): number {
  return DATA_PDU_HLEN + (d.hdgst ? DIGEST_BYTES : 0);
}

/** The common header of a 24-byte controller-to-host PDU (HLEN 24; HDGSTF when header digests are on). */
function writeCommonHeader(b: Buffer, off: number, type: number, flags: number, pdo: number, plen: number, d: Digests): void {
  b[off] = type;
  b[off + 1] = flags | (d.hdgst ? PDU_FLAG.HDGSTF : 0);
  b[off + 2] = DATA_PDU_HLEN;
  b[off + 3] = pdo;
  u32(b, off + 4, plen);
}

function sealAt(b: Buffer, off: number, d: Digests): void {
  if (d.hdgst) u32(b, off + DATA_PDU_HLEN, crc32c(b.subarray(off, off + DATA_PDU_HLEN)));
}

/** Writes a CapsuleResp at b[off]; returns its length. Every byte is written. */
export function writeCapsuleResp(b: Buffer, off: number, dw0: number, dw1: number, sqhd: number, sqid: number, cid: number, status: number, d: Digests): number {
  const len = smallPduBytes(d);
  writeCommonHeader(b, off, PDU_TYPE.CapsuleResp, 0, 0, len, d);
  u32(b, off + 8, dw0);
  u32(b, off + 12, dw1);
  u16(b, off + 16, sqhd);
  u16(b, off + 18, sqid);
  u16(b, off + 20, cid);
  u16(b, off + 22, status);
  sealAt(b, off, d);
  return len;
}

/** CapsuleResp carrying a CQE. */
export function encodeCapsuleResp(cqe: { dw0: number; dw1: number; sqhd: number; sqid: number; cid: number; status: number }, d: Digests): Buffer {
  const b = Buffer.allocUnsafe(smallPduBytes(d));
  writeCapsuleResp(b, 0, cqe.dw0, cqe.dw1, cqe.sqhd, cqe.sqid, cqe.cid, cqe.status, d);
  return b;
}

/**
 * C2HData header for `datal` bytes at offset `datao` of the command's data. The caller sends header,
 * padding (if HPDA asks for it), data views and, with data digest, the digest buffer from encodeDdgst.
 */
export function encodeC2HDataHeader(cid: number, datao: number, datal: number, last: boolean, success: boolean, d: Digests, pad: number): Buffer {
  const b = Buffer.allocUnsafe(smallPduBytes(d) + pad);
  writeC2HDataHeader(b, 0, cid, datao, datal, last, success, d, pad);
  return b;
}

/** encodeC2HDataHeader written at b[off] (header, digest, zero padding); returns its length. */
export function writeC2HDataHeader(b: Buffer, off: number, cid: number, datao: number, datal: number, last: boolean, success: boolean, d: Digests, pad: number): number {
  const hl = smallPduBytes(d);
  const pdo = hl + pad;
  const plen = pdo + datal + (d.ddgst ? DIGEST_BYTES : 0);
  const flags = (last ? PDU_FLAG.LAST_PDU : 0) | (success ? PDU_FLAG.SUCCESS : 0) | (d.ddgst ? PDU_FLAG.DDGSTF : 0);
  writeCommonHeader(b, off, PDU_TYPE.C2HData, flags, pdo, plen, d);
  u16(b, off + 8, cid);
  u16(b, off + 10, 0);
  u32(b, off + 12, datao);
  u32(b, off + 16, datal);
  u32(b, off + 20, 0);
  sealAt(b, off, d);
  if (pad > 0) b.fill(0, off + hl, off + hl + pad);
  return hl + pad;
}

export function encodeR2T(cid: number, ttag: number, r2to: number, r2tl: number, d: Digests): Buffer {
  const b = Buffer.allocUnsafe(smallPduBytes(d));
  writeR2T(b, 0, cid, ttag, r2to, r2tl, d);
  return b;
}

/** encodeR2T written at b[off]; returns its length. */
export function writeR2T(b: Buffer, off: number, cid: number, ttag: number, r2to: number, r2tl: number, d: Digests): number {
  const len = smallPduBytes(d);
  writeCommonHeader(b, off, PDU_TYPE.R2T, 0, 0, len, d);
  u16(b, off + 8, cid);
  u16(b, off + 10, ttag);
  u32(b, off + 12, r2to);
  u32(b, off + 16, r2tl);
  u32(b, off + 20, 0);
  sealAt(b, off, d);
  return len;
}

/** C2HTermReq: never digested; carries up to 128 bytes of the offending PDU header. */
export function encodeC2HTermReq(fes: number, fei: number, offending: Buffer | undefined): Buffer {
  const copy = offending ? offending.subarray(0, Math.min(offending.length, 128)) : Buffer.alloc(0);
  const b = Buffer.alloc(DATA_PDU_HLEN + copy.length);
  b[0] = 0x03;
  b[2] = DATA_PDU_HLEN;
  b.writeUInt32LE(b.length, 4);
  b.writeUInt16LE(fes, 8);
  b.writeUInt32LE(fei >>> 0, 10);
  copy.copy(b, DATA_PDU_HLEN);
  return b;
}

export function encodeDigest(crc: number): Buffer {
  const b = Buffer.allocUnsafe(DIGEST_BYTES);
  b.writeUInt32LE(crc >>> 0, 0);
  return b;
}
