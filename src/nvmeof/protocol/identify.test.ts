import { describe, expect, it } from 'vitest';
import { activeNamespaceList, IDENTIFY_BYTES, identifyController, identifyNamespace, namespaceDescriptors, uuidBytes, type ControllerIdentity } from './identify.ts';

const SUBNQN = 'nqn.2026-11.io.thicket:unit';

function ioController(over: Partial<ControllerIdentity> = {}): Buffer {
  return identifyController({
    cntlid: 0x1234,
    serial: 'SN-1',
    model: 'Thicket',
    firmware: '0.1.0',
    subnqn: SUBNQN,
    discovery: false,
    mdts: 8,
    maxcmd: 128,
    nn: 1024,
    ioInCapsuleBytes: 8192,
    kasUnits100ms: 10,
    aerl: 3,
    ...over,
  });
}

describe('Identify Controller (CNS 01h)', () => {
  const b = ioController();

  it('is 4096 bytes', () => {
    expect(b.length).toBe(IDENTIFY_BYTES);
  });

  it('reports the Connect CNTLID at byte 78', () => {
    expect(b.readUInt16LE(78)).toBe(0x1234);
  });

  it('space-pads SN (4), MN (24) and FR (64)', () => {
    expect(b.toString('latin1', 4, 24)).toBe('SN-1'.padEnd(20, ' '));
    expect(b.toString('latin1', 24, 64)).toBe('Thicket'.padEnd(40, ' '));
    expect(b.toString('latin1', 64, 72)).toBe('0.1.0'.padEnd(8, ' '));
  });

  it('sets CMIC 0x03 (multi-port, multi-controller) without the ANA bit, and MDTS at 77', () => {
    expect(b[76]).toBe(0x03);
    expect(b[76] & 0x08).toBe(0);
    expect(b[77]).toBe(8);
    // No ANA anywhere: ANACAP, ANAGRPMAX, NANAGRPID, MNAN stay zero.
    expect(b[343]).toBe(0);
    expect(b.readUInt32LE(344)).toBe(0);
    expect(b.readUInt32LE(348)).toBe(0);
    expect(b.readUInt32LE(540)).toBe(0);
  });

  it('reports VER 1.4.0, OAES namespace attribute notices, CTRATT and CNTRLTYPE 1', () => {
    expect(b.readUInt32LE(80)).toBe(0x00010400);
    expect(b.readUInt32LE(92)).toBe(0x00000100);
    expect(b.readUInt32LE(96) & 0x41).toBe(0x41);
    expect(b[111]).toBe(1);
  });

  it('keeps CRDT zero so hosts do not send Host Behavior Support', () => {
    expect(b.readUInt16LE(128)).toBe(0);
    expect(b.readUInt16LE(130)).toBe(0);
    expect(b.readUInt16LE(132)).toBe(0);
  });

  it('has OACS 0, AERL, LPA and a non-zero KAS at 320', () => {
    expect(b.readUInt16LE(256)).toBe(0);
    expect(b[259]).toBe(3);
    expect(b[261]).toBe(0x07);
    expect(b.readUInt16LE(320)).toBeGreaterThan(0);
    expect(b.readUInt16LE(320)).toBe(10);
  });

  it('has SQES 0x66 at 512, CQES 0x44 at 513, MAXCMD at 514 and NN at 516', () => {
    expect(b[512]).toBe(0x66);
    expect(b[513]).toBe(0x44);
    expect(b.readUInt16LE(514)).toBe(128);
    expect(b.readUInt32LE(516)).toBe(1024);
  });

  it('has ONCS (DSM, Write Zeroes), FUSES 0, VWC present at 525 and SGLS at 536', () => {
    expect(b.readUInt16LE(520)).toBe(0x000c);
    expect(b.readUInt16LE(522)).toBe(0);
    expect(b[525]).toBe(0x01);
    expect(b.readUInt32LE(536)).toBe(0x00100001);
    expect(b.readUInt32LE(536) & 0x3).not.toBe(0);
  });

  it('writes SUBNQN at 768, NUL-terminated and NUL-padded', () => {
    expect(b.toString('utf8', 768, 768 + SUBNQN.length)).toBe(SUBNQN);
    expect(b.subarray(768 + SUBNQN.length, 1024).every((x) => x === 0)).toBe(true);
  });

  it('truncates an over-long SUBNQN so it stays NUL-terminated', () => {
    const long = 'nqn.2026-11.io.thicket:' + 'x'.repeat(400);
    const c = ioController({ subnqn: long });
    expect(c[1023]).toBe(0);
    expect(c.subarray(1024, 1792).every((x) => x === 0)).toBe(true);
  });

  it('has IOCCSZ ≥ 4 at 1792 = (64 + ICD)/16, IORCSZ 1, ICDOFF 0, FCATT 0, MSDBD 1', () => {
    expect(b.readUInt32LE(1792)).toBe((64 + 8192) / 16);
    expect(b.readUInt32LE(1792)).toBeGreaterThanOrEqual(4);
    expect(b.readUInt32LE(1796)).toBe(1);
    expect(b.readUInt16LE(1800)).toBe(0);
    expect(b[1802]).toBe(0);
    expect(b[1803]).toBe(1);
  });

  it('describes a discovery controller: CNTRLTYPE 2, OAES bit 31, MDTS 0, NN 0, KAS non-zero', () => {
    const d = ioController({ discovery: true, subnqn: 'nqn.2014-08.org.nvmexpress.discovery', mdts: 0, nn: 0 });
    expect(d[111]).toBe(2);
    expect(d.readUInt32LE(92)).toBe(0x80000000);
    expect(d[77]).toBe(0);
    expect(d.readUInt32LE(516)).toBe(0);
    expect(d[261]).toBe(0x04);
    expect(d[76]).toBe(0);
    expect(d.readUInt16LE(320)).toBeGreaterThan(0);
    expect(d.readUInt32LE(536)).toBe(0x00100001);
    expect(d.toString('utf8', 768, 768 + 36)).toBe('nqn.2014-08.org.nvmexpress.discovery');
    expect(d.readUInt16LE(1800)).toBe(0);
  });
});

describe('Identify Namespace (CNS 00h)', () => {
  const nguid = Buffer.from(Array.from({ length: 16 }, (_, i) => 0xa0 + i));
  const b = identifyNamespace({ blocks: 262144, nguid, usedBlocks: 100 });

  it('has non-zero NSZE and NCAP (= NSZE) and NUSE', () => {
    expect(b.length).toBe(IDENTIFY_BYTES);
    expect(b.readBigUInt64LE(0)).toBe(262144n);
    expect(b.readBigUInt64LE(8)).toBe(262144n);
    expect(b.readBigUInt64LE(16)).toBe(100n);
  });

  it('has one LBA format of 4096 bytes (LBADS 12 at 130) without metadata (MS 0)', () => {
    expect(b[25]).toBe(0); // NLBAF
    expect(b[26]).toBe(0); // FLBAS
    expect(b.readUInt16LE(128)).toBe(0); // MS
    expect(b[130]).toBe(12);
    expect(b[27]).toBe(0); // MC
    expect(b[28]).toBe(0); // DPC
    expect(b[29]).toBe(0); // DPS
  });

  it('may be shared (NMIC 1 at 30) and reads deallocated blocks as zeroes', () => {
    expect(b[30]).toBe(1);
    expect(b[33] & 0x7).toBe(1);
  });

  it('carries the NGUID at 104 and no ANA group', () => {
    expect(b.subarray(104, 120).equals(nguid)).toBe(true);
    expect(b.readUInt32LE(92)).toBe(0);
  });

  it('never reports NUSE above NSZE', () => {
    const c = identifyNamespace({ blocks: 10, nguid, usedBlocks: 50 });
    expect(c.readBigUInt64LE(16)).toBe(10n);
  });

  it('handles NSZE beyond 2^32 blocks', () => {
    const c = identifyNamespace({ blocks: 2 ** 33 + 5, nguid });
    expect(c.readBigUInt64LE(0)).toBe(2n ** 33n + 5n);
  });
});

describe('Namespace identification descriptors (CNS 03h)', () => {
  const nguid = Buffer.alloc(16, 0x5c);
  const uuid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
  const b = namespaceDescriptors(nguid, uuid);

  /** Walks the descriptor list the way the Linux host does. */
  function walk(list: Buffer): Array<{ nidt: number; nid: Buffer }> {
    const out = [];
    let off = 0;
    while (off + 4 <= list.length && list[off] !== 0) {
      const nidl = list[off + 1];
      out.push({ nidt: list[off], nid: list.subarray(off + 4, off + 4 + nidl) });
      off += 4 + nidl;
    }
    return out;
  }

  it('lists UUID, NGUID and CSI and is zero-terminated', () => {
    const d = walk(b);
    expect(d.map((x) => x.nidt)).toEqual([3, 2, 4]);
    expect(d[0].nid.equals(uuidBytes(uuid))).toBe(true);
    expect(d[0].nid.toString('hex')).toBe(uuid.replace(/-/g, ''));
    expect(d[1].nid.equals(nguid)).toBe(true);
    expect(d[2].nid.length).toBe(1);
    expect(d[2].nid[0]).toBe(0); // NVM command set
    expect(b.length).toBe(4096);
    expect(b.subarray(4 + 16 + 4 + 16 + 4 + 1).every((x) => x === 0)).toBe(true);
  });
});

describe('Active namespace list (CNS 02h)', () => {
  it('lists NSIDs above the given one, ascending, zero-terminated', () => {
    const b = activeNamespaceList([7, 3, 1, 12], 3);
    expect([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8)]).toEqual([7, 12, 0]);
  });

  it('stops at 1024 entries', () => {
    const b = activeNamespaceList(Array.from({ length: 1500 }, (_, i) => i + 1), 0);
    expect(b.length).toBe(4096);
    expect(b.readUInt32LE(4092)).toBe(1024);
  });
});
