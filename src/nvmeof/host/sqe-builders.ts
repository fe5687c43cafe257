// Submission queue entries as a host builds them (CID and SGL are filled in by HostQueue.submit).
import { ADMIN_OPC, FCTYPE, IO_OPC, OPC_FABRICS } from '../protocol/constants.ts';

function sqe(opc: number, nsid = 0): Buffer {
  const b = Buffer.alloc(64);
  b[0] = opc;
  b.writeUInt32LE(nsid >>> 0, 4);
  return b;
}

export function connectSqe(qid: number, sqsize: number, katoMs: number): Buffer {
  const b = sqe(OPC_FABRICS);
  b[4] = FCTYPE.Connect;
  b.writeUInt16LE(0, 40); // RECFMT
  b.writeUInt16LE(qid, 42);
  b.writeUInt16LE(sqsize, 44);
  b[46] = 0; // CATTR
  b.writeUInt32LE(katoMs, 48);
  return b;
}

export function connectData(hostid: Buffer, cntlid: number, subnqn: string, hostnqn: string): Buffer {
  const d = Buffer.alloc(1024);
  hostid.copy(d, 0, 0, 16);
  d.writeUInt16LE(cntlid, 16);
  d.write(subnqn, 256, 'utf8');
  d.write(hostnqn, 512, 'utf8');
  return d;
}

export function propertyGetSqe(offset: number, size8: boolean): Buffer {
  const b = sqe(OPC_FABRICS);
  b[4] = FCTYPE.PropertyGet;
  b[40] = size8 ? 1 : 0;
  b.writeUInt32LE(offset, 44);
  return b;
}

export function propertySetSqe(offset: number, value: number): Buffer {
  const b = sqe(OPC_FABRICS);
  b[4] = FCTYPE.PropertySet;
  b[40] = 0;
  b.writeUInt32LE(offset, 44);
  b.writeUInt32LE(value >>> 0, 48);
  return b;
}

export function identifySqe(cns: number, nsid = 0, csi = 0): Buffer {
  const b = sqe(ADMIN_OPC.Identify, nsid);
  b.writeUInt32LE(cns, 40);
  b.writeUInt32LE((csi << 24) >>> 0, 44);
  return b;
}

export function getLogPageSqe(lid: number, bytes: number, offset = 0, nsid = 0xffffffff, rae = false): Buffer {
  const b = sqe(ADMIN_OPC.GetLogPage, nsid);
  const numd = bytes / 4 - 1;
  b.writeUInt32LE(((lid & 0xff) | (rae ? 1 << 15 : 0) | ((numd & 0xffff) << 16)) >>> 0, 40);
  b.writeUInt32LE((numd >>> 16) & 0xffff, 44);
  b.writeUInt32LE(offset % 0x1_0000_0000, 48);
  b.writeUInt32LE(Math.floor(offset / 0x1_0000_0000), 52);
  return b;
}

export function setFeaturesSqe(fid: number, cdw11: number): Buffer {
  const b = sqe(ADMIN_OPC.SetFeatures);
  b.writeUInt32LE(fid, 40);
  b.writeUInt32LE(cdw11 >>> 0, 44);
  return b;
}

export function getFeaturesSqe(fid: number, cdw11 = 0): Buffer {
  const b = sqe(ADMIN_OPC.GetFeatures);
  b.writeUInt32LE(fid, 40);
  b.writeUInt32LE(cdw11 >>> 0, 44);
  return b;
}

export function keepAliveSqe(): Buffer {
  return sqe(ADMIN_OPC.KeepAlive);
}

export function aerSqe(): Buffer {
  return sqe(ADMIN_OPC.AsyncEventRequest);
}

export function rwSqe(opc: number, nsid: number, slba: number, nlb: number, fua = false): Buffer {
  const b = sqe(opc, nsid);
  b.writeUInt32LE(slba % 0x1_0000_0000, 40);
  b.writeUInt32LE(Math.floor(slba / 0x1_0000_0000), 44);
  b.writeUInt32LE(((nlb - 1) & 0xffff) | (fua ? 1 << 30 : 0), 48);
  return b;
}

export const readSqe = (nsid: number, slba: number, nlb: number) => rwSqe(IO_OPC.Read, nsid, slba, nlb);
export const writeSqe = (nsid: number, slba: number, nlb: number, fua = false) => rwSqe(IO_OPC.Write, nsid, slba, nlb, fua);
export const writeZeroesSqe = (nsid: number, slba: number, nlb: number) => rwSqe(IO_OPC.WriteZeroes, nsid, slba, nlb);
export const flushSqe = (nsid: number) => sqe(IO_OPC.Flush, nsid);

export function dsmSqe(nsid: number, ranges: number, deallocate: boolean): Buffer {
  const b = sqe(IO_OPC.DatasetManagement, nsid);
  b.writeUInt32LE((ranges - 1) & 0xff, 40);
  b.writeUInt32LE(deallocate ? 4 : 0, 44);
  return b;
}

export function dsmRanges(ranges: Array<{ slba: number; nlb: number }>): Buffer {
  const d = Buffer.alloc(ranges.length * 16);
  ranges.forEach((r, i) => {
    d.writeUInt32LE(r.nlb, i * 16 + 4);
    d.writeUInt32LE(r.slba % 0x1_0000_0000, i * 16 + 8);
    d.writeUInt32LE(Math.floor(r.slba / 0x1_0000_0000), i * 16 + 12);
  });
  return d;
}
