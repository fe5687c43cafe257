// Identify data structures (NVMe base spec; offsets as in nvme-tcp-target.md §5.1). Built from tables and
// unit-tested by offset, because a wrong offset silently switches on features (CMIC.ANA, FUSES...).

export const IDENTIFY_BYTES = 4096;

function ascii(b: Buffer, offset: number, length: number, text: string): void {
  b.fill(0x20, offset, offset + length);
  b.write(text.slice(0, length), offset, 'latin1');
}

function nulPadded(b: Buffer, offset: number, length: number, text: string): void {
  b.fill(0, offset, offset + length);
  b.write(text.slice(0, length - 1), offset, 'utf8');
}

export interface ControllerIdentity {
  cntlid: number;
  serial: string;
  model: string;
  firmware: string;
  subnqn: string;
  discovery: boolean;
  /** 2^mdts × 4 KiB is the largest transfer; 0 = no limit. */
  mdts: number;
  maxcmd: number;
  /** Highest NSID that may be used. */
  nn: number;
  /** In-capsule data bytes accepted on I/O queues. */
  ioInCapsuleBytes: number;
  kasUnits100ms: number;
  aerl: number;
}

export function identifyController(c: ControllerIdentity): Buffer {
  const b = Buffer.alloc(IDENTIFY_BYTES);
  b.writeUInt16LE(0, 0); // VID
  b.writeUInt16LE(0, 2); // SSVID
  ascii(b, 4, 20, c.serial);
  ascii(b, 24, 40, c.model);
  ascii(b, 64, 8, c.firmware);
  b[72] = 6; // RAB
  b[76] = c.discovery ? 0 : 0x03; // CMIC: multi-port, multi-controller; no ANA
  b[77] = c.mdts;
  b.writeUInt16LE(c.cntlid, 78);
  b.writeUInt32LE(0x00010400, 80); // VER 1.4.0
  b.writeUInt32LE(c.discovery ? 0x80000000 : 0x00000100, 92); // OAES: discovery log change / NS attribute
  b.writeUInt32LE(c.discovery ? 0 : 0x41, 96); // CTRATT: 128-bit host id, TBKAS
  b[111] = c.discovery ? 2 : 1; // CNTRLTYPE
  b.writeUInt16LE(0, 256); // OACS
  b[258] = 3; // ACL
  b[259] = c.aerl; // AERL (0's based)
  b[260] = c.discovery ? 0 : 0x03; // FRMW
  b[261] = c.discovery ? 0x04 : 0x07; // LPA
  b[262] = 63; // ELPE
  b.writeUInt16LE(c.kasUnits100ms, 320); // KAS
  if (!c.discovery) {
    b[512] = 0x66; // SQES
    b[513] = 0x44; // CQES
  }
  b.writeUInt16LE(c.maxcmd, 514); // MAXCMD
  b.writeUInt32LE(c.nn, 516); // NN
  b.writeUInt16LE(c.discovery ? 0 : 0x000c, 520); // ONCS: DSM, Write Zeroes
  b[525] = c.discovery ? 0 : 0x01; // VWC present
  b.writeUInt32LE(0x00100001, 536); // SGLS: byte-aligned SGLs, address as offset
  nulPadded(b, 768, 256, c.subnqn);
  if (!c.discovery) {
    b.writeUInt32LE((64 + c.ioInCapsuleBytes) / 16, 1792); // IOCCSZ
    b.writeUInt32LE(1, 1796); // IORCSZ
  }
  b.writeUInt16LE(0, 1800); // ICDOFF
  b[1802] = 0; // FCATT: dynamic controller model
  b[1803] = 1; // MSDBD
  return b;
}

export interface NamespaceIdentity {
  blocks: number;
  nguid: Buffer;
  /** Blocks in use (thin provisioning). */
  usedBlocks?: number;
}

export function identifyNamespace(ns: NamespaceIdentity): Buffer {
  const b = Buffer.alloc(IDENTIFY_BYTES);
  const nsze = BigInt(ns.blocks);
  b.writeBigUInt64LE(nsze, 0); // NSZE
  b.writeBigUInt64LE(nsze, 8); // NCAP (0 would mean "not allocated")
  b.writeBigUInt64LE(BigInt(Math.min(ns.usedBlocks ?? ns.blocks, ns.blocks)), 16); // NUSE
  b[24] = 0x01 | 0x08; // NSFEAT: thin provisioned; NGUID never reused
  b[25] = 0; // NLBAF (0's based: one format)
  b[26] = 0; // FLBAS
  b[30] = 0x01; // NMIC: may be attached to several controllers
  b[33] = 0x01; // DLFEAT: deallocated blocks read as zeroes
  ns.nguid.copy(b, 104, 0, 16); // NGUID
  b.writeUInt16LE(0, 128); // LBAF0.MS
  b[130] = 12; // LBAF0.LBADS: 4096-byte blocks
  b[131] = 0; // LBAF0.RP: best
  return b;
}

export function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex');
}

/** CNS 03h: UUID, NGUID and CSI descriptors. */
export function namespaceDescriptors(nguid: Buffer, uuid: string): Buffer {
  const b = Buffer.alloc(IDENTIFY_BYTES);
  let off = 0;
  b[off] = 3; // NIDT UUID
  b[off + 1] = 16;
  uuidBytes(uuid).copy(b, off + 4);
  off += 4 + 16;
  b[off] = 2; // NIDT NGUID
  b[off + 1] = 16;
  nguid.copy(b, off + 4, 0, 16);
  off += 4 + 16;
  b[off] = 4; // NIDT CSI
  b[off + 1] = 1;
  b[off + 4] = 0; // NVM command set
  return b;
}

/** CNS 02h: active NSIDs greater than `after`, ascending, up to 1024. */
export function activeNamespaceList(nsids: Iterable<number>, after: number): Buffer {
  const b = Buffer.alloc(IDENTIFY_BYTES);
  const list = [...nsids].filter((n) => n > after).sort((x, y) => x - y).slice(0, 1024);
  list.forEach((n, i) => b.writeUInt32LE(n, i * 4));
  return b;
}
