// NVMe/TCP protocol rules against a live in-process target, driven by a raw socket client whose bytes
// come from test/fixtures/pdu-builder.ts: every fatal PDU error ends the connection with a C2HTermReq
// (and nothing else), every command error gets its NVMe status, byte streams split at every offset give
// the same answers as unsplit ones, async events and keep-alive behave as the Linux host expects.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { aerSqe, connectData, connectSqe, dsmRanges, dsmSqe, getFeaturesSqe, getLogPageSqe, identifySqe, readSqe, setFeaturesSqe, writeSqe, writeZeroesSqe } from '../../src/nvmeof/host/sqe-builders.ts';
import { ADMIN_OPC, AEN, CNS, DISCOVERY_NQN, FCTYPE, FES, FID, IO_OPC, LID, OPC_FABRICS, PDU_FLAG, PDU_TYPE, PROPERTY, SGL } from '../../src/nvmeof/protocol/constants.ts';
import { STATUS } from '../../src/nvmeof/protocol/status.ts';
import { startTestTarget, HOSTNQN, OTHER_HOSTNQN, SUBNQN, type TestTarget } from '../fixtures/nvme-target.ts';
import {
  bareSqe,
  capsuleCmd,
  CC_ENABLE,
  cmd,
  connectCapsule,
  describeStatus,
  h2cData,
  h2cTermReq,
  icReq,
  RawClient,
  rawPdu,
  resealHeaderDigest,
  sglInCapsule,
  sglRaw,
  sglTransport,
  withCid,
  type Digests,
  type ParsedPdu,
} from '../fixtures/pdu-builder.ts';

const MAXH2CDATA = 16384;
/** Concurrent connections in the split-stream tests (one event loop drives both ends). */
const SPLIT_LANES = Number(process.env.NVME_SPLIT_LANES ?? 4);
const NS_BLOCKS = 1024;

let t: TestTarget;
const clients: RawClient[] = [];

beforeAll(async () => {
  t = await startTestTarget({ maxh2cdata: MAXH2CDATA, namespaces: [1] });
});
afterAll(async () => {
  await t.stop();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

async function rawClient(port = t.ioPort): Promise<RawClient> {
  const c = await RawClient.connect(port);
  clients.push(c);
  return c;
}

interface AdminSession {
  c: RawClient;
  cntlid: number;
  hostid: Buffer;
}

/** A raw admin queue: ICReq, Connect and (unless told otherwise) CC.EN. */
async function adminSession(o: Digests & { enable?: boolean; katoMs?: number } = {}): Promise<AdminSession> {
  const c = await rawClient();
  const hostid = randomBytes(16);
  const cntlid = await c.connectAdmin({ hostid, subnqn: SUBNQN, hostnqn: HOSTNQN, katoMs: o.katoMs ?? 0, hdgst: o.hdgst, ddgst: o.ddgst, enable: o.enable });
  return { c, cntlid, hostid };
}

/** A raw I/O queue of an admin session's controller. */
async function ioSession(admin: AdminSession, qid = 1, d: Digests = {}): Promise<RawClient> {
  const c = await rawClient();
  await c.icReq(d);
  const r = await c.exec((cid, dg) => connectCapsule({ cid, qid, sqsize: 127, hostid: admin.hostid, cntlid: admin.cntlid, subnqn: SUBNQN, hostnqn: HOSTNQN }, dg));
  expect(describeStatus(r.status)).toBe(describeStatus(0));
  expect(r.dw0 & 0xffff).toBe(admin.cntlid);
  return c;
}

/** Sends a bad PDU and expects a C2HTermReq (FES, FEI, the offending header) and then the connection's end. */
async function expectFatal(c: RawClient, bad: Buffer, fes: number, fei?: number): Promise<void> {
  c.send(bad);
  const tr = await c.termReq();
  expect({ fes: tr.fes, fei: fei === undefined ? undefined : tr.fei }).toEqual({ fes, fei });
  // The TermReq carries (up to 128 bytes of) the header of the PDU in error.
  expect(tr.offending.length).toBeGreaterThanOrEqual(8);
  expect(tr.offending.length).toBeLessThanOrEqual(128);
  expect(tr.offending.subarray(0, 8).equals(bad.subarray(0, 8))).toBe(true);
}

function expectStatus(status: number, expected: number): void {
  expect(describeStatus(status)).toBe(describeStatus(expected));
}

/** Polls `cond`: a few event-loop turns first (the usual case on loopback), then every millisecond. */
async function until(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; !cond(); i++) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => (i < 4 ? setImmediate(r) : setTimeout(r, 1)));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The target checks keep-alive on a timer tick (KATO/4 for a 1 s KATO), notes commands a tick late. */
const TICK_SLACK_MS = 750;

// =====================================================================================================

describe('fatal PDU errors end the connection with a C2HTermReq', () => {
  // After every fatal error the process and other connections carry on.
  afterEach(async () => {
    await t.checkHealthy();
  });

  describe('sequence (FES 0x02)', () => {
    it('CapsuleCmd before ICReq', async () => {
      const c = await rawClient();
      await expectFatal(c, cmd.keepAlive(1), FES.PduSequenceError);
    });

    it('H2CData before ICReq', async () => {
      const c = await rawClient();
      await expectFatal(c, h2cData({ cid: 1, ttag: 1, datao: 0, data: Buffer.alloc(4096) }), FES.PduSequenceError);
    });

    it('H2CData after ICReq but before Connect', async () => {
      const c = await rawClient();
      await c.icReq();
      await expectFatal(c, h2cData({ cid: 1, ttag: 1, datao: 0, data: Buffer.alloc(4096) }), FES.PduSequenceError);
    });

    it('a second ICReq right after the first', async () => {
      const c = await rawClient();
      await c.icReq();
      await expectFatal(c, icReq(), FES.PduSequenceError);
    });

    it('a second ICReq on a live admin queue, which also tears the controller down', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      expect(t.target.controllers.has(a.cntlid)).toBe(true);
      await expectFatal(a.c, icReq(), FES.PduSequenceError);
      await io.waitClosed();
      await until(() => !t.target.controllers.has(a.cntlid), 2000, 'the controller to go');
    });

    it('a second ICReq in the same write as the first (no ICResp in between counts)', async () => {
      const c = await rawClient();
      c.send(Buffer.concat([icReq(), icReq()]));
      const tr = await c.termReq();
      expect(tr.fes).toBe(FES.PduSequenceError);
      // The ICResp may or may not have left before the error was seen; nothing else may.
      expect(c.pdus.every((p) => p.icResp || p.termReq)).toBe(true);
    });
  });

  describe('invalid header fields (FES 0x01)', () => {
    for (const type of [PDU_TYPE.ICResp, PDU_TYPE.C2HTermReq, PDU_TYPE.CapsuleResp, PDU_TYPE.C2HData, 0x08, PDU_TYPE.R2T, 0x0a, 0x7f, 0xff]) {
      it(`unknown or controller-to-host PDU type 0x${type.toString(16)} after ICReq`, async () => {
        const c = await rawClient();
        await c.icReq();
        await expectFatal(c, rawPdu({ type, hlen: 24 }), FES.InvalidHeaderField, 0);
      });
    }

    it('unknown PDU type before ICReq', async () => {
      const c = await rawClient();
      await expectFatal(c, rawPdu({ type: 0x42, hlen: 24 }), FES.InvalidHeaderField, 0);
    });

    it('unknown PDU type on a live queue', async () => {
      const a = await adminSession();
      await expectFatal(a.c, rawPdu({ type: 0x0b, hlen: 24 }), FES.InvalidHeaderField, 0);
    });

    const wrongHlen: Array<[string, () => Buffer, boolean]> = [
      ['ICReq with HLEN 127', () => icReq({ hlen: 127 }), false],
      ['ICReq with HLEN 24', () => icReq({ hlen: 24 }), false],
      ['CapsuleCmd with HLEN 24', () => rawPdu({ type: PDU_TYPE.CapsuleCmd, hlen: 24, totalBytes: 72 }), true],
      ['CapsuleCmd with HLEN 128', () => rawPdu({ type: PDU_TYPE.CapsuleCmd, hlen: 128, totalBytes: 128 }), true],
      ['H2CData with HLEN 72', () => rawPdu({ type: PDU_TYPE.H2CData, hlen: 72, totalBytes: 72 }), true],
      ['H2CTermReq with HLEN 72', () => rawPdu({ type: PDU_TYPE.H2CTermReq, hlen: 72, totalBytes: 72 }), true],
    ];
    for (const [name, build, live] of wrongHlen) {
      it(`${name} (FEI 2)`, async () => {
        if (live) {
          const a = await adminSession();
          await expectFatal(a.c, build(), FES.InvalidHeaderField, 2);
        } else {
          const c = await rawClient();
          await expectFatal(c, build(), FES.InvalidHeaderField, 2);
        }
      });
    }

    it('ICReq with PLEN other than 128 (FEI 4)', async () => {
      const c = await rawClient();
      await expectFatal(c, icReq({ plen: 132 }), FES.InvalidHeaderField, 4);
    });

    it('CapsuleCmd with PLEN smaller than its header (FEI 4)', async () => {
      const a = await adminSession();
      const bad = cmd.keepAlive(9);
      bad.writeUInt32LE(40, 4);
      await expectFatal(a.c, bad, FES.InvalidHeaderField, 4);
    });

    it('CapsuleCmd with data whose PDO points into the header (FEI 3)', async () => {
      const a = await adminSession();
      const bad = cmd.raw(9, sglInCapsule(bareSqe(ADMIN_OPC.SetFeatures), 16), { data: Buffer.alloc(16) });
      bad[3] = 16;
      await expectFatal(a.c, bad, FES.InvalidHeaderField, 3);
    });

    it('CapsuleCmd with PDO 0 but trailing bytes (FEI 3)', async () => {
      const a = await adminSession();
      const bad = cmd.raw(9, sglInCapsule(bareSqe(ADMIN_OPC.SetFeatures), 16), { data: Buffer.alloc(16) });
      bad[3] = 0;
      await expectFatal(a.c, bad, FES.InvalidHeaderField, 3);
    });

    it('ICReq with HPDA above 31 (FEI 10)', async () => {
      const c = await rawClient();
      await expectFatal(c, icReq({ hpda: 32 }), FES.InvalidHeaderField, 10);
    });

    it('H2CData whose DATAL disagrees with PLEN (FEI 16)', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(7, 1, 0, 2));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      await expectFatal(io, h2cData({ cid: 7, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096), datal: 8192 }), FES.InvalidHeaderField, 16);
    });

    it('H2CData with DATAL 0 (FEI 16)', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(7, 1, 0, 2));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      const bad = h2cData({ cid: 7, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(0) });
      bad[3] = 0;
      await expectFatal(io, bad, FES.InvalidHeaderField);
    });
  });

  describe('ICReq parameters', () => {
    it('PFV other than 0 (FES 0x06, FEI 8)', async () => {
      const c = await rawClient();
      await expectFatal(c, icReq({ pfv: 1 }), FES.UnsupportedParameter, 8);
    });
  });

  describe('limits (FES 0x05)', () => {
    it('CapsuleCmd whose PLEN exceeds the in-capsule limit, rejected from the common header alone', async () => {
      const a = await adminSession();
      const bad = rawPdu({ type: PDU_TYPE.CapsuleCmd, hlen: 72, pdo: 72, plen: 72 + 8192 + 4096, totalBytes: 72 });
      await expectFatal(a.c, bad, FES.DataTransferLimitExceeded);
    });

    it('CapsuleCmd with PLEN 0xFFFFFFFF (no allocation, no waiting for 4 GiB)', async () => {
      const a = await adminSession();
      await expectFatal(a.c, rawPdu({ type: PDU_TYPE.CapsuleCmd, hlen: 72, pdo: 72, plen: 0xffffffff, totalBytes: 72 }), FES.DataTransferLimitExceeded);
    });

    it('CapsuleCmd too large on an I/O queue', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      await expectFatal(io, rawPdu({ type: PDU_TYPE.CapsuleCmd, hlen: 72, pdo: 72, plen: 72 + 64 * 1024, totalBytes: 72 }), FES.DataTransferLimitExceeded);
    });

    it('H2CData whose PLEN exceeds MAXH2CDATA, rejected from the common header alone', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 0, 8));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      const bad = h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(0), datal: MAXH2CDATA * 4 });
      bad.writeUInt32LE(24 + MAXH2CDATA * 4, 4);
      await expectFatal(io, bad.subarray(0, 24), FES.DataTransferLimitExceeded);
    });

    it('H2CData with DATAL > MAXH2CDATA and a consistent PLEN', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 0, 8));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      expect(r2t.r2tl).toBe(MAXH2CDATA);
      await expectFatal(io, h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(MAXH2CDATA + 4) }), FES.DataTransferLimitExceeded);
    });

    it('H2CTermReq longer than 152 bytes', async () => {
      const a = await adminSession();
      await expectFatal(a.c, h2cTermReq(1, 0, Buffer.alloc(200)), FES.InvalidHeaderField, 4);
    });
  });

  describe('digests', () => {
    it('header digest mismatch on a CapsuleCmd (FES 0x03)', async () => {
      const a = await adminSession({ hdgst: true });
      const bad = cmd.keepAlive(5, { hdgst: true });
      bad.writeUInt32LE((bad.readUInt32LE(72) ^ 1) >>> 0, 72);
      await expectFatal(a.c, bad, FES.HeaderDigestError);
    });

    it('header digest mismatch on an H2CData (FES 0x03)', async () => {
      const a = await adminSession({ hdgst: true });
      const io = await ioSession(a, 1, { hdgst: true });
      io.send(cmd.writeR2T(3, 1, 0, 1, { hdgst: true }));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      const bad = h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096), hdgst: true });
      bad[24] ^= 0x80;
      await expectFatal(io, bad, FES.HeaderDigestError);
    });

    it('a header changed after its digest was computed (FES 0x03)', async () => {
      const a = await adminSession({ hdgst: true });
      const bad = cmd.keepAlive(5, { hdgst: true });
      bad[8 + 40] = 1; // CDW10 changed, digest not recomputed
      await expectFatal(a.c, bad, FES.HeaderDigestError);
    });

    it('header digest negotiated but HDGSTF clear (FES 0x01, FEI 1)', async () => {
      const a = await adminSession({ hdgst: true });
      const bad = cmd.keepAlive(5, { hdgst: true });
      bad[1] &= ~PDU_FLAG.HDGSTF;
      await expectFatal(a.c, bad, FES.InvalidHeaderField, 1);
    });

    it('data digest mismatch on in-capsule write data', async () => {
      const a = await adminSession({ hdgst: true, ddgst: true });
      const io = await ioSession(a, 1, { hdgst: true, ddgst: true });
      const bad = cmd.write(4, 1, 10, Buffer.alloc(4096, 7), { hdgst: true, ddgst: true });
      bad[bad.length - 1] ^= 0xff;
      await expectFatal(io, bad, FES.InvalidHeaderField);
      expect(io.pdus.some((p) => p.cqe?.cid === 4)).toBe(false);
      expect(t.backends.get(1)!.data[10 * 4096]).toBe(10); // not written
    });

    it('data digest mismatch on H2CData', async () => {
      const a = await adminSession({ ddgst: true });
      const io = await ioSession(a, 1, { ddgst: true });
      io.send(cmd.writeR2T(3, 1, 11, 1, { ddgst: true }));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      const bad = h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096, 9), ddgst: true });
      bad[30] ^= 1; // a data byte: the digest no longer matches
      await expectFatal(io, bad, FES.InvalidHeaderField);
      expect(t.backends.get(1)!.data[11 * 4096]).toBe(11);
    });

    it('data digest negotiated but DDGSTF clear on in-capsule data', async () => {
      const a = await adminSession({ ddgst: true });
      const io = await ioSession(a, 1, { ddgst: true });
      const bad = cmd.write(4, 1, 10, Buffer.alloc(4096, 7), { ddgst: true });
      bad[1] &= ~PDU_FLAG.DDGSTF;
      await expectFatal(io, bad, FES.InvalidHeaderField, 1);
    });
  });

  describe('H2CData against the R2T state', () => {
    it('H2CData with no R2T outstanding (unknown TTAG)', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      await expectFatal(io, h2cData({ cid: 1, ttag: 1, datao: 0, data: Buffer.alloc(4096) }), FES.InvalidHeaderField, 10);
    });

    it('H2CData with a TTAG other than the R2T one', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 0, 1));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      await expectFatal(io, h2cData({ cid: 3, ttag: (r2t.ttag + 1) & 0xffff, datao: 0, data: Buffer.alloc(4096) }), FES.InvalidHeaderField, 10);
    });

    it('H2CData with the right TTAG but another command id', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 0, 1));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      await expectFatal(io, h2cData({ cid: 4, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096) }), FES.InvalidHeaderField, 10);
    });

    it('H2CData on the admin queue (no R2T there)', async () => {
      const a = await adminSession();
      await expectFatal(a.c, h2cData({ cid: 1, ttag: 1, datao: 0, data: Buffer.alloc(64) }), FES.InvalidHeaderField, 10);
    });

    it('H2CData whose DATAO skips ahead of the data received (FES 0x04)', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 0, 2));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      await expectFatal(io, h2cData({ cid: 3, ttag: r2t.ttag, datao: 4096, data: Buffer.alloc(4096) }), FES.DataTransferOutOfRange);
    });

    it('H2CData that runs past the end of the R2T window (FES 0x04)', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 0, 8)); // 32 KiB: first R2T asks for MAXH2CDATA (16 KiB)
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      expect(r2t).toEqual({ cid: 3, ttag: r2t.ttag, r2to: 0, r2tl: MAXH2CDATA });
      io.send(h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(8192), last: false }));
      await expectFatal(io, h2cData({ cid: 3, ttag: r2t.ttag, datao: 8192, data: Buffer.alloc(12288) }), FES.DataTransferOutOfRange);
    });

    it('H2CData that repeats an offset already received (FES 0x04)', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 0, 2));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      io.send(h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096), last: false }));
      await expectFatal(io, h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096) }), FES.DataTransferOutOfRange);
    });

    it('H2CData after the write it belonged to completed (stale TTAG)', async () => {
      const a = await adminSession();
      const io = await ioSession(a);
      io.send(cmd.writeR2T(3, 1, 20, 1));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t)?.r2t, 5000, 'R2T');
      io.send(h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096, 0x33) }));
      expectStatus((await io.response(3)).status, 0);
      await expectFatal(io, h2cData({ cid: 3, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096) }), FES.InvalidHeaderField, 10);
    });
  });

  describe('host-initiated termination', () => {
    it('H2CTermReq: the target closes without answering', async () => {
      const a = await adminSession();
      a.c.send(h2cTermReq(FES.HeaderDigestError));
      await a.c.waitClosed();
      expect(a.c.pdus.some((p) => p.termReq)).toBe(false);
      await until(() => !t.target.controllers.has(a.cntlid), 2000, 'the controller to go');
    });

    it('H2CTermReq before ICReq', async () => {
      const c = await rawClient();
      c.send(h2cTermReq(FES.PduSequenceError, 0, Buffer.alloc(8)));
      await c.waitClosed();
      expect(c.pdus).toEqual([]);
    });
  });

  it('a fatal error on one connection leaves a connected host alone', async () => {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.ioPort, subnqn: SUBNQN, hostnqn: HOSTNQN });
    try {
      const a = await adminSession();
      await expectFatal(a.c, rawPdu({ type: 0x33, hlen: 24 }), FES.InvalidHeaderField);
      const data = randomBytes(4096);
      await host.write(1, 30, data);
      expect((await host.read(1, 30, 1)).equals(data)).toBe(true);
    } finally {
      await host.close();
    }
  });

  it('a PDU header that trickles in byte by byte is still rejected at once', async () => {
    const a = await adminSession();
    const bad = rawPdu({ type: PDU_TYPE.CapsuleCmd, hlen: 72, pdo: 72, plen: 1 << 30, totalBytes: 72 });
    for (let i = 0; i < 8; i++) {
      a.c.send(bad.subarray(i, i + 1));
      await sleep(2);
    }
    const tr = await a.c.termReq();
    expect(tr.fes).toBe(FES.DataTransferLimitExceeded);
  });
});

// =====================================================================================================

describe('command errors complete with an NVMe status', () => {
  describe('before and around Connect', () => {
    it('a command other than Connect before Connect → Invalid Opcode +DNR, connection stays', async () => {
      const c = await rawClient();
      await c.icReq();
      expectStatus((await c.exec((cid) => cmd.identify(cid, CNS.Controller))).status, STATUS.InvalidOpcode);
      expectStatus((await c.exec((cid) => cmd.propertyGet(cid, PROPERTY.CAP, true))).status, STATUS.InvalidOpcode);
      const r = await c.exec((cid) => connectCapsule({ cid, hostid: randomBytes(16), subnqn: SUBNQN, hostnqn: HOSTNQN }));
      expectStatus(r.status, 0);
    });

    const connectCases: Array<{ name: string; f: Partial<Parameters<typeof connectCapsule>[0]>; status: number; dw0?: number }> = [
      { name: 'SQSIZE 0', f: { sqsize: 0 }, status: STATUS.ConnectInvalidParameters, dw0: 44 },
      { name: 'SQSIZE above MQES', f: { sqsize: 128 }, status: STATUS.ConnectInvalidParameters, dw0: 44 },
      { name: 'RECFMT 1', f: { recfmt: 1 }, status: STATUS.ConnectIncompatibleFormat },
      { name: 'an unknown subsystem', f: { subnqn: 'nqn.2026-11.io.thicket:nope' }, status: STATUS.ConnectInvalidParameters, dw0: (1 << 16) | 256 },
      { name: 'a host that is not allowed', f: { hostnqn: OTHER_HOSTNQN }, status: STATUS.ConnectInvalidHost, dw0: (1 << 16) | 512 },
      { name: 'an all-zero HOSTID', f: { hostid: Buffer.alloc(16) }, status: STATUS.ConnectInvalidParameters, dw0: (1 << 16) | 0 },
      { name: 'a static CNTLID on the admin queue', f: { cntlid: 5 }, status: STATUS.ConnectInvalidParameters, dw0: (1 << 16) | 16 },
      { name: 'an I/O queue of a controller that does not exist', f: { qid: 1, cntlid: 0xfff0 }, status: STATUS.ConnectInvalidParameters, dw0: (1 << 16) | 16 },
      { name: 'an I/O queue of the discovery subsystem', f: { qid: 1, subnqn: DISCOVERY_NQN }, status: STATUS.ConnectInvalidParameters, dw0: 42 },
    ];
    for (const k of connectCases) {
      it(`Connect with ${k.name} → ${describeStatus(k.status)}${k.dw0 === undefined ? '' : ` with IPO/IATTR 0x${k.dw0.toString(16)} in DW0`}`, async () => {
        const c = await rawClient();
        await c.icReq();
        const r = await c.exec((cid) => connectCapsule({ cid, hostid: randomBytes(16), subnqn: SUBNQN, hostnqn: HOSTNQN, ...k.f }));
        expectStatus(r.status, k.status);
        if (k.dw0 !== undefined) expect(r.dw0 >>> 0).toBe(k.dw0);
        expect(c.closed).toBe(false);
      });
    }

    it('Connect whose data is not 1024 bytes → Invalid Parameters, IPO 24 (the SGL, in the command: IATTR 0)', async () => {
      const c = await rawClient();
      await c.icReq();
      const s = sglInCapsule(withCid(connectSqe(0, 31, 0), 1), 512);
      c.send(capsuleCmd(s, { data: connectData(randomBytes(16), 0xffff, SUBNQN, HOSTNQN).subarray(0, 512) }));
      const r = await c.response(1);
      expectStatus(r.status, STATUS.ConnectInvalidParameters);
      expect(r.dw0 >>> 0).toBe(24);
    });

    it('Connect to an I/O subsystem on the discovery port → Invalid Parameters, IPO 256', async () => {
      const c = await rawClient(t.discoveryPort);
      await c.icReq();
      const r = await c.exec((cid) => connectCapsule({ cid, hostid: randomBytes(16), subnqn: SUBNQN, hostnqn: HOSTNQN }));
      expectStatus(r.status, STATUS.ConnectInvalidParameters);
      expect(r.dw0 >>> 0).toBe((1 << 16) | 256);
    });

    it('an I/O queue id that is already connected → Invalid Parameters, IPO 42', async () => {
      const a = await adminSession();
      await ioSession(a, 1);
      const c = await rawClient();
      await c.icReq();
      const r = await c.exec((cid) => connectCapsule({ cid, qid: 1, sqsize: 127, hostid: a.hostid, cntlid: a.cntlid, subnqn: SUBNQN, hostnqn: HOSTNQN }));
      expectStatus(r.status, STATUS.ConnectInvalidParameters);
      expect(r.dw0 & 0xffff).toBe(42);
    });

    it('an I/O queue from another host NQN than the controller', async () => {
      t.target.setHosts(SUBNQN, [HOSTNQN, OTHER_HOSTNQN]);
      try {
        const a = await adminSession();
        const c = await rawClient();
        await c.icReq();
        const r = await c.exec((cid) => connectCapsule({ cid, qid: 1, sqsize: 127, hostid: a.hostid, cntlid: a.cntlid, subnqn: SUBNQN, hostnqn: OTHER_HOSTNQN }));
        expectStatus(r.status, STATUS.ConnectInvalidParameters);
      } finally {
        t.target.setHosts(SUBNQN, [HOSTNQN]);
      }
    });

    it('Connect on a queue that is already connected → Command Sequence Error', async () => {
      const a = await adminSession();
      const r = await a.c.exec((cid) => connectCapsule({ cid, hostid: a.hostid, subnqn: SUBNQN, hostnqn: HOSTNQN }));
      expectStatus(r.status, STATUS.CommandSequenceError);
    });
  });

  describe('admin queue', () => {
    it('admin commands before CC.EN → Command Sequence Error +DNR; Fabrics commands still work', async () => {
      const a = await adminSession({ enable: false });
      expectStatus((await a.c.exec((cid) => cmd.identify(cid, CNS.Controller))).status, STATUS.CommandSequenceError);
      expectStatus((await a.c.exec((cid) => cmd.setFeatures(cid, FID.NumberOfQueues, 0))).status, STATUS.CommandSequenceError);
      expectStatus((await a.c.exec((cid) => cmd.raw(cid, sglTransport(bareSqe(0x80), 0)))).status, STATUS.CommandSequenceError);
      const csts = await a.c.exec((cid) => cmd.propertyGet(cid, PROPERTY.CSTS, false));
      expectStatus(csts.status, 0);
      expect(csts.dw0 & 1).toBe(0);
      // An I/O queue can connect, but I/O before enable is refused too.
      const io = await ioSession(a);
      expectStatus((await io.exec((cid) => cmd.read(cid, 1, 0, 1))).status, STATUS.CommandSequenceError);
      expectStatus((await a.c.exec((cid) => cmd.enable(cid))).status, 0);
      expect((await a.c.exec((cid) => cmd.propertyGet(cid, PROPERTY.CSTS, false))).dw0 & 1).toBe(1);
      expectStatus((await io.exec((cid) => cmd.read(cid, 1, 0, 1))).status, 0);
    });

    it('reports CAP (MQES 127, TO 15, CSS NVM), VS 1.4.0, and refuses unknown properties', async () => {
      const a = await adminSession({ enable: false });
      const cap = await a.c.exec((cid) => cmd.propertyGet(cid, PROPERTY.CAP, true));
      const value = BigInt(cap.dw0 >>> 0) | (BigInt(cap.dw1 >>> 0) << 32n);
      expect(value & 0xffffn).toBe(127n);
      expect((value >> 24n) & 0xffn).toBe(15n);
      expect((value >> 37n) & 0xffn).toBe(1n);
      expect((value >> 48n) & 0xfn).toBe(0n);
      expect((await a.c.exec((cid) => cmd.propertyGet(cid, PROPERTY.VS, false))).dw0).toBe(0x00010400);
      expectStatus((await a.c.exec((cid) => cmd.propertyGet(cid, 0x4000, false))).status, STATUS.InvalidField);
      expectStatus((await a.c.exec((cid) => cmd.propertySet(cid, PROPERTY.CSTS, 1))).status, STATUS.InvalidField);
    });

    it('invalid CC (IOSQES 0) sets CSTS.CFS instead of RDY', async () => {
      const a = await adminSession({ enable: false });
      expectStatus((await a.c.exec((cid) => cmd.propertySet(cid, PROPERTY.CC, 1))).status, 0);
      const csts = (await a.c.exec((cid) => cmd.propertyGet(cid, PROPERTY.CSTS, false))).dw0;
      expect(csts & 3).toBe(2);
    });

    it('shutdown notification completes at once (SHST = 10b)', async () => {
      const a = await adminSession();
      expectStatus((await a.c.exec((cid) => cmd.propertySet(cid, PROPERTY.CC, CC_ENABLE | (1 << 14)))).status, 0);
      const csts = (await a.c.exec((cid) => cmd.propertyGet(cid, PROPERTY.CSTS, false))).dw0;
      expect((csts >> 2) & 3).toBe(2);
    });

    it('Identify Controller carries the Connect CNTLID', async () => {
      const a = await adminSession();
      const r = await a.c.exec((cid) => cmd.identify(cid, CNS.Controller));
      expectStatus(r.status, 0);
      expect(r.data!.length).toBe(4096);
      expect(r.data!.readUInt16LE(78)).toBe(a.cntlid);
      expect(r.data![111]).toBe(1);
    });

    for (const opc of [ADMIN_OPC.DeleteIoSq, ADMIN_OPC.CreateIoSq, ADMIN_OPC.DeleteIoCq, ADMIN_OPC.CreateIoCq, 0x10, 0x11, 0x80, 0x84, 0xc0, 0xff]) {
      it(`unsupported admin opcode 0x${opc.toString(16)} → Invalid Opcode +DNR`, async () => {
        const a = await adminSession();
        const r = await a.c.exec((cid) => cmd.raw(cid, sglTransport(bareSqe(opc), 0)));
        expectStatus(r.status, STATUS.InvalidOpcode);
      });
    }

    it('unsupported admin opcodes that would move data by R2T or in-capsule → Invalid Opcode, no R2T', async () => {
      const a = await adminSession();
      // Namespace Management (0x0D) and Firmware Image Download (0x11) are host-to-controller.
      const viaR2T = await a.c.exec((cid) => cmd.raw(cid, sglTransport(bareSqe(0x0d), 4096)));
      expectStatus(viaR2T.status, STATUS.InvalidOpcode);
      const inCapsule = await a.c.exec((cid) => cmd.raw(cid, sglInCapsule(bareSqe(0x11), 512), { data: Buffer.alloc(512) }));
      expectStatus(inCapsule.status, STATUS.InvalidOpcode);
      // Security Receive (0x82) is controller-to-host.
      const toHost = await a.c.exec((cid) => cmd.raw(cid, sglTransport(bareSqe(0x82), 4096)));
      expectStatus(toHost.status, STATUS.InvalidOpcode);
      expect(a.c.pdus.some((p) => p.r2t || p.c2h)).toBe(false);
    });

    it('an unknown Fabrics command type → Invalid Opcode', async () => {
      const a = await adminSession();
      const s = bareSqe(OPC_FABRICS);
      s[4] = 0x42;
      expectStatus((await a.c.exec((cid) => cmd.raw(cid, sglTransport(s, 0)))).status, STATUS.InvalidOpcode);
      const auth = bareSqe(OPC_FABRICS);
      auth[4] = FCTYPE.AuthReceive;
      expectStatus((await a.c.exec((cid) => cmd.raw(cid, sglTransport(auth, 0)))).status, STATUS.InvalidOpcode);
    });

    it('a fused command → Invalid Field', async () => {
      const a = await adminSession();
      const s = sglTransport(identifySqe(CNS.Controller), 4096);
      s[1] = 0x01;
      const cid = a.c.cid();
      const pdu = capsuleCmd(s);
      pdu.writeUInt16LE(cid, 8 + 2);
      pdu[8 + 1] = 0x41; // PSDT SGL, FUSE first
      a.c.send(pdu);
      expectStatus((await a.c.response(cid)).status, STATUS.InvalidField);
    });

    it('Identify: unknown CNS → Invalid Field; NSID 0 or 0xFFFFFFFF for CNS 00h → Invalid Namespace', async () => {
      const a = await adminSession();
      expectStatus((await a.c.exec((cid) => cmd.identify(cid, 0x1f))).status, STATUS.InvalidField);
      expectStatus((await a.c.exec((cid) => cmd.identify(cid, CNS.Namespace, 0))).status, STATUS.InvalidNamespace);
      expectStatus((await a.c.exec((cid) => cmd.identify(cid, CNS.Namespace, 0xffffffff))).status, STATUS.InvalidNamespace);
      expectStatus((await a.c.exec((cid) => cmd.identify(cid, CNS.NamespaceDescriptors, 77))).status, STATUS.InvalidNamespace);
      expectStatus((await a.c.exec((cid) => cmd.identify(cid, CNS.ActiveNamespaces, 0xfffffffe))).status, STATUS.InvalidNamespace);
      const inactive = await a.c.exec((cid) => cmd.identify(cid, CNS.Namespace, 77));
      expectStatus(inactive.status, 0);
      expect(inactive.data!.every((x) => x === 0)).toBe(true);
    });

    it('Identify with a read SGL that is not 4096 bytes gets exactly the bytes it asked for, or an error for huge lengths', async () => {
      const a = await adminSession();
      const small = await a.c.exec((cid) => cmd.raw(cid, sglTransport(identifySqe(CNS.Controller), 1024)));
      expectStatus(small.status, 0);
      expect(small.data!.length).toBe(1024);
      const huge = await a.c.exec((cid) => cmd.raw(cid, sglTransport(identifySqe(CNS.Controller), 0x7fffffff)));
      expectStatus(huge.status, STATUS.DataSglLengthInvalid);
      expect(huge.data).toBeUndefined();
    });

    it('Identify with an in-capsule (host-to-controller) SGL → error, no data', async () => {
      const a = await adminSession();
      const r = await a.c.exec((cid) => cmd.raw(cid, sglInCapsule(identifySqe(CNS.Controller), 0)));
      expect(r.status).not.toBe(0);
      expect(r.data).toBeUndefined();
    });

    it('SGL descriptor types other than Data Block and Transport Data Block → SGL Descriptor Type Invalid', async () => {
      const a = await adminSession();
      for (const type of [0x40 /* keyed (RDMA) */, 0x20 /* segment */, 0x30 /* last segment */, 0x10 /* bit bucket */, 0x0a, 0xff]) {
        const r = await a.c.exec((cid) => cmd.raw(cid, sglRaw(identifySqe(CNS.Controller), type, 4096)));
        expectStatus(r.status, STATUS.SglDescriptorTypeInvalid);
      }
    });

    it('Get Log Page: LPO not dword aligned, LPO beyond the log, unknown LID → Invalid Field', async () => {
      const a = await adminSession();
      expectStatus((await a.c.exec((cid) => cmd.getLogPage(cid, LID.Smart, 64, 2))).status, STATUS.InvalidField);
      expectStatus((await a.c.exec((cid) => cmd.getLogPage(cid, LID.Smart, 64, 1024))).status, STATUS.InvalidField);
      expectStatus((await a.c.exec((cid) => cmd.getLogPage(cid, LID.Smart, 64, 2 ** 40))).status, STATUS.InvalidField);
      expectStatus((await a.c.exec((cid) => cmd.getLogPage(cid, 0x0c, 64))).status, STATUS.InvalidField); // ANA: not supported
      expectStatus((await a.c.exec((cid) => cmd.getLogPage(cid, LID.Discovery, 1024))).status, STATUS.InvalidField);
      const ok = await a.c.exec((cid) => cmd.getLogPage(cid, LID.Smart, 512, 0));
      expectStatus(ok.status, 0);
      expect(ok.data!.length).toBe(512);
      const tail = await a.c.exec((cid) => cmd.getLogPage(cid, LID.Smart, 64, 480));
      expectStatus(tail.status, 0);
      expect(tail.data!.length).toBe(64);
    });

    it('Get Log Page whose NUMD asks for gigabytes → error, no allocation', async () => {
      const a = await adminSession();
      const s = getLogPageSqe(LID.Smart, 512);
      s.writeUInt32LE(((LID.Smart & 0xff) | (0xffff << 16)) >>> 0, 40);
      s.writeUInt32LE(0xffff, 44); // NUMDU: 2^32 dwords = 16 GiB
      const r = await a.c.exec((cid) => cmd.raw(cid, sglTransport(s, 512)));
      expect(r.status).not.toBe(0);
      expect(r.data).toBeUndefined();
      await a.c.exec((cid) => cmd.keepAlive(cid)); // still answering
    });

    it('Set/Get Features errors: unknown FID, SV on a non-saveable feature, 0xFFFF queues', async () => {
      const a = await adminSession();
      expectStatus((await a.c.exec((cid) => cmd.setFeatures(cid, 0x7e, 0))).status, STATUS.InvalidField);
      expectStatus((await a.c.exec((cid) => cmd.raw(cid, sglTransport(setFeaturesSqe((FID.KeepAliveTimer | (1 << 31)) >>> 0, 5000), 0)))).status, STATUS.FeatureNotSaveable);
      expectStatus((await a.c.exec((cid) => cmd.setFeatures(cid, FID.NumberOfQueues, 0xffffffff))).status, STATUS.InvalidField);
      const nq = await a.c.exec((cid) => cmd.setFeatures(cid, FID.NumberOfQueues, (3 << 16) | 3));
      expectStatus(nq.status, 0);
      expect(nq.dw0 & 0xffff).toBeGreaterThanOrEqual(3);
    });

    it('Keep Alive: success with a KATO; Keep Alive Timeout Invalid without one', async () => {
      const withKato = await adminSession({ katoMs: 30_000 });
      expectStatus((await withKato.c.exec((cid) => cmd.keepAlive(cid))).status, 0);
      const withoutKato = await adminSession({ katoMs: 0 });
      expectStatus((await withoutKato.c.exec((cid) => cmd.keepAlive(cid))).status, STATUS.KeepAliveTimeoutInvalid);
    });

    it('Asynchronous Event Requests beyond AERL+1 → Async Event Request Limit Exceeded +DNR', async () => {
      const a = await adminSession();
      const cids = [0, 1, 2, 3].map(() => a.c.cid());
      for (const cid of cids) a.c.send(cmd.aer(cid));
      const fifth = await a.c.exec((cid) => cmd.aer(cid));
      expectStatus(fifth.status, STATUS.AsyncEventLimitExceeded);
      expect(a.c.pdus.some((p) => p.cqe && cids.includes(p.cqe.cid))).toBe(false);
    });

    it('a command id still in flight (a parked AER) → Command ID Conflict, the AER stays parked', async () => {
      const a = await adminSession();
      await a.c.exec((cid) => cmd.setFeatures(cid, FID.AsyncEventConfiguration, 0x100));
      const aerCid = a.c.cid();
      a.c.send(cmd.aer(aerCid));
      a.c.send(cmd.keepAlive(aerCid));
      const conflict = await a.c.response(aerCid);
      expectStatus(conflict.status, STATUS.CommandIdConflict);
      t.addNamespace(90, 16);
      try {
        const aen = await a.c.response(aerCid);
        expectStatus(aen.status, 0);
        expect(aen.dw0).toBe(AEN.NamespaceAttributeChanged);
      } finally {
        t.target.removeNamespace(SUBNQN, 90);
        t.backends.delete(90);
      }
    });
  });

  describe('I/O queue', () => {
    let a: AdminSession;
    let io: RawClient;
    beforeAll(async () => {
      a = await adminSession();
      io = await ioSession(a);
      clients.splice(0); // kept for the whole block
    });
    afterAll(() => {
      io.close();
      a.c.close();
    });

    for (const opc of [0x04 /* Write Uncorrectable */, 0x05 /* Compare */, 0x0c /* Verify */, 0x0d /* Reservation Register */, 0x0e /* Reservation Report */, 0x19 /* Copy */, 0x79 /* Zone Mgmt Recv */, 0x80, 0xff]) {
      it(`unsupported I/O opcode 0x${opc.toString(16)} → Invalid Opcode +DNR, no R2T`, async () => {
        const r = await io.exec((cid) => cmd.raw(cid, sglTransport(bareSqe(opc, 1), 0)));
        expectStatus(r.status, STATUS.InvalidOpcode);
        const withData = await io.exec((cid) => cmd.raw(cid, sglTransport(bareSqe(opc, 1), 4096)));
        expectStatus(withData.status, STATUS.InvalidOpcode);
        expect(io.pdus.some((p) => p.r2t)).toBe(false);
      });
    }

    it('a Fabrics command other than Connect on an I/O queue → Invalid Opcode', async () => {
      expectStatus((await io.exec((cid) => cmd.propertyGet(cid, PROPERTY.CAP, true))).status, STATUS.InvalidOpcode);
    });

    it('LBA Out of Range +DNR for reads, in-capsule writes, R2T writes (no R2T sent) and Write Zeroes', async () => {
      expectStatus((await io.exec((cid) => cmd.read(cid, 1, NS_BLOCKS - 1, 2))).status, STATUS.LbaOutOfRange);
      expectStatus((await io.exec((cid) => cmd.read(cid, 1, 2 ** 40, 1))).status, STATUS.LbaOutOfRange);
      expectStatus((await io.exec((cid) => cmd.write(cid, 1, NS_BLOCKS, Buffer.alloc(4096)))).status, STATUS.LbaOutOfRange);
      expectStatus((await io.exec((cid) => cmd.writeR2T(cid, 1, NS_BLOCKS - 4, 8))).status, STATUS.LbaOutOfRange);
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglTransport(writeZeroesSqe(1, NS_BLOCKS - 1, 2), 0)))).status, STATUS.LbaOutOfRange);
      const dsm = dsmRanges([{ slba: NS_BLOCKS - 1, nlb: 2 }]);
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglInCapsule(dsmSqe(1, 1, true), dsm.length), { data: dsm }))).status, STATUS.LbaOutOfRange);
      expect(io.pdus.some((p) => p.r2t)).toBe(false);
      // The last block itself is fine.
      const last = await io.exec((cid) => cmd.read(cid, 1, NS_BLOCKS - 1, 1));
      expectStatus(last.status, 0);
      expect(last.data!.length).toBe(4096);
    });

    it('Invalid Namespace +DNR for unknown, zero and broadcast NSIDs', async () => {
      for (const nsid of [0, 2, 99, 0xffffffff]) {
        expectStatus((await io.exec((cid) => cmd.read(cid, nsid, 0, 1))).status, STATUS.InvalidNamespace);
        expectStatus((await io.exec((cid) => cmd.writeR2T(cid, nsid, 0, 1))).status, STATUS.InvalidNamespace);
        expectStatus((await io.exec((cid) => cmd.flush(cid, nsid))).status, STATUS.InvalidNamespace);
      }
      expect(io.pdus.some((p) => p.r2t)).toBe(false);
    });

    it('Data SGL Length Invalid +DNR when the SGL length is not the transfer length', async () => {
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglTransport(readSqe(1, 0, 1), 8192)))).status, STATUS.DataSglLengthInvalid);
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglTransport(readSqe(1, 0, 2), 4096)))).status, STATUS.DataSglLengthInvalid);
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglTransport(writeSqe(1, 0, 1), 512)))).status, STATUS.DataSglLengthInvalid);
      // In-capsule: the SGL says 8192 but the capsule carries 4096.
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglInCapsule(writeSqe(1, 0, 2), 8192), { data: Buffer.alloc(4096) }))).status, STATUS.DataSglLengthInvalid);
      const dsm = dsmRanges([{ slba: 0, nlb: 1 }]);
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglInCapsule(dsmSqe(1, 2, true), dsm.length), { data: dsm }))).status, STATUS.DataSglLengthInvalid);
      expect(io.pdus.some((p) => p.r2t)).toBe(false);
      expect(t.backends.get(1)!.data[0]).toBe(0);
    });

    it('SGL Descriptor Type Invalid +DNR for keyed and segment descriptors', async () => {
      for (const type of [0x40, 0x20, 0x30, 0x10, 0x4a]) {
        expectStatus((await io.exec((cid) => cmd.raw(cid, sglRaw(readSqe(1, 0, 1), type, 4096)))).status, STATUS.SglDescriptorTypeInvalid);
      }
    });

    it('SGL Offset Invalid for an in-capsule SGL with a non-zero offset or beyond the in-capsule size', async () => {
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglInCapsule(writeSqe(1, 0, 1), 4096, 16n), { data: Buffer.alloc(4096) }))).status, STATUS.SglOffsetInvalid);
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglInCapsule(writeSqe(1, 0, 4), 16384), { data: Buffer.alloc(4096) }))).status, STATUS.SglOffsetInvalid);
    });

    it('a read with an in-capsule SGL → Invalid Field, no data', async () => {
      const r = await io.exec((cid) => cmd.raw(cid, sglInCapsule(readSqe(1, 0, 1), 4096), { data: Buffer.alloc(4096) }));
      expectStatus(r.status, STATUS.InvalidField);
      expect(r.data).toBeUndefined();
    });

    it('a transfer beyond MDTS → Invalid Field', async () => {
      expectStatus((await io.exec((cid) => cmd.raw(cid, sglTransport(readSqe(1, 0, 512), 512 * 4096)))).status, STATUS.InvalidField);
    });

    it('a command id still waiting for its R2T data → Command ID Conflict; the write then completes', async () => {
      const cid = io.cid();
      io.send(cmd.writeR2T(cid, 1, 40, 1));
      const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t?.cid === cid)?.r2t, 5000, 'R2T');
      io.send(cmd.read(cid, 1, 0, 1));
      expectStatus((await io.response(cid)).status, STATUS.CommandIdConflict);
      io.send(h2cData({ cid, ttag: r2t.ttag, datao: 0, data: Buffer.alloc(4096, 0x5e) }));
      expectStatus((await io.response(cid)).status, 0);
      expect(t.backends.get(1)!.data[40 * 4096]).toBe(0x5e);
      io.pdus.splice(0); // forget the R2T for the "no R2T" checks above
    });

    it('writes via R2T are split by MAXH2CDATA and land intact', async () => {
      const data = randomBytes(40960); // 2.5 × MAXH2CDATA
      const cid = io.cid();
      io.send(cmd.writeR2T(cid, 1, 200, 10));
      let got = 0;
      const r2ts: Array<{ r2to: number; r2tl: number }> = [];
      while (got < data.length) {
        const r2t = await io.waitFor(() => io.pdus.find((p) => p.r2t?.cid === cid && !p.consumed), 5000, 'R2T');
        r2t.consumed = true;
        r2ts.push({ r2to: r2t.r2t!.r2to, r2tl: r2t.r2t!.r2tl });
        // Two H2CData PDUs per R2T, the way hosts ≥ 5.17 split by MAXH2CDATA (here by half).
        const { r2to, r2tl, ttag } = r2t.r2t!;
        const half = Math.ceil(r2tl / 2 / 4) * 4;
        io.send(h2cData({ cid, ttag, datao: r2to, data: data.subarray(r2to, r2to + half), last: false }));
        io.send(h2cData({ cid, ttag, datao: r2to + half, data: data.subarray(r2to + half, r2to + r2tl) }));
        got = r2to + r2tl;
      }
      expectStatus((await io.response(cid)).status, 0);
      expect(r2ts).toEqual([
        { r2to: 0, r2tl: MAXH2CDATA },
        { r2to: MAXH2CDATA, r2tl: MAXH2CDATA },
        { r2to: 2 * MAXH2CDATA, r2tl: 8192 },
      ]);
      const back = await io.exec((c) => cmd.read(c, 1, 200, 10));
      expect(back.data!.equals(data)).toBe(true);
      io.pdus.splice(0);
    });
  });
});

// =====================================================================================================
// Byte streams split at every offset

interface Summary {
  icResp: ParsedPdu['icResp'];
  byCid: Array<{ cid: number; status: string; dw0: number; dw1: number; sqid: number; data?: string }>;
  sqhds: number[];
}

/**
 * Reduces what the target sent to what a host may rely on: per command id its status, DW0/DW1 and
 * data (C2HData must precede the CapsuleResp and cover the command contiguously from offset 0), plus
 * the set of SQHD values. Completion order across commands is not part of NVMe's contract (Fabrics
 * commands complete synchronously, admin commands a tick later), so it is not compared.
 */
function summarize(pdus: ParsedPdu[], normalize: { connectCid: number; identifyCtrlCid?: number; cntlid: number }): Summary {
  const data = new Map<number, Buffer[]>();
  const seen = new Set<number>();
  const byCid: Summary['byCid'] = [];
  const sqhds: number[] = [];
  let icResp: Summary['icResp'];
  for (const p of pdus) {
    if (p.icResp) icResp = p.icResp;
    else if (p.termReq) throw new Error(`unexpected C2HTermReq FES ${p.termReq.fes}`);
    else if (p.c2h) {
      if (seen.has(p.c2h.cid)) throw new Error(`C2HData after the CapsuleResp of CID ${p.c2h.cid}`);
      const list = data.get(p.c2h.cid) ?? [];
      const at = list.reduce((n, b) => n + b.length, 0);
      if (p.c2h.datao !== at) throw new Error(`C2HData DATAO ${p.c2h.datao}, expected ${at}`);
      list.push(p.data!);
      data.set(p.c2h.cid, list);
    } else if (p.cqe) {
      const { cid } = p.cqe;
      if (seen.has(cid)) throw new Error(`two CapsuleResps for CID ${cid}`);
      seen.add(cid);
      sqhds.push(p.cqe.sqhd);
      let d = data.has(cid) ? Buffer.concat(data.get(cid)!) : undefined;
      let dw0 = p.cqe.dw0;
      if (cid === normalize.connectCid) {
        if ((dw0 & 0xffff) !== normalize.cntlid) throw new Error('Connect DW0 is not the CNTLID');
        dw0 = 0;
      }
      if (d && cid === normalize.identifyCtrlCid) {
        if (d.readUInt16LE(78) !== normalize.cntlid) throw new Error('Identify CNTLID is not the Connect CNTLID');
        d = Buffer.from(d);
        d.writeUInt16LE(0, 78);
      }
      byCid.push({ cid, status: describeStatus(p.cqe.status), dw0, dw1: p.cqe.dw1, sqid: p.cqe.sqid, data: d && `${d.length}:${createHash('sha1').update(d).digest('hex')}` });
    } else if (p.r2t) {
      throw new Error('unexpected R2T');
    }
  }
  byCid.sort((x, y) => x.cid - y.cid);
  sqhds.sort((x, y) => x - y);
  return { icResp, byCid, sqhds };
}

function serverSocketOf(c: RawClient) {
  return [...t.listener.queues].find((q) => q.socket.remotePort === c.socket.localPort)?.socket;
}

/**
 * Sends `stream` on a fresh connection cut at the offsets in `cuts` (none: one write). Each piece is
 * written only after the target has read everything before it, so the target sees exactly these chunk
 * boundaries. Waits for every command's response, then closes and returns every PDU received.
 */
async function runStream(stream: Buffer, cids: number[], cuts: number[] = []): Promise<ParsedPdu[]> {
  const c = await RawClient.connect(t.ioPort);
  try {
    let server: ReturnType<typeof serverSocketOf>;
    let from = 0;
    for (const at of [...cuts, stream.length]) {
      c.send(stream.subarray(from, at));
      from = at;
      if (at === stream.length) break;
      await until(() => ((server ??= serverSocketOf(c))?.bytesRead ?? 0) >= at, 5000, `the target to read ${at} bytes`);
    }
    await c.waitFor(() => cids.every((cid) => c.pdus.some((p) => p.cqe?.cid === cid)), 10_000, `responses (cut at ${cuts.slice(0, 3).join(',')}…)`);
    c.socket.end();
    await c.waitClosed();
    if (c.error) throw c.error;
    return c.pdus;
  } finally {
    c.close();
  }
}

async function inLanes<T>(items: T[], lanes: number, fn: (item: T, lane: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      while (next < items.length) await fn(items[next++], lane);
    }),
  );
}

/**
 * The cut sets that make every offset 1..len-1 a chunk boundary. 'pairs': one connection per offset,
 * the stream in two writes. 'strided': `runs` connections, run r cut at r, r+runs, r+2·runs, … (every
 * offset is still a boundary exactly once, in far fewer connections).
 */
function cutSets(len: number, mode: { kind: 'pairs' } | { kind: 'strided'; runs: number }): number[][] {
  if (mode.kind === 'pairs') return Array.from({ length: len - 1 }, (_, i) => [i + 1]);
  const runs = Math.min(mode.runs, len - 1);
  return Array.from({ length: runs }, (_, r) => {
    const cuts: number[] = [];
    for (let at = r + 1; at < len; at += runs) cuts.push(at);
    return cuts;
  });
}

/** Builds a stream of capsules with consecutive CIDs. */
function streamBuilder(firstCid: number, first: Buffer) {
  const parts: Buffer[] = [first];
  const cids: number[] = [];
  let next = firstCid;
  return {
    cids,
    add(build: (cid: number) => Buffer): number {
      const cid = next++;
      cids.push(cid);
      parts.push(build(cid));
      return cid;
    },
    bytes: () => Buffer.concat(parts),
  };
}

/** ICReq, Connect, the enable handshake, Identify, features, log page and Keep Alive on an admin queue. */
function adminStream(d: Digests) {
  const b = streamBuilder(0x100, icReq(d));
  const connectCid = b.add((cid) => connectCapsule({ cid, hostid: randomBytes(16), subnqn: SUBNQN, hostnqn: HOSTNQN, katoMs: 30_000 }, d));
  b.add((cid) => cmd.propertyGet(cid, PROPERTY.CAP, true, d));
  b.add((cid) => cmd.propertySet(cid, PROPERTY.CC, CC_ENABLE & ~1, d));
  b.add((cid) => cmd.propertyGet(cid, PROPERTY.CAP, true, d));
  b.add((cid) => cmd.enable(cid, d));
  b.add((cid) => cmd.propertyGet(cid, PROPERTY.CSTS, false, d));
  b.add((cid) => cmd.propertyGet(cid, PROPERTY.VS, false, d));
  const identifyCtrlCid = b.add((cid) => cmd.identify(cid, CNS.Controller, 0, d));
  b.add((cid) => cmd.setFeatures(cid, FID.NumberOfQueues, 0, d));
  b.add((cid) => cmd.setFeatures(cid, FID.AsyncEventConfiguration, 0x100, d));
  b.add((cid) => cmd.identify(cid, CNS.ActiveNamespaces, 0, d));
  b.add((cid) => cmd.identify(cid, CNS.Namespace, 1, d));
  b.add((cid) => cmd.identify(cid, CNS.NamespaceDescriptors, 1, d));
  b.add((cid) => cmd.getLogPage(cid, LID.Smart, 512, 0, false, d));
  b.add((cid) => cmd.keepAlive(cid, d));
  b.add((cid) => cmd.identify(cid, 0x1f, 0, d)); // an error, for good measure
  return { stream: b.bytes(), cids: b.cids, connectCid, identifyCtrlCid };
}

const A4K = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 31 + 7) & 0xff));
const B8K = Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 17 + 3) & 0xff));

/** ICReq, I/O Connect, in-capsule writes, reads of them, Write Zeroes, DSM, Flush on an I/O queue. */
function ioStream(admin: AdminSession, d: Digests) {
  const b = streamBuilder(0x200, icReq(d));
  const connectCid = b.add((cid) => connectCapsule({ cid, qid: 1, sqsize: 127, hostid: admin.hostid, cntlid: admin.cntlid, subnqn: SUBNQN, hostnqn: HOSTNQN }, d));
  b.add((cid) => cmd.write(cid, 1, 100, A4K, d));
  b.add((cid) => cmd.write(cid, 1, 102, B8K, d));
  b.add((cid) => cmd.read(cid, 1, 100, 1, d));
  b.add((cid) => cmd.read(cid, 1, 102, 2, d));
  b.add((cid) => cmd.raw(cid, sglTransport(writeZeroesSqe(1, 104, 1), 0), d));
  b.add((cid) => cmd.read(cid, 1, 104, 1, d));
  const ranges = dsmRanges([{ slba: 105, nlb: 1 }]);
  b.add((cid) => cmd.raw(cid, sglInCapsule(dsmSqe(1, 1, true), ranges.length), { ...d, data: ranges }));
  b.add((cid) => cmd.read(cid, 1, 105, 1, d));
  b.add((cid) => cmd.read(cid, 1, 7, 1, d));
  b.add((cid) => cmd.flush(cid, 1, d));
  b.add((cid) => cmd.read(cid, 1, NS_BLOCKS, 1, d)); // an error
  return { stream: b.bytes(), cids: b.cids, connectCid };
}

const sha = (b: Buffer) => `${b.length}:${createHash('sha1').update(b).digest('hex')}`;
const EXHAUSTIVE = process.env.NVME_SPLIT_EXHAUSTIVE === '1';

async function checkAdminSplits(d: Digests, mode: Parameters<typeof cutSets>[1]): Promise<void> {
  const s = adminStream(d);
  const cntlidOf = (pdus: ParsedPdu[]) => pdus.find((p) => p.cqe?.cid === s.connectCid)!.cqe!.dw0 & 0xffff;
  const baseline = await runStream(s.stream, s.cids);
  const expected = summarize(baseline, { connectCid: s.connectCid, identifyCtrlCid: s.identifyCtrlCid, cntlid: cntlidOf(baseline) });
  expect(expected.byCid.filter((x) => x.status !== describeStatus(0)).map((x) => x.cid)).toEqual([s.cids[s.cids.length - 1]]);
  expect(expected.icResp!.dgst).toBe((d.hdgst ? 1 : 0) | (d.ddgst ? 2 : 0));
  const failures: string[] = [];
  await inLanes(cutSets(s.stream.length, mode), SPLIT_LANES, async (cuts) => {
    try {
      const pdus = await runStream(s.stream, s.cids, cuts);
      expect(summarize(pdus, { connectCid: s.connectCid, identifyCtrlCid: s.identifyCtrlCid, cntlid: cntlidOf(pdus) })).toEqual(expected);
    } catch (e) {
      failures.push(`cut at ${cuts.slice(0, 4).join(',')}: ${(e as Error).message.split('\n')[0]}`);
    }
  });
  expect(failures.slice(0, 5)).toEqual([]);
}

async function checkIoSplits(d: Digests, mode: Parameters<typeof cutSets>[1]): Promise<void> {
  // One enabled controller per lane; every run is that controller's I/O queue 1.
  const admins = await Promise.all(Array.from({ length: SPLIT_LANES }, () => adminSession()));
  clients.splice(0);
  const ioQueueGone = (admin: AdminSession) => until(() => !t.target.controllers.get(admin.cntlid)?.queues.has(1), 5000, 'the I/O queue to be released');
  try {
    const streams = admins.map((a) => ioStream(a, d));
    const baseline = await runStream(streams[0].stream, streams[0].cids);
    await ioQueueGone(admins[0]);
    const expected = summarize(baseline, { connectCid: streams[0].connectCid, cntlid: admins[0].cntlid });
    expect(expected.byCid.map((x) => x.status)).toEqual([...Array(streams[0].cids.length - 1).fill(describeStatus(0)), describeStatus(STATUS.LbaOutOfRange)]);
    expect(expected.byCid[3].data).toBe(sha(A4K));
    expect(expected.byCid[4].data).toBe(sha(B8K));
    expect(expected.byCid[6].data).toBe(sha(Buffer.alloc(4096)));
    expect(expected.byCid[8].data).toBe(sha(Buffer.alloc(4096)));
    expect(expected.byCid[9].data).toBe(sha(Buffer.alloc(4096, 7)));
    const failures: string[] = [];
    await inLanes(cutSets(streams[0].stream.length, mode), SPLIT_LANES, async (cuts, i) => {
      try {
        const pdus = await runStream(streams[i].stream, streams[i].cids, cuts);
        expect(summarize(pdus, { connectCid: streams[i].connectCid, cntlid: admins[i].cntlid })).toEqual(expected);
      } catch (e) {
        failures.push(`cut at ${cuts.slice(0, 4).join(',')}: ${(e as Error).message.split('\n')[0]}`);
      } finally {
        await ioQueueGone(admins[i]);
      }
    });
    expect(failures.slice(0, 5)).toEqual([]);
  } finally {
    for (const a of admins) a.c.close();
  }
}

describe('byte streams split at every offset', () => {
  it('admin stream, no digests: two writes, cut at every offset, one connection each', async () => {
    await checkAdminSplits({}, { kind: 'pairs' });
  }, 240_000);

  it('admin stream, header and data digests: every offset a chunk boundary', async () => {
    await checkAdminSplits({ hdgst: true, ddgst: true }, EXHAUSTIVE ? { kind: 'pairs' } : { kind: 'strided', runs: 400 });
  }, 240_000);

  it('I/O stream with in-capsule writes and reads, header and data digests: every offset a chunk boundary', async () => {
    await checkIoSplits({ hdgst: true, ddgst: true }, EXHAUSTIVE ? { kind: 'pairs' } : { kind: 'strided', runs: 1000 });
  }, 600_000);

  it('I/O stream, no digests: every offset a chunk boundary', async () => {
    await checkIoSplits({}, EXHAUSTIVE ? { kind: 'pairs' } : { kind: 'strided', runs: 700 });
  }, 600_000);

  it('I/O stream with digests delivered one byte per read', async () => {
    const a = await adminSession();
    const s = ioStream(a, { hdgst: true, ddgst: true });
    const pdus = await runStream(s.stream, s.cids, Array.from({ length: s.stream.length - 1 }, (_, i) => i + 1));
    const sum = summarize(pdus, { connectCid: s.connectCid, cntlid: a.cntlid });
    expect(sum.byCid.map((x) => x.status)).toEqual([...Array(s.cids.length - 1).fill(describeStatus(0)), describeStatus(STATUS.LbaOutOfRange)]);
    expect(sum.byCid[3].data).toBe(sha(A4K));
    expect(sum.byCid[4].data).toBe(sha(B8K));
  }, 120_000);

  it('2000 Keep Alives in a single write are all answered, once each', async () => {
    const a = await adminSession({ katoMs: 30_000 });
    const cids = Array.from({ length: 2000 }, (_, i) => 0x1000 + i);
    a.c.send(Buffer.concat(cids.map((cid) => cmd.keepAlive(cid))));
    await a.c.waitFor(() => a.c.pdus.filter((p) => p.cqe).length >= cids.length + 2, 20_000, '2000 responses');
    const resps = a.c.pdus.filter((p) => p.cqe && p.cqe.cid >= 0x1000).map((p) => p.cqe!);
    expect(resps.map((r) => r.cid).sort((x, y) => x - y)).toEqual(cids);
    expect(resps.every((r) => r.status === 0)).toBe(true);
    await a.c.exec((cid) => cmd.identify(cid, CNS.Controller));
  }, 60_000);

  // Far beyond SQSIZE+1 outstanding commands: a host must not do this, but the target must cope.
  it('2000 small reads in a single write on an I/O queue are all answered with the right data', async () => {
    const a = await adminSession();
    const io = await ioSession(a, 1, { hdgst: true, ddgst: true });
    const cids = Array.from({ length: 2000 }, (_, i) => 0x2000 + i);
    const d = io.digests;
    io.send(Buffer.concat(cids.map((cid, i) => cmd.read(cid, 1, 300 + (i % 64), 1, d))));
    await io.waitFor(() => io.pdus.filter((p) => p.cqe && p.cqe.cid >= 0x2000).length >= cids.length, 30_000, '2000 read responses');
    const byCid = new Map<number, { status?: number; data: Buffer[] }>();
    for (const p of io.pdus) {
      const cid = p.cqe?.cid ?? p.c2h?.cid;
      if (cid === undefined || cid < 0x2000) continue;
      const e = byCid.get(cid) ?? { data: [] };
      if (p.c2h) {
        expect(e.status).toBeUndefined(); // data before the response
        e.data.push(p.data!);
      } else {
        expect(e.status).toBeUndefined(); // one response per command
        e.status = p.cqe!.status;
      }
      byCid.set(cid, e);
    }
    const bad = cids.filter((cid, i) => {
      const e = byCid.get(cid);
      const data = e && Buffer.concat(e.data);
      return !e || e.status !== 0 || data!.length !== 4096 || data!.some((x) => x !== ((300 + (i % 64)) & 0xff));
    });
    expect(bad).toEqual([]);
  }, 60_000);

  it('200 Keep Alives trickled in 7-byte writes', async () => {
    const a = await adminSession({ katoMs: 30_000 });
    const cids = Array.from({ length: 200 }, (_, i) => 0x3000 + i);
    const stream = Buffer.concat(cids.map((cid) => cmd.keepAlive(cid)));
    for (let off = 0; off < stream.length; off += 7) {
      a.c.send(stream.subarray(off, off + 7));
      if (off % 700 === 0) await new Promise((r) => setImmediate(r));
    }
    await a.c.waitFor(() => a.c.pdus.filter((p) => p.cqe && p.cqe.cid >= 0x3000).length >= cids.length, 20_000, 'responses');
  }, 60_000);
});

// =====================================================================================================

describe('asynchronous events', () => {
  const enableAen = async (host: NvmeTcpHost, mask: number) => {
    const r = await host.admin.submit(setFeaturesSqe(FID.AsyncEventConfiguration, mask));
    expect(r.status).toBe(0);
  };
  const changedNs = async (host: NvmeTcpHost, rae: boolean) => {
    const b = await host.getLogPage(LID.ChangedNamespaces, 4096, 0, rae);
    const out: number[] = [];
    for (let i = 0; i < 1024 && b.readUInt32LE(i * 4) !== 0; i++) out.push(b.readUInt32LE(i * 4));
    return out;
  };
  const notYet = async (p: Promise<unknown>, ms = 150) => {
    const r = await Promise.race([p.then(() => 'completed'), sleep(ms).then(() => 'parked')]);
    expect(r).toBe('parked');
  };

  it('hot-add and hot-remove complete a parked AER with 0x00040002; the changed-namespace log lists the NSID until read with RAE=0', async () => {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.ioPort, subnqn: SUBNQN, hostnqn: HOSTNQN });
    try {
      await enableAen(host, 0x100);
      const aer = host.admin.submit(aerSqe());
      await notYet(aer);
      t.addNamespace(7, 64);
      const c = await aer;
      expect(c.status).toBe(0);
      expect(c.dw0 >>> 0).toBe(0x00040002);
      expect(c.dw0 >>> 0).toBe(AEN.NamespaceAttributeChanged);
      expect(await changedNs(host, true)).toEqual([7]); // RAE=1 keeps it
      expect(await changedNs(host, false)).toEqual([7]);
      expect(await changedNs(host, false)).toEqual([]); // cleared
      expect(await host.activeNamespaces()).toEqual([1, 7]);
      expect(Number((await host.identify(CNS.Namespace, 7)).readBigUInt64LE(0))).toBe(64);
      expect((await host.read(7, 3, 1))[0]).toBe(3);

      const aer2 = host.admin.submit(aerSqe());
      await notYet(aer2);
      t.target.removeNamespace(SUBNQN, 7);
      t.backends.delete(7);
      expect((await aer2).dw0 >>> 0).toBe(0x00040002);
      expect(await changedNs(host, false)).toEqual([7]);
      expect(await host.activeNamespaces()).toEqual([1]);
      const gone = await host.submitIo(readSqe(7, 0, 1), { readLength: 4096 });
      expectStatus(gone.status, STATUS.InvalidNamespace);
    } finally {
      await host.close();
    }
  });

  it('the event is masked until the log is read with RAE=0, and queued while no AER is parked', async () => {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.ioPort, subnqn: SUBNQN, hostnqn: HOSTNQN });
    try {
      await enableAen(host, 0x100);
      t.addNamespace(11, 16); // no AER parked yet: the event waits
      const first = await host.admin.submit(aerSqe());
      expect(first.dw0 >>> 0).toBe(0x00040002);
      const second = host.admin.submit(aerSqe());
      t.addNamespace(12, 16); // masked: no second event before the log is read
      await notYet(second);
      expect(await changedNs(host, true)).toEqual([11, 12]);
      t.addNamespace(13, 16);
      await notYet(second);
      expect(await changedNs(host, false)).toEqual([11, 12, 13]); // re-arms
      t.addNamespace(14, 16);
      expect((await second).dw0 >>> 0).toBe(0x00040002);
      expect(await changedNs(host, false)).toEqual([14]);
    } finally {
      for (const n of [11, 12, 13, 14]) {
        t.target.removeNamespace(SUBNQN, n);
        t.backends.delete(n);
      }
      await host.close();
    }
  });

  it('no event when AEC bit 8 is off, or for a namespace the host cannot see', async () => {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.ioPort, subnqn: SUBNQN, hostnqn: HOSTNQN });
    try {
      const aer = host.admin.submit(aerSqe());
      t.addNamespace(20, 16);
      await notYet(aer);
      expect(await changedNs(host, false)).toEqual([20]);
      await enableAen(host, 0x100);
      t.target.addNamespace(SUBNQN, { nsid: 21, uuid: '6b0e6b53-0b7a-4bd2-9f7c-3b1f0f6f0a21', nguid: randomBytes(16), backend: t.backends.get(20)!, visibleTo: [OTHER_HOSTNQN] });
      await notYet(aer);
      expect(await host.activeNamespaces()).toEqual([1, 20]);
      t.target.removeNamespace(SUBNQN, 20);
      t.backends.delete(20);
      expect((await aer).dw0 >>> 0).toBe(0x00040002);
    } finally {
      t.target.removeNamespace(SUBNQN, 21);
      await host.close();
    }
  });

  it('discovery controllers get 0x0070F002 when a subsystem is added, and GENCTR moves', async () => {
    const d = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.discoveryPort, subnqn: DISCOVERY_NQN, hostnqn: HOSTNQN, katoMs: 0 });
    const extra = 'nqn.2026-11.io.thicket:hot-added';
    try {
      const before = (await d.getLogPage(LID.Discovery, 1024)).readBigUInt64LE(0);
      const set = await d.admin.submit(setFeaturesSqe(FID.AsyncEventConfiguration, 0x80000000));
      expect(set.status).toBe(0);
      const aer = d.admin.submit(aerSqe());
      await notYet(aer);
      t.target.addSubsystem(extra);
      t.target.setHosts(extra, [HOSTNQN]);
      const c = await aer;
      expect(c.status).toBe(0);
      expect(c.dw0 >>> 0).toBe(0x0070f002);
      expect(c.dw0 >>> 0).toBe(AEN.DiscoveryLogChanged);
      const head = await d.getLogPage(LID.Discovery, 1024);
      expect(head.readBigUInt64LE(0)).toBeGreaterThan(before);
      expect((await d.discoveryLog()).map((e) => e.subnqn).sort()).toEqual([extra, SUBNQN].sort());
      // Read with RAE=0 (above) re-armed it: removal is announced too.
      const aer2 = d.admin.submit(aerSqe());
      t.target.removeSubsystem(extra);
      expect((await aer2).dw0 >>> 0).toBe(0x0070f002);
      expect((await d.discoveryLog()).map((e) => e.subnqn)).toEqual([SUBNQN]);
    } finally {
      t.target.removeSubsystem(extra);
      await d.close();
    }
  });

  it('a discovery controller refuses the I/O controller AEC bit and I/O admin commands', async () => {
    const d = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.ioPort, subnqn: DISCOVERY_NQN, hostnqn: HOSTNQN, katoMs: 0 });
    try {
      const ctrl = await d.identify(CNS.Controller);
      expect(ctrl[111]).toBe(2);
      expect(ctrl.readUInt16LE(78)).toBe(d.cntlid);
      expectStatus((await d.admin.submit(identifySqe(CNS.Namespace, 1), { readLength: 4096 })).status, STATUS.InvalidField);
      expectStatus((await d.admin.submit(getLogPageSqe(LID.Smart, 512), { readLength: 512 })).status, STATUS.InvalidField);
      expectStatus((await d.admin.submit(bareSqe(ADMIN_OPC.Abort))).status, STATUS.InvalidOpcode);
      expectStatus((await d.admin.submit(setFeaturesSqe(FID.NumberOfQueues, 0))).status, STATUS.InvalidField);
    } finally {
      await d.close();
    }
  });
});

// =====================================================================================================

describe('keep-alive', () => {
  it('a controller whose host stops sending is torn down within KATO + 3 s, with its I/O queues', async () => {
    const KATO = 1000;
    const a = await adminSession({ katoMs: KATO });
    const io = await ioSession(a);
    // Alive while the host keeps sending (well past KATO).
    for (let i = 0; i < 6; i++) {
      await sleep(300);
      expectStatus((await a.c.exec((cid) => cmd.keepAlive(cid))).status, 0);
    }
    expect(a.c.closed).toBe(false);
    const last = Date.now();
    await Promise.all([a.c.waitClosed(KATO + 4000), io.waitClosed(KATO + 4000)]);
    const after = Date.now() - last;
    expect(after).toBeGreaterThanOrEqual(KATO);
    expect(after).toBeLessThanOrEqual(KATO + 3000 + TICK_SLACK_MS);
    expect(t.target.controllers.has(a.cntlid)).toBe(false);
    await t.checkHealthy();
  }, 20_000);

  it('I/O commands count as keep-alive traffic (CTRATT.TBKAS): a quiet admin queue is fine while I/O flows', async () => {
    const KATO = 1000;
    const a = await adminSession({ katoMs: KATO });
    const io = await ioSession(a);
    const start = Date.now();
    // Longer than KATO plus the target's slack, with nothing at all on the admin queue.
    while (Date.now() - start < KATO + 3000) {
      await sleep(250);
      expectStatus((await io.exec((cid) => cmd.read(cid, 1, 0, 1))).status, 0);
    }
    expect(a.c.closed).toBe(false);
    expect(io.closed).toBe(false);
  }, 20_000);

  it('a controller that connected but never enabled is reaped too', async () => {
    const KATO = 1000;
    const a = await adminSession({ katoMs: KATO, enable: false });
    const start = Date.now();
    await a.c.waitClosed(KATO + 4000);
    expect(Date.now() - start).toBeLessThanOrEqual(KATO + 3000 + TICK_SLACK_MS);
  }, 20_000);
});

describe('Connect attributes, features and per-namespace health', () => {
  it('a host that disables SQ flow control at Connect (CATTR bit 2) gets SQHD FFFFh in every completion', async () => {
    const c = await rawClient();
    await c.icReq();
    const s = connectSqe(0, 31, 0);
    s[46] = 0x04;
    const conn = await c.exec((cid) => capsuleCmd(sglInCapsule(withCid(s, cid), 1024), { data: connectData(randomBytes(16), 0xffff, SUBNQN, HOSTNQN) }));
    expectStatus(conn.status, 0);
    expect(conn.sqhd).toBe(0xffff);
    const en = await c.exec((cid) => cmd.enable(cid));
    expect(en.sqhd).toBe(0xffff);
    // Without the attribute SQHD moves with the queue.
    const a = await adminSession();
    const k1 = await a.c.exec((cid) => cmd.identify(cid, CNS.Controller));
    const k2 = await a.c.exec((cid) => cmd.identify(cid, CNS.Controller));
    expect(k2.sqhd).toBe((k1.sqhd + 1) % 32);
  });

  it('Number of Queues reports what the host may connect: after asking for one, queue 3 connects', async () => {
    const a = await adminSession();
    const nq = await a.c.exec((cid) => cmd.setFeatures(cid, FID.NumberOfQueues, 0));
    expectStatus(nq.status, 0);
    const allocated = Math.min(nq.dw0 & 0xffff, nq.dw0 >>> 16) + 1;
    expect(allocated).toBeGreaterThanOrEqual(3);
    await ioSession(a, 3);
  });

  it('Get Features SEL: capabilities (changeable, not saveable) and defaults; AEC keeps the bits set', async () => {
    const a = await adminSession();
    const getSel = (fid: number, sel: number) => {
      const s = getFeaturesSqe(fid);
      s.writeUInt32LE(((fid & 0xff) | (sel << 8)) >>> 0, 40);
      return a.c.exec((cid) => cmd.raw(cid, sglTransport(s, 0)));
    };
    const caps = await getSel(FID.KeepAliveTimer, 3);
    expectStatus(caps.status, 0);
    expect(caps.dw0 & 0x7).toBe(0x4);
    const vwc = await getSel(FID.VolatileWriteCache, 3);
    expect(vwc.dw0 & 0x7).toBe(0);
    expectStatus((await getSel(0x7e, 3)).status, STATUS.InvalidField);
    expectStatus((await a.c.exec((cid) => cmd.setFeatures(cid, FID.AsyncEventConfiguration, 0x1ff))).status, 0);
    expect((await getSel(FID.AsyncEventConfiguration, 0)).dw0 >>> 0).toBe(0x1ff);
    expect((await getSel(FID.AsyncEventConfiguration, 1)).dw0 >>> 0).toBe(0);
    expectStatus((await getSel(FID.AsyncEventConfiguration, 4)).status, STATUS.InvalidField);
  });

  it('SMART counts per namespace, sums them for FFFFFFFFh, refuses an inactive NSID and keeps counting across reconnects', async () => {
    const two = await startTestTarget({ namespaces: [1, 2] });
    try {
      const smart = async (c: RawClient, nsid: number) => {
        const s = getLogPageSqe(LID.Smart, 512, 0, nsid);
        return c.exec((cid) => cmd.raw(cid, sglTransport(s, 512)));
      };
      // Data units written at byte 48 and host write commands at byte 80 (128-bit little-endian).
      const writes = (log: Buffer) => Number(log.readBigUInt64LE(80));
      const unitsWritten = (log: Buffer) => Number(log.readBigUInt64LE(48));
      const hostid = randomBytes(16);
      const c1 = await RawClient.connect(two.ioPort);
      const cntlid = await c1.connectAdmin({ hostid, subnqn: SUBNQN, hostnqn: HOSTNQN });
      const io = await RawClient.connect(two.ioPort);
      await io.icReq();
      expectStatus((await io.exec((cid) => connectCapsule({ cid, qid: 1, sqsize: 127, hostid, cntlid, subnqn: SUBNQN, hostnqn: HOSTNQN }))).status, 0);
      for (let i = 0; i < 3; i++) expectStatus((await io.exec((cid) => cmd.write(cid, 1, i * 2, randomBytes(8192)))).status, 0);
      const ns1 = await smart(c1, 1);
      expectStatus(ns1.status, 0);
      expect(writes(ns1.data!)).toBe(3);
      expect(unitsWritten(ns1.data!)).toBe(1); // 24 KiB = 48 units of 512 bytes → 1 thousand, rounded up
      const ns2 = await smart(c1, 2);
      expect(writes(ns2.data!)).toBe(0);
      expect(writes((await smart(c1, 0xffffffff)).data!)).toBe(3);
      expectStatus((await smart(c1, 7)).status, STATUS.InvalidNamespace);
      io.close();
      c1.close();
      // A new controller of the same host sees the same counts.
      const c2 = await RawClient.connect(two.ioPort);
      await c2.connectAdmin({ hostid, subnqn: SUBNQN, hostnqn: HOSTNQN });
      expect(writes((await smart(c2, 1)).data!)).toBe(3);
      c2.close();
    } finally {
      await two.stop();
    }
  });
});
