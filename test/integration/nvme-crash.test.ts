// Crash test through the NVMe/TCP protocol: the real Thicket process (node src/main.ts) exports four
// clones of one small replica; this process connects with the TypeScript NVMe/TCP host and runs a random
// workload on them (4-64 KiB writes at random LBAs, FUA writes, Flush, Write Zeroes with and without FUA,
// Deallocate; many commands in flight on two I/O queues), SIGKILLs Thicket at a random moment while
// commands are in flight, restarts it on the same data directory, reconnects (the exports come back by
// themselves) and reads every block of every namespace.
//
// The model, per namespace and LBA (the engine crash test's, seen from the host): every command has a
// start (submitted) and an end (completion received; never, if it was in flight at the kill) on one
// clock. A command is known durable when it is a FUA write (or FUA Write Zeroes) that completed, or a
// write / Write Zeroes / Deallocate that completed before a Flush of its namespace was submitted, and that
// Flush completed. A durable command D supersedes every command that ended before D started. What a block
// may read after the crash: the value it had before the round (if no durable command touched it), and
// the value of every command on it that no durable command surely followed, acknowledged or still in
// flight. Every written 4 KiB block carries a header naming (namespace, LBA, round, write sequence) and a
// payload derived from it, so a block of another LBA or another namespace, or a block mixed from two
// writes, is recognised; the replica has random content, and a block that reads as the replica's data of
// another LBA is caught too.
//
// NVME_CRASH_ROUNDS (default 10), NVME_CRASH_SEED (default random; printed and part of every failure
// message), NVME_CRASH_DIR (parent of the data directory; default /dev/shm when writable — a process
// kill loses the same on tmpfs as on a disk, the page cache outlives the process either way). A failing
// run keeps its data directory (printed).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { rwSqe } from '../../src/nvmeof/host/sqe-builders.ts';
import { IO_OPC } from '../../src/nvmeof/protocol/constants.ts';
import { crashBaseDir, prng } from '../helpers/engine-crash-blocks.ts';
import { ThicketProcess } from '../helpers/thicket-process.ts';

const ROUNDS = Math.max(1, Number(process.env.NVME_CRASH_ROUNDS ?? 10));
const SEED = Number(process.env.NVME_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31)) >>> 0;
const BS = 4096;
const NAMESPACES = 4;
const REPLICA_BLOCKS = 768; // 3 MiB of random data
const CLONE_BLOCKS = 1024; // 4 MiB: the last 256 blocks read as zeroes until written
const HOT_BLOCKS = 48; // a small region many commands hit, so that writes to one block overlap
const KILL_MIN_MS = 300;
const KILL_MAX_MS = 2000;
/** Hard limit of one round: workload, kill, restart, reconnect, read-back and checks. */
const ROUND_LIMIT_MS = 30_000;
const HOST_NQN = 'nqn.2014-08.org.nvmexpress:uuid:7c1f0e2a-5b1d-4e0c-9a3f-00000000c4a5';
const MAGIC = 0x4b435643; // 'CVCK' little-endian

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A port below the kernel's ephemeral range (so no outgoing connection can take it between restarts), free now. */
async function lowPort(taken: Set<number>): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  let port = 21000 + ((process.pid * 97 + Math.floor(Math.random() * 4000)) % 10000);
  for (let i = 0; i < 2000; i++, port = port >= 31999 ? 21000 : port + 1) {
    if (!taken.has(port) && (await free(port))) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free port below 32768');
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- block contents ----

function payloadSeed(ns: number, lba: number, round: number, seq: number): number {
  let h = Math.imul(SEED ^ 0x9e3779b9, 0x85ebca6b);
  for (const v of [ns, lba, round, seq]) h = Math.imul(h ^ v, 0xc2b2ae35) ^ (h >>> 15);
  return h >>> 0 || 1;
}

/** Fills one block at `off` of `out` with the data of write `seq` (round `round`) to `lba` of namespace `ns`. */
function fillBlock(out: Buffer, off: number, ns: number, lba: number, round: number, seq: number): void {
  out.writeUInt32LE(MAGIC, off);
  out.writeUInt32LE(ns, off + 4);
  out.writeUInt32LE(lba, off + 8);
  out.writeUInt32LE(round, off + 12);
  out.writeUInt32LE(seq, off + 16);
  const words = new Uint32Array(out.buffer, out.byteOffset + off + 20, (BS - 20) / 4);
  let x = payloadSeed(ns, lba, round, seq);
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
}

function writeData(ns: number, lba: number, n: number, round: number, seq: number): Buffer {
  const b = Buffer.alloc(n * BS);
  for (let i = 0; i < n; i++) fillBlock(b, i * BS, ns, lba + i, round, seq);
  return b;
}

function replicaImage(): Buffer {
  const img = Buffer.alloc(REPLICA_BLOCKS * BS);
  const random = prng(SEED ^ 0x2545f491);
  for (let i = 0; i < img.length; i += 4) img.writeUInt32LE(Math.floor(random() * 2 ** 32), i);
  return img;
}

type Decoded =
  | { kind: 'zero' }
  | { kind: 'replica'; lba: number }
  | { kind: 'write'; ns: number; lba: number; round: number; seq: number }
  | { kind: 'garbage'; why: string };

const ZERO = Buffer.alloc(BS);

function decoder(replica: Buffer): (b: Buffer) => Decoded {
  const replicaLba = new Map<string, number>();
  for (let lba = 0; lba < REPLICA_BLOCKS; lba++) replicaLba.set(sha256(replica.subarray(lba * BS, (lba + 1) * BS)), lba);
  const scratch = Buffer.alloc(BS);
  return (b) => {
    if (b.equals(ZERO)) return { kind: 'zero' };
    if (b.readUInt32LE(0) === MAGIC) {
      const ns = b.readUInt32LE(4);
      const lba = b.readUInt32LE(8);
      const round = b.readUInt32LE(12);
      const seq = b.readUInt32LE(16);
      fillBlock(scratch, 0, ns, lba, round, seq);
      if (scratch.equals(b)) return { kind: 'write', ns, lba, round, seq };
      return { kind: 'garbage', why: `header of write ${seq} (ns ${ns}, LBA ${lba}) but not its payload (torn or mixed block)` };
    }
    const lba = replicaLba.get(sha256(b));
    if (lba !== undefined) return { kind: 'replica', lba };
    return { kind: 'garbage', why: `unknown content, first bytes ${b.subarray(0, 16).toString('hex')}` };
  };
}

// ---- the workload and its log ----

type OpType = 'W' | 'U' | 'F' | 'Z' | 'Y' | 'D';
const OP_NAMES: Record<OpType, string> = { W: 'write', U: 'FUA write', F: 'flush', Z: 'write zeroes', Y: 'FUA write zeroes', D: 'deallocate' };

interface Op {
  id: number;
  type: OpType;
  /** Namespace index 0..NAMESPACES-1 (NSID = index + 1). */
  ns: number;
  ranges: Array<{ lba: number; n: number }>;
  /** Write sequence number (W and U). */
  seq: number;
  round: number;
  /** Clock when submitted. */
  s: number;
  /** Clock when its successful completion arrived; Infinity if it never did. */
  e: number;
}

/** The value key a block shows after `op`: its own write, or zeroes. */
const valueOf = (op: Op) => (op.type === 'W' || op.type === 'U' ? `W${op.seq}` : 'Z');
const initialValue = (lba: number) => (lba < REPLICA_BLOCKS ? 'R' : 'Z');

function touches(op: Op, lba: number): boolean {
  return op.ranges.some((r) => lba >= r.lba && lba < r.lba + r.n);
}

/** For each namespace and LBA the set of legal contents after the crash, and the ops known durable. */
function legalSets(ops: Op[], base: string[][]): { sets: Array<Array<Set<string>>>; durable: Set<Op>; lastDurable: Array<Array<string | undefined>> } {
  const durable = new Set<Op>();
  const sets: Array<Array<Set<string>>> = [];
  const lastDurable: Array<Array<string | undefined>> = [];
  for (let ns = 0; ns < NAMESPACES; ns++) {
    const mine = ops.filter((o) => o.ns === ns);
    let lastFlushStart = -1;
    for (const o of mine) if (o.type === 'F' && o.e !== Infinity) lastFlushStart = Math.max(lastFlushStart, o.s);
    const perLba: Op[][] = Array.from({ length: CLONE_BLOCKS }, () => []);
    const maxDurableStart = new Array<number>(CLONE_BLOCKS).fill(-1);
    const durableValue = new Array<string | undefined>(CLONE_BLOCKS).fill(undefined);
    for (const o of mine) {
      if (o.type === 'F') continue;
      const isDurable = o.e !== Infinity && (o.type === 'U' || o.type === 'Y' || o.e < lastFlushStart);
      if (isDurable) durable.add(o);
      for (const r of o.ranges) {
        for (let lba = r.lba; lba < r.lba + r.n; lba++) {
          perLba[lba].push(o);
          if (isDurable && o.s > maxDurableStart[lba]) {
            maxDurableStart[lba] = o.s;
            durableValue[lba] = valueOf(o);
          }
        }
      }
    }
    const row: Array<Set<string>> = [];
    for (let lba = 0; lba < CLONE_BLOCKS; lba++) {
      const mds = maxDurableStart[lba];
      const set = new Set<string>();
      if (mds < 0) set.add(base[ns][lba]);
      for (const o of perLba[lba]) if (o.e > mds) set.add(valueOf(o));
      row.push(set);
    }
    sets.push(row);
    lastDurable.push(durableValue);
  }
  return { sets, durable, lastDurable };
}

function describeOp(o: Op, durable: Set<Op>): string {
  const ranges = o.ranges.map((r) => `${r.lba}+${r.n}`).join(',');
  const val = o.type === 'W' || o.type === 'U' ? ` -> W${o.seq}` : o.type === 'F' ? '' : ' -> Z';
  return `    op ${o.id} ${OP_NAMES[o.type]} ns ${o.ns + 1}${ranges ? ` lba ${ranges}` : ''}${val}, clock ${o.s}..${o.e === Infinity ? 'never acknowledged' : o.e}${durable.has(o) ? ', durable' : ''}`;
}

// ---- the test ----

const processes: ThicketProcess[] = [];
const dataDirs: string[] = [];
let failed = false;
afterAll(async () => {
  for (const p of processes) await p.kill9().catch(() => {});
  if (failed) console.error(`nvme crash test: kept for inspection: ${dataDirs.join(', ')}`);
  else for (const d of dataDirs) await rm(d, { recursive: true, force: true });
});

describe.sequential('crash recovery through NVMe/TCP (SIGKILL of the real process with I/O in flight)', () => {
  const where0 = `NVME_CRASH_SEED=${SEED}`;
  let thicket: ThicketProcess;
  let dir = '';
  let ok = false;
  let subnqn = '';
  let nsids: number[] = [];
  let replica: Buffer;
  let replicaId = '';
  let replicaPath = '';
  let replicaSha = '';
  let decode: (b: Buffer) => Decoded;
  /** What every block read after the last recovery. */
  let base: string[][] = [];

  const api = (m: string, p: string, b?: unknown) => thicket.json(m, p, b);

  async function connect(timeoutMs: number): Promise<NvmeTcpHost> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
      let host: NvmeTcpHost | undefined;
      try {
        host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: thicket.nvmePort, subnqn, hostnqn: HOST_NQN, ioQueues: 2, queueSize: 128 });
        const active = await host.activeNamespaces();
        if (JSON.stringify(active) === JSON.stringify(nsids)) return host;
        last = new Error(`active namespaces ${JSON.stringify(active)}, expected ${JSON.stringify(nsids)}`);
      } catch (err) {
        last = err;
      }
      await host?.close().catch(() => {});
      await sleep(100);
    }
    throw new Error(`the export did not come back within ${timeoutMs} ms: ${String(last)}`);
  }

  /** Reads every block of every namespace (16 reads of 64 blocks in flight) and decodes it. */
  async function readAll(host: NvmeTcpHost): Promise<{ observed: string[][]; problems: Array<{ ns: number; lba: number; what: string; key: string }> }> {
    const observed: string[][] = Array.from({ length: NAMESPACES }, () => new Array<string>(CLONE_BLOCKS));
    const problems: Array<{ ns: number; lba: number; what: string; key: string }> = [];
    const chunks: Array<{ ns: number; lba: number }> = [];
    for (let ns = 0; ns < NAMESPACES; ns++) for (let lba = 0; lba < CLONE_BLOCKS; lba += 64) chunks.push({ ns, lba });
    let next = 0;
    const worker = async () => {
      while (next < chunks.length) {
        const { ns, lba: start } = chunks[next++];
        const n = Math.min(64, CLONE_BLOCKS - start);
        const data = await host.read(nsids[ns], start, n);
        for (let i = 0; i < n; i++) {
          const lba = start + i;
          const d = decode(data.subarray(i * BS, (i + 1) * BS));
          let key: string;
          if (d.kind === 'zero') key = 'Z';
          else if (d.kind === 'replica') {
            key = 'R';
            if (d.lba !== lba) problems.push({ ns, lba, what: `shows the replica's block of LBA ${d.lba}`, key: `R(lba ${d.lba})` });
            else if (lba >= REPLICA_BLOCKS) problems.push({ ns, lba, what: 'shows replica data past the replica end', key });
          } else if (d.kind === 'write') {
            key = `W${d.seq}`;
            if (d.ns !== ns) problems.push({ ns, lba, what: `shows namespace ${d.ns + 1}'s data (its LBA ${d.lba}, write ${d.seq})`, key });
            else if (d.lba !== lba) problems.push({ ns, lba, what: `shows this namespace's data of LBA ${d.lba} (write ${d.seq})`, key });
          } else {
            key = `garbage`;
            problems.push({ ns, lba, what: `shows unrecognisable data: ${d.why}`, key });
          }
          observed[ns][lba] = key;
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    return { observed, problems };
  }

  async function checkReplica(where: string): Promise<void> {
    const r = await api('GET', `/api/v1/replicas/${replicaId}`);
    expect(r.status, where).toBe(200);
    expect(r.body, where).toMatchObject({ state: 'ready', sha256: replicaSha });
    expect(sha256(fs.readFileSync(replicaPath)), `the replica file changed (${where})`).toBe(replicaSha);
  }

  it(
    "after SIGKILL during NVMe writes and flushes, every flushed or FUA write reads back and no block shows another block's or another namespace's data",
    { timeout: 60_000 + ROUNDS * 20_000 },
    async () => {
      console.log(`nvme crash test: ${ROUNDS} rounds, NVME_CRASH_SEED=${SEED}`);
      failed = true; // until the rounds have passed
      dir = await mkdtemp(path.join(crashBaseDir('NVME_CRASH_DIR'), 'thicket-nvme-crash-'));
      dataDirs.push(dir);
      thicket = new ThicketProcess({ THICKET_JOURNAL_BYTES: String(1024 * 1024) });
      processes.push(thicket);
      // ThicketProcess keeps the data directory and the ports it is given across restarts.
      const taken = new Set<number>();
      thicket.dataDir = dir;
      thicket.httpPort = await lowPort(taken);
      thicket.nvmePort = await lowPort(taken);
      thicket.discoveryPort = await lowPort(taken);
      await thicket.start();

      // ---- setup through the API: replica, 4 clones on two storage pools, host, subsystem, exports ----
      replica = replicaImage();
      decode = decoder(replica);
      const img = path.join(dir, 'golden.img');
      fs.writeFileSync(img, replica);
      const pools = (await api('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string; path: string }>;
      const fast = pools.find((p) => p.name === 'fast')!;
      const capacity = pools.find((p) => p.name === 'capacity')!;
      const tpl = await api('POST', '/api/v1/templates', { name: 'crash-golden' });
      expect(tpl.status).toBe(201);
      const version = await api('POST', `/api/v1/templates/${tpl.body.id}/versions`, { sourcePath: img, format: 'raw' });
      expect(version.status, JSON.stringify(version.body)).toBe(201);
      replicaSha = sha256(replica);
      expect(version.body.sha256).toBe(replicaSha);
      const promoted = await api('POST', '/api/v1/replicas', { templateVersionId: version.body.id, storagePoolId: capacity.id });
      expect(promoted.status).toBe(202);
      expect((await thicket.waitForJob(promoted.body.job.id)).state).toBe('succeeded');
      replicaId = promoted.body.replica.id;
      replicaPath = path.join(capacity.path, 'replicas', `${replicaId}.img`);
      await checkReplica('after promotion');
      const hostId = (await api('POST', '/api/v1/hosts', { name: 'crash-host', nqn: HOST_NQN })).body.id;
      const sub = await api('POST', '/api/v1/subsystems', { name: 'nvme-crash' });
      expect(sub.status).toBe(201);
      subnqn = sub.body.nqn;
      expect((await api('POST', `/api/v1/subsystems/${sub.body.id}/hosts`, { hostId })).status).toBe(200);
      for (let i = 0; i < NAMESPACES; i++) {
        // Two clones on each pool: two journals, one of them shared by two clones.
        const c = await api('POST', '/api/v1/clones', { replicaId, storagePoolId: i < 2 ? fast.id : capacity.id, name: `crash-${i + 1}`, sizeBytes: CLONE_BLOCKS * BS });
        expect(c.status, JSON.stringify(c.body)).toBe(201);
        const n = await api('POST', `/api/v1/subsystems/${sub.body.id}/namespaces`, { cloneId: c.body.id });
        expect(n.status, JSON.stringify(n.body)).toBe(201);
        nsids.push(n.body.nsid);
      }
      base = Array.from({ length: NAMESPACES }, () => Array.from({ length: CLONE_BLOCKS }, (_, lba) => initialValue(lba)));

      let host = await connect(30_000);
      {
        // Before any write, every namespace reads the replica, then zeroes past its end.
        const { observed, problems } = await readAll(host);
        expect(problems).toEqual([]);
        expect(observed).toEqual(base);
      }

      let clock = 0;
      let seq = 0;
      let opId = 0;
      const totals = { ops: 0, acked: 0, durable: 0, inFlightAtKill: 0, survivedUnflushed: 0, lostUnflushed: 0, flushes: 0, fua: 0, zeroes: 0, deallocates: 0 };
      const ms = { workload: 0, restart: 0, reconnect: 0, check: 0 };

      for (let round = 1; round <= ROUNDS; round++) {
        const roundSeed = (SEED + round * 7919) >>> 0;
        const random = prng(roundSeed ^ 0x5bd1e995);
        const queueDepth = 4 + Math.floor(random() * 29);
        const killAfter = KILL_MIN_MS + Math.floor(random() * (KILL_MAX_MS - KILL_MIN_MS));
        const where = `round ${round}, ${where0} (round seed ${roundSeed}), queue depth ${queueDepth}, kill after ${killAfter} ms, data dir ${dir}`;
        const roundStart = performance.now();

        await within(
          (async () => {
            try {
              // ---- workload until the kill ----
              const ops: Op[] = [];
              const unexpected: string[] = [];
              let stopping = false;
              const pick = (): Omit<Op, 'id' | 's' | 'e' | 'seq' | 'round'> => {
                const ns = Math.floor(random() * NAMESPACES);
                const at = (max: number) => {
                  const n = 1 + Math.floor(random() * max);
                  const lba = random() < 0.35 ? Math.floor(random() * HOT_BLOCKS) : Math.floor(random() * (CLONE_BLOCKS - n + 1));
                  return { lba, n: Math.min(n, CLONE_BLOCKS - lba) };
                };
                const x = random();
                if (x < 0.52) return { type: 'W', ns, ranges: [at(16)] };
                if (x < 0.66) return { type: 'U', ns, ranges: [at(16)] };
                if (x < 0.8) return { type: 'F', ns, ranges: [] };
                if (x < 0.86) return { type: 'Z', ns, ranges: [at(32)] };
                if (x < 0.89) return { type: 'Y', ns, ranges: [at(32)] };
                const count = 1 + Math.floor(random() * 3);
                const ranges: Array<{ lba: number; n: number }> = [];
                for (let i = 0; i < count; i++) {
                  const r = at(16);
                  // DSM ranges of one command do not overlap.
                  if (!ranges.some((q) => r.lba < q.lba + q.n && q.lba < r.lba + r.n)) ranges.push(r);
                }
                return { type: 'D', ns, ranges };
              };
              const submit = async (op: Op, data?: Buffer): Promise<void> => {
                const nsid = nsids[op.ns];
                const r = op.ranges[0];
                switch (op.type) {
                  case 'W':
                  case 'U':
                    return host.write(nsid, r.lba, data!, op.type === 'U');
                  case 'F':
                    return host.flush(nsid);
                  case 'Z':
                    return host.writeZeroes(nsid, r.lba, r.n);
                  case 'Y': {
                    const c = await host.submitIo(rwSqe(IO_OPC.WriteZeroes, nsid, r.lba, r.n, true));
                    if (c.status !== 0) throw new Error(`FUA Write Zeroes failed with status 0x${c.status.toString(16)}`);
                    return;
                  }
                  case 'D':
                    return host.deallocate(nsid, op.ranges.map((q) => ({ slba: q.lba, nlb: q.n })));
                }
              };
              const worker = async () => {
                for (let i = 0; i < 1_000_000 && !stopping; i++) {
                  const p = pick();
                  const op: Op = { ...p, id: ++opId, seq: 0, round, s: 0, e: Infinity };
                  let data: Buffer | undefined;
                  if (op.type === 'W' || op.type === 'U') {
                    op.seq = ++seq;
                    data = writeData(op.ns, op.ranges[0].lba, op.ranges[0].n, round, op.seq);
                  }
                  op.s = ++clock;
                  ops.push(op);
                  try {
                    await submit(op, data);
                    op.e = ++clock;
                  } catch (err) {
                    if (!stopping) {
                      unexpected.push(`${describeOp(op, new Set())}: ${String(err)}`);
                      stopping = true;
                    }
                    return;
                  }
                }
              };
              const t0 = performance.now();
              const workers = Array.from({ length: queueDepth }, worker);
              await sleep(killAfter);
              if (unexpected.length > 0) throw new Error(`a command failed before the kill (${where}):\n${unexpected.join('\n')}\n${thicket.log.slice(-4000)}`);
              // From here on nothing new is submitted; what is outstanding stays in flight through the kill.
              stopping = true;
              const inFlight = ops.filter((o) => o.e === Infinity).length;
              await thicket.kill9();
              await within(Promise.all(workers), 10_000, `commands outstanding at the kill did not end (${where})`);
              await host.close().catch(() => {});
              ms.workload += performance.now() - t0;
              expect(inFlight, `no command was in flight at the kill (${where})`).toBeGreaterThan(0);
              totals.inFlightAtKill += inFlight;

              // ---- restart, reconnect, read back ----
              const t1 = performance.now();
              await thicket.start();
              ms.restart += performance.now() - t1;
              const t2 = performance.now();
              host = await connect(20_000);
              ms.reconnect += performance.now() - t2;
              const t3 = performance.now();
              const { sets, durable, lastDurable } = legalSets(ops, base);
              const { observed, problems } = await readAll(host);
              for (let ns = 0; ns < NAMESPACES; ns++) {
                for (let lba = 0; lba < CLONE_BLOCKS; lba++) {
                  const key = observed[ns][lba];
                  if (!sets[ns][lba].has(key) && !problems.some((p) => p.ns === ns && p.lba === lba)) {
                    const d = lastDurable[ns][lba];
                    problems.push({ ns, lba, what: d !== undefined && !sets[ns][lba].has(key) ? `lost its durable value ${d} (or anything newer)` : 'is not a legal outcome', key });
                  }
                }
              }
              if (problems.length > 0) {
                const lines = problems.slice(0, 12).map((p) => {
                  const flushes = ops.filter((o) => o.ns === p.ns && o.type === 'F');
                  const done = flushes.filter((o) => o.e !== Infinity);
                  const latest = done.reduce<Op | undefined>((a, b) => (a === undefined || b.s > a.s ? b : a), undefined);
                  const history = [
                    ...ops
                      .filter((o) => o.ns === p.ns && o.type !== 'F' && touches(o, p.lba))
                      .slice(-20)
                      .map((o) => describeOp(o, durable)),
                    `    ${done.length} flushes of namespace ${p.ns + 1} completed, the latest submitted: ${latest ? describeOp(latest, durable).trim() : 'none'}; ${flushes.length - done.length} in flight at the kill`,
                  ];
                  return [
                    `  namespace ${p.ns + 1} LBA ${p.lba} ${p.what}: read ${p.key}; legal: {${[...sets[p.ns][p.lba]].join(', ')}}; before the round: ${base[p.ns][p.lba]}`,
                    ...history,
                  ].join('\n');
                });
                throw new Error(`${problems.length} bad block(s) after the crash (${where}):\n${lines.join('\n')}`);
              }
              await checkReplica(where);

              // Statistics: how many blocks kept a newer, unflushed value, and how many lost one.
              const newest: Array<Array<Op | undefined>> = Array.from({ length: NAMESPACES }, () => new Array<Op | undefined>(CLONE_BLOCKS));
              for (const o of ops) {
                if (o.type === 'F' || o.e === Infinity) continue;
                for (const r of o.ranges) for (let lba = r.lba; lba < r.lba + r.n; lba++) if ((newest[o.ns][lba]?.e ?? -1) < o.e) newest[o.ns][lba] = o;
              }
              for (let ns = 0; ns < NAMESPACES; ns++) {
                for (let lba = 0; lba < CLONE_BLOCKS; lba++) {
                  const o = newest[ns][lba];
                  if (o === undefined || durable.has(o)) continue;
                  if (observed[ns][lba] === valueOf(o)) totals.survivedUnflushed++;
                  else totals.lostUnflushed++;
                }
              }
              totals.ops += ops.length;
              totals.acked += ops.filter((o) => o.e !== Infinity).length;
              totals.durable += durable.size;
              totals.flushes += ops.filter((o) => o.type === 'F' && o.e !== Infinity).length;
              totals.fua += ops.filter((o) => (o.type === 'U' || o.type === 'Y') && o.e !== Infinity).length;
              totals.zeroes += ops.filter((o) => (o.type === 'Z' || o.type === 'Y') && o.e !== Infinity).length;
              totals.deallocates += ops.filter((o) => o.type === 'D' && o.e !== Infinity).length;
              base = observed;
              ms.check += performance.now() - t3;
            } catch (err) {
              const message = err instanceof Error ? err.message : String(err);
              if (message.includes(where0)) throw err;
              throw new Error(`${message} (${where})\n--- Thicket's log, last 3000 characters ---\n${thicket.log.slice(-3000)}`, { cause: err });
            }
          })(),
          ROUND_LIMIT_MS,
          `round ${round} (${where})`,
        );
        console.log(`nvme crash test: round ${round} passed in ${((performance.now() - roundStart) / 1000).toFixed(1)} s (queue depth ${queueDepth}, kill after ${killAfter} ms)`);
      }
      await host.close();

      console.log(
        `nvme crash test: ${ROUNDS} rounds, NVME_CRASH_SEED=${SEED}: ${totals.ops} commands, ${totals.acked} acknowledged ` +
          `(${totals.flushes} flushes, ${totals.fua} FUA, ${totals.zeroes} write zeroes, ${totals.deallocates} deallocates), ` +
          `${totals.durable} known durable, ${totals.inFlightAtKill} in flight at the kills; blocks whose newest acknowledged ` +
          `unflushed value survived ${totals.survivedUnflushed}, was lost ${totals.lostUnflushed}; seconds in workload ` +
          `${(ms.workload / 1000).toFixed(1)}, restart ${(ms.restart / 1000).toFixed(1)}, reconnect ${(ms.reconnect / 1000).toFixed(1)}, ` +
          `read-back and checks ${(ms.check / 1000).toFixed(1)}`,
      );
      expect(totals.durable, 'the workload made nothing durable').toBeGreaterThan(0);
      ok = true;
      failed = false;
    },
  );

  it('after a clean stop and restart, every namespace reads exactly what it read after the last crash, and the replica verifies', { timeout: 120_000 }, async () => {
    if (!ok) throw new Error(`the crash rounds did not pass (${where0})`);
    try {
      await thicket.stop();
      expect(thicket.child?.exitCode, thicket.log.slice(-4000)).toBe(0);
      await thicket.start();
      const host = await connect(20_000);
      try {
        const { observed, problems } = await readAll(host);
        expect(problems, where0).toEqual([]);
        expect(observed, where0).toEqual(base);
      } finally {
        await host.close();
      }
      await checkReplica(`after the clean restart, ${where0}`);
      const verify = await api('POST', `/api/v1/replicas/${replicaId}/verify`);
      expect(verify.status).toBe(202);
      expect((await thicket.waitForJob(verify.body.job.id, 60_000)).state).toBe('succeeded');
      await thicket.stop();
    } catch (err) {
      failed = true;
      throw err;
    }
  });
});
