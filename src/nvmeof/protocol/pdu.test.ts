import { describe, expect, it } from 'vitest';
import { PduParser } from '../../../test/fixtures/pdu-builder.ts';
import { DATA_PDU_HLEN, FES, PDU_FLAG, PDU_TYPE } from './constants.ts';
import { crc32c } from './digest.ts';
import { encodeC2HDataHeader, encodeC2HTermReq, encodeCapsuleResp, encodeDigest, encodeIcResp, encodeR2T } from './pdu.ts';
import { Sqe } from './sqe.ts';
import { STATUS } from './status.ts';

describe('PDUs the controller sends', () => {
  it('ICResp: 128 bytes, PFV 0, CPDA, exact digest echo, MAXH2CDATA not 0-based', () => {
    const b = encodeIcResp({ cpda: 0, hdgst: true, ddgst: false, maxh2cdata: 131072 });
    expect(b.length).toBe(128);
    expect([b[0], b[1], b[2], b[3], b.readUInt32LE(4)]).toEqual([PDU_TYPE.ICResp, 0, 128, 0, 128]);
    expect(b.readUInt16LE(8)).toBe(0);
    expect(b[10]).toBe(0);
    expect(b[11]).toBe(1);
    expect(b.readUInt32LE(12)).toBe(131072);
    expect(b.subarray(16).every((x) => x === 0)).toBe(true);
  });

  for (const hdgst of [false, true]) {
    it(`CapsuleResp: HLEN 24, CQE at 8..23, status untouched (hdgst ${hdgst})`, () => {
      const b = encodeCapsuleResp({ dw0: 0xdeadbeef, dw1: 7, sqhd: 3, sqid: 2, cid: 0xabcd, status: STATUS.LbaOutOfRange }, { hdgst, ddgst: true });
      expect(b.length).toBe(24 + (hdgst ? 4 : 0));
      expect(b[1]).toBe(hdgst ? PDU_FLAG.HDGSTF : 0);
      const p = new PduParser();
      p.hdgst = hdgst;
      const [pdu] = p.push(b);
      expect(pdu.cqe).toEqual({ dw0: 0xdeadbeef, dw1: 7, sqhd: 3, sqid: 2, cid: 0xabcd, status: STATUS.LbaOutOfRange });
      if (hdgst) expect(b.readUInt32LE(24)).toBe(crc32c(b.subarray(0, 24)));
    });
  }

  it('C2HData header: PDO after header digest and HPDA padding, LAST_PDU, DDGSTF, PLEN with digest', () => {
    const h = encodeC2HDataHeader(9, 4096, 512, true, false, { hdgst: true, ddgst: true }, 4);
    expect(h.length).toBe(24 + 4 + 4);
    expect(h[0]).toBe(PDU_TYPE.C2HData);
    expect(h[1]).toBe(PDU_FLAG.HDGSTF | PDU_FLAG.DDGSTF | PDU_FLAG.LAST_PDU);
    expect(h[2]).toBe(DATA_PDU_HLEN);
    expect(h[3]).toBe(32);
    expect(h.readUInt32LE(4)).toBe(32 + 512 + 4);
    expect([h.readUInt16LE(8), h.readUInt16LE(10), h.readUInt32LE(12), h.readUInt32LE(16), h.readUInt32LE(20)]).toEqual([9, 0, 4096, 512, 0]);
    expect(h.readUInt32LE(24)).toBe(crc32c(h.subarray(0, 24)));
    const data = Buffer.alloc(512, 0x42);
    const p = new PduParser();
    p.hdgst = true;
    p.ddgst = true;
    const [pdu] = p.push(Buffer.concat([h, data, encodeDigest(crc32c(data))]));
    expect(pdu.c2h).toEqual({ cid: 9, datao: 4096, datal: 512 });
    expect(pdu.data!.equals(data)).toBe(true);
  });

  it('C2HData sets LAST_PDU and SUCCESS as asked, PDO 24 without digests or padding', () => {
    const h = encodeC2HDataHeader(1, 0, 4, true, true, { hdgst: false, ddgst: false }, 0);
    expect(h[1]).toBe(PDU_FLAG.LAST_PDU | PDU_FLAG.SUCCESS);
    expect(h[3]).toBe(24);
  });

  it('R2T: CCCID, TTAG, R2TO, R2TL', () => {
    const b = encodeR2T(5, 77, 8192, 65536, { hdgst: false, ddgst: false });
    expect(b.length).toBe(24);
    const [pdu] = new PduParser().push(b);
    expect(pdu.r2t).toEqual({ cid: 5, ttag: 77, r2to: 8192, r2tl: 65536 });
  });

  it('C2HTermReq: HLEN 24, FES at 8, FEI at 10, at most 128 bytes of the offending header, never digested', () => {
    const offending = Buffer.alloc(200, 0x11);
    const b = encodeC2HTermReq(FES.HeaderDigestError, 0x01020304, offending);
    expect(b.length).toBe(24 + 128);
    expect([b[0], b[1], b[2], b[3], b.readUInt32LE(4)]).toEqual([PDU_TYPE.C2HTermReq, 0, 24, 0, 152]);
    expect(b.readUInt16LE(8)).toBe(3);
    expect(b.readUInt32LE(10)).toBe(0x01020304);
    expect(b.subarray(24).equals(offending.subarray(0, 128))).toBe(true);
    expect(encodeC2HTermReq(FES.PduSequenceError, 0, undefined).length).toBe(24);
  });
});

describe('SQE view', () => {
  it('decodes CID, NSID, SGL, SLBA beyond 2^32, 1-based NLB and FUA', () => {
    const b = Buffer.alloc(64);
    b[0] = 0x01;
    b[1] = 0x40;
    b.writeUInt16LE(0xbeef, 2);
    b.writeUInt32LE(0xfffffffe, 4);
    b.writeBigUInt64LE(0x10n, 24);
    b.writeUInt32LE(8192, 32);
    b[39] = 0x5a;
    b.writeUInt32LE(5, 40);
    b.writeUInt32LE(2, 44);
    b.writeUInt32LE((1 << 30) | 1, 48);
    const s = new Sqe(b);
    expect([s.opc, s.psdt, s.fuse, s.cid, s.nsid]).toEqual([1, 1, 0, 0xbeef, 0xfffffffe]);
    expect([s.sglAddress, s.sglLength, s.sglType]).toEqual([0x10n, 8192, 0x5a]);
    expect(s.slba).toBe(2 * 2 ** 32 + 5);
    expect(s.nlb).toBe(2);
    expect(s.fua).toBe(true);
    expect(s.cdw(12)).toBe((1 << 30) | 1);
  });
});
