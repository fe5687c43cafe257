// Encoders for the PDUs a controller sends. Headers are small and built fresh; payloads are never copied.
import { crc32c } from './digest.ts';
import { CQE_BYTES, DATA_PDU_HLEN, DIGEST_BYTES, IC_PDU_BYTES, PDU_FLAG, PDU_TYPE } from './constants.ts';

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

function header(type: number, flags: number, pdo: number, plen: number, d: Digests): Buffer {
  const b = Buffer.alloc(DATA_PDU_HLEN + (d.hdgst ? DIGEST_BYTES : 0));
  b[0] = type;
  b[1] = flags | (d.hdgst ? PDU_FLAG.HDGSTF : 0);
  b[2] = DATA_PDU_HLEN;
  b[3] = pdo;
  b.writeUInt32LE(plen, 4);
  return b;
}

function sealHeader(b: Buffer, d: Digests): Buffer {
  if (d.hdgst) b.writeUInt32LE(crc32c(b.subarray(0, DATA_PDU_HLEN)), DATA_PDU_HLEN);
  return b;
}

/** CapsuleResp carrying a CQE. */
export function encodeCapsuleResp(cqe: { dw0: number; dw1: number; sqhd: number; sqid: number; cid: number; status: number }, d: Digests): Buffer {
  const b = header(PDU_TYPE.CapsuleResp, 0, 0, DATA_PDU_HLEN + (d.hdgst ? DIGEST_BYTES : 0), d);
  b.writeUInt32LE(cqe.dw0 >>> 0, 8);
  b.writeUInt32LE(cqe.dw1 >>> 0, 12);
  b.writeUInt16LE(cqe.sqhd & 0xffff, 16);
  b.writeUInt16LE(cqe.sqid & 0xffff, 18);
  b.writeUInt16LE(cqe.cid & 0xffff, 20);
  b.writeUInt16LE(cqe.status & 0xffff, 22);
  void CQE_BYTES;
  return sealHeader(b, d);
}

/**
 * C2HData header for `datal` bytes at offset `datao` of the command's data. The caller sends header,
 * padding (if HPDA asks for it), data views and, with data digest, the digest buffer from encodeDdgst.
 */
export function encodeC2HDataHeader(cid: number, datao: number, datal: number, last: boolean, success: boolean, d: Digests, pad: number): Buffer {
  const hl = DATA_PDU_HLEN + (d.hdgst ? DIGEST_BYTES : 0);
  const pdo = hl + pad;
  const plen = pdo + datal + (d.ddgst ? DIGEST_BYTES : 0);
  const flags = (last ? PDU_FLAG.LAST_PDU : 0) | (success ? PDU_FLAG.SUCCESS : 0) | (d.ddgst ? PDU_FLAG.DDGSTF : 0);
  const b = Buffer.alloc(hl + pad);
  b[0] = PDU_TYPE.C2HData;
  b[1] = flags | (d.hdgst ? PDU_FLAG.HDGSTF : 0);
  b[2] = DATA_PDU_HLEN;
  b[3] = pdo;
  b.writeUInt32LE(plen, 4);
  b.writeUInt16LE(cid, 8);
  b.writeUInt32LE(datao, 12);
  b.writeUInt32LE(datal, 16);
  if (d.hdgst) b.writeUInt32LE(crc32c(b.subarray(0, DATA_PDU_HLEN)), DATA_PDU_HLEN);
  return b;
}

export function encodeR2T(cid: number, ttag: number, r2to: number, r2tl: number, d: Digests): Buffer {
  const b = header(PDU_TYPE.R2T, 0, 0, DATA_PDU_HLEN + (d.hdgst ? DIGEST_BYTES : 0), d);
  b.writeUInt16LE(cid, 8);
  b.writeUInt16LE(ttag, 10);
  b.writeUInt32LE(r2to, 12);
  b.writeUInt32LE(r2tl, 16);
  return sealHeader(b, d);
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
