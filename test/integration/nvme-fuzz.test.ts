// A bounded NVMe/TCP fuzzer against a live in-process target: random bytes, and valid PDU streams
// (admin and I/O, with and without digests) with random mutations — bit flips, truncation, length field
// changes, type changes, SQE fields, dropped/duplicated/reordered PDUs, odd chunking — each on a fresh
// connection. Every connection must end or be answered with well-formed PDUs and the process must not
// crash; afterwards the target still serves a normal host, holds no stray controllers or queues, and
// its memory has not exploded.
//
// Deterministic: the seed is printed and can be replayed with NVME_FUZZ_SEED=<n>. Bounded by
// NVME_FUZZ_CASES (default 2000) and NVME_FUZZ_MS (default 20000).
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dsmRanges, dsmSqe, getLogPageSqe, identifySqe, readSqe, setFeaturesSqe, writeSqe, writeZeroesSqe } from '../../src/nvmeof/host/sqe-builders.ts';
import { ADMIN_OPC, CNS, FES, FID, LID, PDU_TYPE, PROPERTY } from '../../src/nvmeof/protocol/constants.ts';
import { HOSTNQN, startTestTarget, SUBNQN, type TestTarget } from '../fixtures/nvme-target.ts';
import {
  bareSqe,
  capsuleCmd,
  cmd,
  connectCapsule,
  h2cData,
  h2cTermReq,
  icReq,
  RawClient,
  resealHeaderDigest,
  sglInCapsule,
  sglRaw,
  sglTransport,
  withCid,
  type Digests,
} from '../fixtures/pdu-builder.ts';

const SEED = Number(process.env.NVME_FUZZ_SEED ?? 0x5eed_c0de) >>> 0;
const MAX_CASES = Number(process.env.NVME_FUZZ_CASES ?? 2000);
const MAX_MS = Number(process.env.NVME_FUZZ_MS ?? 20_000);
/** Replays from this case number on (NVME_FUZZ_FIRST=282 NVME_FUZZ_CASES=1 replays case 282 alone). */
const FIRST_CASE = Number(process.env.NVME_FUZZ_FIRST ?? 0);
const CONCURRENCY = 16;
/** NVME_FUZZ_VERBOSE=1 prints every case with its outcome. */
const VERBOSE = process.env.NVME_FUZZ_VERBOSE === '1';
const MAXH2CDATA = 16384;
const NS_BLOCKS = 256;

/** mulberry32: small, fast, deterministic. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)],
    chance: (p: number) => next() < p,
    bytes: (n: number) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = int(256);
      return b;
    },
    u32: () => int(0x1_0000_0000),
  };
}
type Rng = ReturnType<typeof prng>;

interface Admin {
  cntlid: number;
  hostid: Buffer;
}

/** The ingredients of a valid stream: PDUs in order, with the digests they were built for. */
interface Stream {
  pdus: Buffer[];
  d: Digests;
  label: string;
}

function validAdminStream(r: Rng, d: Digests): Stream {
  const pdus = [icReq(d), connectCapsule({ cid: 1, hostid: randomBytes(16), subnqn: SUBNQN, hostnqn: HOSTNQN, katoMs: r.pick([0, 5000, 30_000]) }, d), cmd.enable(2, d)];
  const extra: Array<(cid: number) => Buffer> = [
    (cid) => cmd.propertyGet(cid, PROPERTY.CAP, true, d),
    (cid) => cmd.propertyGet(cid, PROPERTY.CSTS, false, d),
    (cid) => cmd.identify(cid, CNS.Controller, 0, d),
    (cid) => cmd.identify(cid, CNS.Namespace, 1, d),
    (cid) => cmd.identify(cid, CNS.ActiveNamespaces, 0, d),
    (cid) => cmd.identify(cid, CNS.NamespaceDescriptors, 1, d),
    (cid) => cmd.getLogPage(cid, LID.Smart, 512, 0, false, d),
    (cid) => cmd.getLogPage(cid, LID.ChangedNamespaces, 4096, 0, false, d),
    (cid) => cmd.getLogPage(cid, LID.CommandEffects, 4096, 0, false, d),
    (cid) => cmd.setFeatures(cid, FID.NumberOfQueues, 0x00030003, d),
    (cid) => cmd.setFeatures(cid, FID.AsyncEventConfiguration, 0x100, d),
    (cid) => cmd.setFeatures(cid, FID.KeepAliveTimer, 10_000, d),
    (cid) => cmd.aer(cid, d),
    (cid) => cmd.keepAlive(cid, d),
    (cid) => cmd.raw(cid, sglInCapsule(bareSqe(ADMIN_OPC.SetFeatures), 64), { ...d, data: r.bytes(64) }),
    (cid) => cmd.propertySet(cid, PROPERTY.CC, (1 << 14) | 1 | (6 << 16) | (4 << 20), d),
  ];
  const n = 1 + r.int(8);
  for (let i = 0; i < n; i++) pdus.push(r.pick(extra)(3 + i));
  return { pdus, d, label: 'admin' };
}

function validIoStream(r: Rng, d: Digests, admin: Admin): Stream {
  const qid = 1 + r.int(8);
  const pdus = [icReq(d), connectCapsule({ cid: 1, qid, sqsize: r.pick([31, 127]), hostid: admin.hostid, cntlid: admin.cntlid, subnqn: SUBNQN, hostnqn: HOSTNQN }, d)];
  let cid = 2;
  let ttag = 1; // the target numbers R2T tags from 1 on each connection
  const n = 1 + r.int(8);
  for (let i = 0; i < n; i++) {
    const slba = r.int(NS_BLOCKS - 8);
    switch (r.int(7)) {
      case 0:
        pdus.push(cmd.write(cid++, 1, slba, r.bytes(4096 * (1 + r.int(2))), d));
        break;
      case 1:
      case 2:
        pdus.push(cmd.read(cid++, 1, slba, 1 + r.int(4), d));
        break;
      case 3: {
        // A write by R2T: 8 KiB, one R2T (TTAG predictable), two H2CData PDUs.
        const c = cid++;
        const data = r.bytes(8192);
        pdus.push(cmd.writeR2T(c, 1, slba, 2, d));
        pdus.push(h2cData({ cid: c, ttag, datao: 0, data: data.subarray(0, 4096), last: false, ...d }));
        pdus.push(h2cData({ cid: c, ttag, datao: 4096, data: data.subarray(4096), ...d }));
        ttag++;
        break;
      }
      case 4:
        pdus.push(cmd.flush(cid++, 1, d));
        break;
      case 5:
        pdus.push(cmd.raw(cid++, sglTransport(writeZeroesSqe(1, slba, 1 + r.int(4)), 0), d));
        break;
      default: {
        const ranges = dsmRanges([{ slba, nlb: 1 + r.int(4) }]);
        pdus.push(cmd.raw(cid++, sglInCapsule(dsmSqe(1, 1, true), ranges.length), { ...d, data: ranges }));
      }
    }
  }
  return { pdus, d, label: `io q${qid}` };
}

const TYPES = [PDU_TYPE.ICReq, PDU_TYPE.ICResp, PDU_TYPE.H2CTermReq, PDU_TYPE.C2HTermReq, PDU_TYPE.CapsuleCmd, PDU_TYPE.CapsuleResp, PDU_TYPE.H2CData, PDU_TYPE.C2HData, 0x08, PDU_TYPE.R2T, 0x0a, 0xff];
const interesting32 = [0, 1, 3, 4, 7, 8, 23, 24, 71, 72, 127, 128, 129, 152, 153, 1023, 1024, 4096, 8191, 8192, 8193, 8264, 16384, 16385, 65536, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const interesting8 = [0, 1, 2, 3, 7, 8, 23, 24, 25, 28, 71, 72, 73, 76, 127, 128, 129, 152, 255];

function hasHeaderDigest(pdu: Buffer, d: Digests): boolean {
  return !!d.hdgst && pdu.length >= pdu[2] + 4 && [PDU_TYPE.CapsuleCmd, PDU_TYPE.H2CData].includes(pdu[0] as 4 | 6);
}

/** One mutation of one PDU (in place on a copy); digests are resealed most of the time so the fault reaches deeper layers. */
function mutatePdu(r: Rng, pdu: Buffer, d: Digests): { pdu: Buffer; what: string } {
  let b = Buffer.from(pdu);
  let what: string;
  // Short pieces (inserted junk, earlier truncations) only get the mutations that fit them.
  switch (b.length < 24 ? r.pick([0, 7, 8]) : r.int(9)) {
    case 0: {
      const flips = 1 + r.int(8);
      for (let i = 0; i < flips; i++) b[r.int(b.length)] ^= 1 << r.int(8);
      what = `${flips} bit flips`;
      break;
    }
    case 1:
      b.writeUInt32LE(r.chance(0.5) ? r.pick(interesting32) : Math.max(0, b.readUInt32LE(4) + r.int(17) - 8), 4);
      what = `PLEN ${b.readUInt32LE(4)}`;
      break;
    case 2:
      b[2] = r.pick(interesting8);
      what = `HLEN ${b[2]}`;
      break;
    case 3:
      b[3] = r.pick(interesting8);
      what = `PDO ${b[3]}`;
      break;
    case 4:
      b[0] = r.pick(TYPES);
      what = `type ${b[0]}`;
      break;
    case 5:
      b[1] = r.int(256);
      what = `flags ${b[1]}`;
      break;
    case 6:
      if (b[0] === PDU_TYPE.CapsuleCmd && b.length >= 72) {
        // SQE fields: opcode, FUSE/PSDT, NSID, SGL, CDW10..15.
        const field = r.pick([8, 9, 12, 32, 40, 44, 47, 48, 52, 56, 60, 64, 68]);
        if (field === 8 || field === 9 || field === 47) b[field] = r.int(256);
        else b.writeUInt32LE(r.chance(0.5) ? r.pick(interesting32) : r.u32(), field);
        what = `SQE byte ${field - 8}`;
      } else if (b[0] === PDU_TYPE.H2CData && b.length >= 24) {
        const field = r.pick([8, 10, 12, 16]);
        if (field === 8 || field === 10) b.writeUInt16LE(r.int(4), field);
        else b.writeUInt32LE(r.chance(0.5) ? r.pick(interesting32) : r.u32(), field);
        what = `H2CData field ${field}`;
      } else {
        b.writeUInt16LE(r.int(0x10000), 8);
        what = 'PFV/FES';
      }
      break;
    case 7: {
      const at = r.int(b.length + 1);
      b = Buffer.concat([b.subarray(0, at), r.bytes(1 + r.int(16)), b.subarray(at)]);
      what = 'bytes inserted';
      break;
    }
    default: {
      const at = r.int(b.length);
      b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + r.int(16)))]);
      what = 'bytes deleted';
    }
  }
  if (hasHeaderDigest(b, d) && b[2] > 0 && b[2] + 4 <= b.length && r.chance(0.8)) resealHeaderDigest(b);
  return { pdu: b, what };
}

function mutateStream(r: Rng, s: Stream): { bytes: Buffer; what: string[] } {
  let pdus = [...s.pdus];
  const what: string[] = [];
  const rounds = 1 + r.int(3);
  for (let k = 0; k < rounds; k++) {
    const i = r.int(pdus.length);
    switch (r.int(8)) {
      case 0:
        pdus.splice(i, 1);
        what.push(`drop #${i}`);
        break;
      case 1:
        pdus.splice(i, 0, pdus[i]);
        what.push(`duplicate #${i}`);
        break;
      case 2: {
        const j = r.int(pdus.length);
        [pdus[i], pdus[j]] = [pdus[j], pdus[i]];
        what.push(`swap #${i} #${j}`);
        break;
      }
      case 3:
        pdus.splice(i, 0, r.pick([h2cTermReq(r.int(8)), r.bytes(1 + r.int(64)), icReq({ hdgst: r.chance(0.5), ddgst: r.chance(0.5) })]));
        what.push(`insert at #${i}`);
        break;
      default: {
        const m = mutatePdu(r, pdus[i], s.d);
        pdus[i] = m.pdu;
        what.push(`#${i}: ${m.what}`);
      }
    }
    if (pdus.length === 0) pdus = [r.bytes(8)];
  }
  let bytes = Buffer.concat(pdus);
  if (r.chance(0.15)) {
    const cut = r.int(bytes.length);
    bytes = bytes.subarray(0, cut);
    what.push(`truncated at ${cut}`);
  }
  return { bytes, what };
}

interface Outcome {
  kind: 'termreq' | 'closed' | 'answered' | 'silent';
  error?: string;
  /** Status of the response to CID 1 (the Connect of a built stream), if any. */
  connectStatus?: number;
  fes?: number;
}

/** Sends one case on a fresh connection, in 1–4 chunks; waits until the target closes or goes quiet. */
async function runCase(t: TestTarget, r: Rng, bytes: Buffer): Promise<Outcome> {
  const c = await RawClient.connect(t.ioPort);
  try {
    const chunks = 1 + r.int(4);
    const cuts = Array.from({ length: chunks - 1 }, () => r.int(bytes.length + 1)).sort((x, y) => x - y);
    let from = 0;
    for (const at of [...cuts, bytes.length]) {
      if (c.closed) break;
      c.send(bytes.subarray(from, at));
      from = at;
      if (at !== bytes.length) await new Promise((res) => setTimeout(res, r.int(3)));
    }
    // First until the target has read every byte (so "quiet" below is the target's doing, not the
    // event loop's), then until it is quiet for 40 ms or closes; 3 s at most (the target destroys the
    // socket 1 s after a TermReq).
    const deadline = Date.now() + 3000;
    let server: net.Socket | undefined;
    while (!c.closed && Date.now() < deadline) {
      server ??= [...t.listener.queues].find((q) => q.socket.remotePort === c.socket.localPort)?.socket;
      if (server && (server.bytesRead >= bytes.length || server.destroyed)) break;
      await new Promise((res) => setTimeout(res, 2));
    }
    let seen = -1;
    while (!c.closed && Date.now() < deadline) {
      if (c.bytesReceived === seen && !c.pdus.some((p) => p.termReq)) break;
      seen = c.bytesReceived;
      await new Promise((res) => setTimeout(res, 40));
    }
    if (c.error) return { kind: 'answered', error: `malformed PDU from the target: ${c.error.message}` };
    const connectStatus = c.pdus.find((p) => p.cqe?.cid === 1)?.cqe?.status;
    const term = c.pdus.findIndex((p) => p.termReq);
    if (term >= 0) {
      const fes = c.pdus[term].termReq!.fes;
      if (term !== c.pdus.length - 1) return { kind: 'termreq', fes, connectStatus, error: 'PDUs after the C2HTermReq' };
      if (!c.closed) return { kind: 'termreq', fes, connectStatus, error: 'connection still open 3 s after the C2HTermReq' };
      return { kind: 'termreq', fes, connectStatus };
    }
    if (c.closed) return { kind: 'closed', connectStatus };
    return { kind: c.pdus.length > 0 ? 'answered' : 'silent', connectStatus };
  } finally {
    c.close();
  }
}

describe('NVMe/TCP fuzzing', () => {
  let t: TestTarget;
  const admins: Array<{ client: RawClient } & Admin> = [];

  beforeAll(async () => {
    t = await startTestTarget({ maxh2cdata: MAXH2CDATA, namespaces: [] });
    t.addNamespace(1, NS_BLOCKS);
    // Long-lived controllers whose I/O queues the fuzzed I/O streams connect to.
    for (let i = 0; i < 4; i++) {
      const client = await RawClient.connect(t.ioPort);
      const hostid = randomBytes(16);
      const cntlid = await client.connectAdmin({ hostid, subnqn: SUBNQN, hostnqn: HOSTNQN, katoMs: 0 });
      await client.exec((cid) => cmd.setFeatures(cid, FID.NumberOfQueues, 0x000f000f));
      admins.push({ client, cntlid, hostid });
    }
  });
  afterAll(async () => {
    for (const a of admins) a.client.close();
    await t.stop();
  });

  it(`survives ${MAX_CASES} mutated and random connections (seed ${SEED})`, async () => {
    console.log(`nvme fuzz: seed ${SEED} (replay with NVME_FUZZ_SEED=${SEED}), up to ${MAX_CASES} cases or ${MAX_MS} ms`);
    const crashes: string[] = [];
    const onCrash = (e: unknown) => crashes.push(String((e as Error)?.stack ?? e));
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
    const controllersBefore = t.target.controllers.size;
    const heapBefore = process.memoryUsage().heapUsed;
    const rssBefore = process.memoryUsage().rss;
    const started = Date.now();
    const counts: Record<string, number> = {};
    const failures: string[] = [];
    let done = 0;
    let next = 0;
    try {
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < MAX_CASES && Date.now() - started < MAX_MS) {
            const caseNo = FIRST_CASE + next++;
            // Each case draws from its own generator, so a failing case replays alone with its number.
            const r = prng((SEED ^ Math.imul(caseNo + 1, 0x9e3779b1)) >>> 0);
            let bytes: Buffer;
            let label: string;
            let unmutated = false;
            const d: Digests = { hdgst: r.chance(0.4), ddgst: r.chance(0.4) };
            const mode = r.int(10);
            if (mode === 0) {
              bytes = r.bytes(1 + r.int(600));
              label = 'random bytes';
            } else if (mode === 1) {
              bytes = Buffer.concat([icReq(d), r.bytes(1 + r.int(600))]);
              label = 'ICReq + random bytes';
            } else {
              const s = mode < 5 ? validAdminStream(r, d) : validIoStream(r, d, r.pick(admins));
              unmutated = r.chance(0.05);
              const m = unmutated ? { bytes: Buffer.concat(s.pdus), what: ['unmutated'] } : mutateStream(r, s);
              bytes = m.bytes;
              label = `${s.label} ${d.hdgst ? 'H' : ''}${d.ddgst ? 'D' : ''}: ${m.what.join('; ')}`;
            }
            const o = await runCase(t, r, bytes);
            counts[o.kind] = (counts[o.kind] ?? 0) + 1;
            if (o.error) failures.push(`case ${caseNo} (${label}): ${o.error}`);
            else if (unmutated && o.kind !== 'answered') {
              // A valid stream must simply be answered — unless its I/O Connect lost the race for a queue
              // id to a concurrent case: then its H2CData rightly ends the connection with FES 0x02 (and
              // the target drops the still-queued Connect refusal along with everything else queued).
              const lostRace = o.connectStatus !== undefined ? o.connectStatus !== 0 : o.kind === 'termreq' && o.fes === FES.PduSequenceError && label.startsWith('io');
              if (!lostRace) failures.push(`case ${caseNo} (${label}): a valid stream got ${o.kind} (FES ${o.fes}, Connect status ${o.connectStatus})`);
            }
            if (VERBOSE) console.log(`case ${caseNo} ${o.kind}: ${label}`);
            done++;
          }
        }),
      );
      // Every fuzzed connection is gone: no controller or queue may be left behind.
      await new Promise((res) => setTimeout(res, 100));
      const deadline = Date.now() + 5000;
      while ((t.target.controllers.size !== controllersBefore || t.listener.queues.size !== admins.length) && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 50));
      }
    } finally {
      process.off('uncaughtException', onCrash);
      process.off('unhandledRejection', onCrash);
    }
    const elapsed = Date.now() - started;
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    console.log(
      `nvme fuzz: ${done} cases in ${elapsed} ms; outcomes ${JSON.stringify(counts)}; heap +${(heapGrowth / 1048576).toFixed(1)} MiB, rss +${(rssGrowth / 1048576).toFixed(1)} MiB`,
    );
    expect(crashes).toEqual([]);
    expect(failures.slice(0, 10)).toEqual([]);
    expect(done).toBeGreaterThanOrEqual(Math.min(MAX_CASES, 200));
    expect(t.target.controllers.size).toBe(controllersBefore);
    expect(t.listener.queues.size).toBe(admins.length);
    expect(heapGrowth).toBeLessThan(256 * 1024 * 1024);
    expect(rssGrowth).toBeLessThan(1024 * 1024 * 1024);

    // The long-lived controllers still answer, and a normal host still connects and moves data.
    for (const a of admins) expect((await a.client.exec((cid) => cmd.identify(cid, CNS.Controller))).status).toBe(0);
    await t.checkHealthy();
  }, 120_000);

  it('targeted: SQE fields with absurd lengths and counts on live queues', async () => {
    // The shapes a fuzzer finds slowly: huge SGL lengths, NUMD, NLB, NR, DSM ranges, on enabled queues.
    const a = admins[0];
    const io = await RawClient.connect(t.ioPort);
    try {
      await io.icReq();
      const conn = await io.exec((cid) => connectCapsule({ cid, qid: 15, sqsize: 127, hostid: a.hostid, cntlid: a.cntlid, subnqn: SUBNQN, hostnqn: HOSTNQN }));
      expect(conn.status).toBe(0);
      const adminCmds = [
        sglTransport(identifySqe(CNS.Controller), 0xffffffff),
        sglTransport(identifySqe(CNS.Controller), 0),
        sglTransport(getLogPageSqe(LID.Smart, 4), 0xfffffffc),
        sglTransport(setFeaturesSqe(FID.KeepAliveTimer, 0xffffffff), 0),
        sglRaw(identifySqe(CNS.Controller), 0x01, 0xffffffff),
        sglTransport(bareSqe(ADMIN_OPC.GetFeatures), 0xffffffff),
      ];
      for (const s of adminCmds) {
        const r = await a.client.exec((cid) => capsuleCmd(withCid(s, cid)));
        expect(r.data === undefined || r.data.length <= 4096).toBe(true);
      }
      // Keep Alive Timer 0xFFFFFFFF ms was accepted or refused; put it back so the controller lives on.
      await a.client.exec((cid) => cmd.setFeatures(cid, FID.KeepAliveTimer, 0));
      const ioCmds = [
        sglTransport(readSqe(1, 0, 0x10000), 0xffffffff),
        sglTransport(writeSqe(1, 0, 0x10000), 0x10000 * 4096),
        sglTransport(readSqe(1, 2 ** 53, 1), 4096),
        sglTransport(writeZeroesSqe(1, 0xffffffff, 0x10000), 0),
        sglRaw(writeSqe(1, 0, 1), 0x01, 0xffffffff),
      ];
      for (const s of ioCmds) {
        const r = await io.exec((cid) => capsuleCmd(withCid(s, cid)));
        expect(r.status).not.toBe(0);
      }
      expect(io.pdus.some((p) => p.r2t && p.r2t.r2tl > MAXH2CDATA)).toBe(false);
      const dsm = dsmRanges(Array.from({ length: 256 }, () => ({ slba: 2 ** 40, nlb: 0xffffffff })));
      const r = await io.exec((cid) => capsuleCmd(withCid(sglInCapsule(dsmSqe(1, 256, true), dsm.length), cid), { data: dsm }));
      expect(r.status).not.toBe(0);
    } finally {
      io.close();
    }
    await t.checkHealthy();
  });
});
