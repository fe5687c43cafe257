// NVMe/TCP target benchmark (issue 4): the TypeScript host over loopback against Thicket's target serving
// an engine clone, and — measured in the same run, with the same client — against a plain Node TCP
// request/response server that answers the same message sizes without touching storage (the ceiling for
// any Node target on this machine, perf-limits.md §1).
//
//   npm run bench:nvme
//   node test/bench/nvme.ts                  # the same
//
// Processes: the client (every connection, every queue) runs on the main thread of this process; each
// server runs in its own child process (child_process.fork of this file with --server nvme|plain), so the
// client and a server never share an event loop. Both servers are started once and idle while the other
// is measured.
//
// Target side: a 256 MiB replica (pseudo-random bytes), a 256 MiB clone of it with 25% of its blocks owned
// (a random quarter written with 4 KiB writes and flushed), everything read once so inherited blocks sit
// in the shared replica cache (default size, 256 MiB) and owned ones in the page cache. The clone is
// exported as namespace 1 of a subsystem by Target + TcpListener on 127.0.0.1, no digests. Before every
// target run that follows a run that wrote, the clone is reset and refilled to the same 25% (not timed),
// so every run starts from the same state. No flush is issued during the timed phases.
//
// Ceiling ("plain") server: parses the PDU framing and answers with the NVMe/TCP message sizes, no storage:
//   4 KiB write : 72-byte CapsuleCmd + 4096 in-capsule bytes -> 24-byte CapsuleResp
//   4 KiB read  : 72-byte CapsuleCmd -> 24-byte C2HData header (LAST|SUCCESS) + 4096 bytes
//   128 KiB write: CapsuleCmd -> R2T -> H2CData 24 + 131072 -> CapsuleResp
//   128 KiB read : CapsuleCmd -> C2HData 24 + 131072 (LAST|SUCCESS)
// Responses of one 'data' event are built in a preallocated ring (payloads up to 16 KiB copied into it,
// larger ones written by reference) and leave in one write. The target must also send a 24-byte
// CapsuleResp after a read's C2HData (SQ flow control is on, as with the Linux host's defaults).
//
// Client: HostQueue (src/nvmeof/host) with batchWrites (the PDUs of one tick leave in one write), reads
// returned as views of the received chunks (readViews: no copy, no allocation), one reusable SQE per
// in-flight slot. QD is per connection (4 connections x QD 32 = 128 outstanding). 4 KiB at random LBAs
// (uniform over the 256 MiB), 128 KiB sequential (QD 8, one cursor per connection). For the target, the
// 4 connections are 4 I/O queues of one controller (NvmeTcpHost.connect with ioQueues 4).
//
// Each case runs BENCH_ROUNDS rounds (default 3); a round measures both servers back to back (order
// alternating), each for a warm-up of 0.5 s then BENCH_SECONDS (default 2, max 30) seconds, capped at 5M
// operations. Tables show medians; the ratio is the median of the per-round ratios. CPU: server from
// /proc/<pid>/stat, client from process.cpuUsage, "other" = box CPU minus both (the box is shared).
// Before each timed run the bench waits up to BENCH_IDLE_WAIT_S (default 10) s for a quiet box.
//
// Copies: at the end (unless BENCH_COPIES=0) each server and the client count user-space bytes copied
// (Buffer#copy, Buffer.concat, Buffer.from(<array or view>), Buffer.copyBytesFrom, TypedArray#set,
// TypedArray#slice; patched in only for this phase) over a fixed number of operations per case, and the
// tables show bytes copied per payload byte with the call sites.
//
// Environment: BENCH_DIR (parent of the temp dir, default /tmp; removed at exit and on SIGINT/SIGTERM),
// BENCH_SECONDS, BENCH_ROUNDS (1-20), BENCH_CASES (comma-separated case names, e.g. 4k-randread-qd32-c1),
// BENCH_IDLE_WAIT_S, BENCH_COPIES (0: skip the copy phase), BENCH_CPU_PROF=<dir> (the target child runs
// with --cpu-prof into that dir), BENCH_PERF_MAP=1 (both servers run with --perf-basic-prof, for perf),
// BENCH_SERVER_NODE_ARGS (extra node flags for both server children, e.g. --trace-gc), BENCH_V8_DEFAULTS=1
// (the servers without the data plane's V8 heap flags, src/dataplane/v8-flags.ts), BENCH_REFILL=0 (no
// reset between target runs: after the first write run the clone owns nearly every block, so later write
// runs measure overwrites instead of first writes that allocate).
import { fork, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HostQueue } from '../../src/nvmeof/host/host-queue.ts';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { DATAPLANE_V8_FLAGS } from '../../src/dataplane/v8-flags.ts';

const BS = 4096;
const KiB = 1024;
const MiB = 1024 * KiB;
const REPLICA_BYTES = 256 * MiB;
const BLOCKS = REPLICA_BYTES / BS;
const OWNED_FRACTION = 0.25;
const SUBNQN = 'nqn.2026-11.io.thicket:bench';
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-1111-2222-3333-444444444444';
const MAX_OPS = 5_000_000;
const WARM_SECONDS = 0.5;
const COPY_PHASE_OPS = 20_000;

function envNum(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number in [${min}, ${max}], got "${raw}"`);
  return n;
}

/** mulberry32: small deterministic PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function permutation(n: number, seed: number): Uint32Array {
  const rand = prng(seed);
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function table(title: string, header: string[], rows: Array<Array<string | number>>): void {
  const cells = rows.map((r) => r.map((c) => String(c)));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ') + ' |';
  console.log(`\n${title}`);
  console.log(line(header));
  console.log('|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 1) + '-' : '-'.repeat(w + 1) + ':')).join('|') + '|');
  for (const r of cells) console.log(line(r));
}

// ---------------------------------------------------------------------------------------------------
// CPU accounting (the box is shared: perf-limits.md)

function boxTicks(): { busy: number; total: number } {
  try {
    const f = fs.readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3] - (f[4] ?? 0), total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** utime and stime of a process, in seconds. */
function procCpuSeconds(pid: number): { user: number; sys: number } {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 }; // USER_HZ is 100 on Linux
  } catch {
    return { user: 0, sys: 0 };
  }
}

interface CpuSample {
  serverPct: number;
  serverSysPct: number;
  clientPct: number;
  boxPct: number;
  otherPct: number;
}

function cpuMeter(serverPid: number): () => CpuSample {
  const b0 = boxTicks();
  const s0 = procCpuSeconds(serverPid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const wall = (performance.now() - t0) / 1000;
    const b1 = boxTicks();
    const c = process.cpuUsage(c0);
    const ncpu = os.cpus().length;
    const s1 = procCpuSeconds(serverPid);
    const serverPct = (100 * (s1.user + s1.sys - s0.user - s0.sys)) / wall;
    const serverSysPct = (100 * (s1.sys - s0.sys)) / wall;
    const clientPct = (100 * (c.user + c.system)) / 1e6 / wall;
    const total = b1.total - b0.total;
    const boxPct = total > 0 ? (100 * ncpu * (b1.busy - b0.busy)) / total : 0;
    return { serverPct, serverSysPct, clientPct, boxPct, otherPct: Math.max(0, boxPct - serverPct - clientPct) };
  };
}

async function waitIdle(): Promise<void> {
  const limit = performance.now() + envNum('BENCH_IDLE_WAIT_S', 10, 0, 600) * 1000;
  for (;;) {
    const b0 = boxTicks();
    await new Promise((r) => setTimeout(r, 200));
    const b1 = boxTicks();
    const pct = b1.total > b0.total ? (100 * os.cpus().length * (b1.busy - b0.busy)) / (b1.total - b0.total) : 0;
    if (pct < 25 || performance.now() > limit) return;
  }
}

// ---------------------------------------------------------------------------------------------------
// Copy accounting: patches the user-space copy primitives while enabled.

interface CopyCounts {
  bytes: number;
  calls: number;
  sites: Record<string, { bytes: number; calls: number }>;
  /**
   * Node's own copy of received bytes, in C++ where no patch sees it: a socket read lands in a 64 KiB
   * buffer and, unless it filled it, Node copies the nread bytes into a right-sized one before JS gets
   * them (EmitToJSStreamListener::OnStreamRead in src/stream_base.cc). Counted from the chunk sizes.
   */
  socketReadCopyBytes: number;
  socketReadBytes: number;
}

/** libuv's suggested read size, which Node allocates for every socket read. */
const NODE_READ_ALLOC = 64 * 1024;

const copyState = { on: false, counts: { bytes: 0, calls: 0, sites: {}, socketReadCopyBytes: 0, socketReadBytes: 0 } as CopyCounts, restore: [] as Array<() => void> };

function siteOf(): string {
  const stack = new Error().stack?.split('\n') ?? [];
  // [0] "Error", [1] siteOf, [2] count, [3] the patched primitive, [4...] its callers.
  const frames = stack.slice(4, 6).map((l) => l.trim().replace(/^at /, '').replace(/\(?file:\/\/.*?\/(src|test|node_modules)\//, '($1/').replace(/:\d+\)?$/, ')'));
  return frames.join(' <- ');
}

function countCopy(bytes: number): void {
  if (!copyState.on || bytes <= 0) return;
  copyState.on = false; // no recursion through the bookkeeping
  const c = copyState.counts;
  c.bytes += bytes;
  c.calls++;
  const site = siteOf();
  const s = (c.sites[site] ??= { bytes: 0, calls: 0 });
  s.bytes += bytes;
  s.calls++;
  copyState.on = true;
}

function startCopyCount(): void {
  if (copyState.restore.length === 0) {
    const patch = <T extends object, K extends keyof T>(obj: T, key: K, make: (orig: T[K]) => T[K]) => {
      const orig = obj[key];
      Object.defineProperty(obj, key, { value: make(orig), writable: true, configurable: true });
      copyState.restore.push(() => Object.defineProperty(obj, key, { value: orig, writable: true, configurable: true }));
    };
    const TypedArrayProto = Object.getPrototypeOf(Uint8Array.prototype) as { set: (...a: unknown[]) => void; slice: (...a: unknown[]) => unknown };
    patch(Buffer.prototype, 'copy', (orig) =>
      function (this: Buffer, ...args: Parameters<Buffer['copy']>) {
        const n = (orig as Buffer['copy']).apply(this, args);
        countCopy(n);
        return n;
      } as Buffer['copy'],
    );
    patch(Buffer, 'concat', (orig) =>
      function (list: readonly Uint8Array[], total?: number) {
        const b = (orig as typeof Buffer.concat)(list, total);
        countCopy(b.length);
        return b;
      } as typeof Buffer.concat,
    );
    patch(Buffer, 'from', (orig) =>
      function (this: unknown, ...args: unknown[]) {
        const b = (orig as (...a: unknown[]) => Buffer).apply(Buffer, args);
        const a0 = args[0];
        if (ArrayBuffer.isView(a0) || Array.isArray(a0)) countCopy(b.length);
        return b;
      } as unknown as typeof Buffer.from,
    );
    if (typeof (Buffer as unknown as { copyBytesFrom?: unknown }).copyBytesFrom === 'function') {
      patch(Buffer as unknown as { copyBytesFrom: (...a: unknown[]) => Buffer }, 'copyBytesFrom', (orig) =>
        function (...args: unknown[]) {
          const b = orig.apply(Buffer, args);
          countCopy(b.length);
          return b;
        },
      );
    }
    patch(TypedArrayProto, 'set', (orig) =>
      function (this: Uint8Array, ...args: unknown[]) {
        orig.apply(this, args);
        const src = args[0] as ArrayLike<number> & { byteLength?: number };
        countCopy(src.byteLength ?? src.length * this.BYTES_PER_ELEMENT);
      },
    );
    // Sockets hand received chunks to Readable#push (from onStreamRead): count Node's hidden copy there.
    patch(net.Socket.prototype as unknown as { push: (chunk: unknown, enc?: unknown) => boolean }, 'push', (orig) =>
      function (this: net.Socket, chunk: unknown, enc?: unknown) {
        if (copyState.on && Buffer.isBuffer(chunk)) {
          copyState.counts.socketReadBytes += chunk.length;
          if (chunk.length !== NODE_READ_ALLOC) copyState.counts.socketReadCopyBytes += chunk.length;
        }
        return orig.call(this, chunk, enc);
      },
    );
    patch(TypedArrayProto, 'slice', (orig) =>
      function (this: Uint8Array, ...args: unknown[]) {
        const r = orig.apply(this, args) as Uint8Array;
        countCopy(r.byteLength);
        return r;
      },
    );
  }
  copyState.counts = { bytes: 0, calls: 0, sites: {}, socketReadCopyBytes: 0, socketReadBytes: 0 };
  copyState.on = true;
}

function stopCopyCount(): CopyCounts {
  copyState.on = false;
  for (const r of copyState.restore.reverse()) r();
  copyState.restore = [];
  return copyState.counts;
}

// ---------------------------------------------------------------------------------------------------
// Servers (child processes)

type Msg = { cmd: 'prepare' } | { cmd: 'copies-start' } | { cmd: 'copies-stop' } | { cmd: 'stats' } | { cmd: 'exit' };

function reply(m: unknown): void {
  process.send!(m);
}

async function serverMain(kind: 'nvme' | 'plain'): Promise<void> {
  const handlers: { prepare?: () => Promise<string | undefined>; stats?: () => unknown; close?: () => Promise<void> } = {};
  let port = 0;
  if (kind === 'plain') port = await plainServer();
  else port = await nvmeServer(handlers);
  process.on('message', (m: Msg) => {
    void (async () => {
      try {
        if (m.cmd === 'prepare') reply({ ok: true, note: await handlers.prepare?.() });
        else if (m.cmd === 'copies-start') {
          startCopyCount();
          reply({ ok: true });
        } else if (m.cmd === 'copies-stop') reply({ ok: true, copies: stopCopyCount() });
        else if (m.cmd === 'stats') reply({ ok: true, stats: handlers.stats?.() });
        else if (m.cmd === 'exit') {
          await handlers.close?.();
          reply({ ok: true });
          process.disconnect();
          // The profile (BENCH_CPU_PROF) is written on a normal exit.
          setTimeout(() => process.exit(0), 50);
        }
      } catch (err) {
        reply({ ok: false, error: String((err as Error).stack ?? err) });
      }
    })();
  });
  process.on('disconnect', () => setTimeout(() => process.exit(0), 2000).unref());
  reply({ ready: true, port });
}

/** The no-storage ceiling server. */
async function plainServer(): Promise<number> {
  const RING_BYTES = 8 * MiB;
  const COPY_LIMIT = 16 * KiB;
  const payload = Buffer.alloc(1024 * KiB, 0x5a);
  const server = net.createServer({ noDelay: true }, (socket) => {
    let ring = Buffer.allocUnsafe(RING_BYTES);
    let pos = 0;
    let start = 0;
    let parts: Buffer[] = [];
    const hdr = Buffer.alloc(128);
    let hdrHave = 0;
    let hlen = 0;
    let plen = 0;
    let skip = 0; // bytes of the current PDU still to discard
    const r2tLeft = new Map<number, number>(); // cid -> bytes still expected by H2CData
    const room = (n: number) => {
      if (pos + n <= ring.length) return;
      if (pos > start) parts.push(ring.subarray(start, pos));
      // Memory still queued in the socket must not be overwritten.
      if (socket.writableLength > 0 || parts.length > 0) ring = Buffer.allocUnsafe(RING_BYTES);
      pos = start = 0;
    };
    const small = (type: number, flags: number, pdo: number, total: number): number => {
      room(24);
      const o = pos;
      ring[o] = type;
      ring[o + 1] = flags;
      ring[o + 2] = 24;
      ring[o + 3] = pdo;
      ring.writeUInt32LE(total, o + 4);
      ring.fill(0, o + 8, o + 24);
      pos += 24;
      return o;
    };
    const capsuleResp = (cid: number, dw0 = 0) => {
      const o = small(0x05, 0, 0, 24);
      ring.writeUInt32LE(dw0, o + 8);
      ring.writeUInt16LE(cid, o + 20);
    };
    const c2hData = (cid: number, len: number) => {
      const o = small(0x07, 0x04 | 0x08, 24, 24 + len);
      ring.writeUInt16LE(cid, o + 8);
      ring.writeUInt32LE(len, o + 16);
      if (len <= COPY_LIMIT) {
        room(len);
        payload.copy(ring, pos, 0, len);
        pos += len;
      } else {
        if (pos > start) parts.push(ring.subarray(start, pos));
        start = pos;
        for (let off = 0; off < len; off += payload.length) parts.push(payload.subarray(0, Math.min(payload.length, len - off)));
      }
    };
    const r2t = (cid: number, len: number) => {
      const o = small(0x09, 0, 0, 24);
      ring.writeUInt16LE(cid, o + 8);
      ring.writeUInt16LE(cid, o + 10); // TTAG
      ring.writeUInt32LE(len, o + 16);
    };
    /** A whole PDU has been received; its header is in h[0, hlen). */
    const onPdu = (h: Buffer, ho: number) => {
      const type = h[ho];
      if (type === 0x00) {
        room(128);
        ring.fill(0, pos, pos + 128);
        ring[pos] = 0x01;
        ring[pos + 2] = 128;
        ring.writeUInt32LE(128, pos + 4);
        ring.writeUInt32LE(1024 * KiB, pos + 12); // MAXH2CDATA
        pos += 128;
      } else if (type === 0x04) {
        const opc = h[ho + 8];
        const cid = h.readUInt16LE(ho + 10);
        const sglLen = h.readUInt32LE(ho + 8 + 32);
        const sglType = h[ho + 8 + 39];
        if (opc === 0x02) c2hData(cid, sglLen);
        else if (opc === 0x01 && sglType !== 0x01 && sglLen > 0) {
          r2tLeft.set(cid, sglLen);
          r2t(cid, sglLen);
        } else capsuleResp(cid, opc === 0x7f ? 1 : 0);
      } else if (type === 0x06) {
        const cid = h.readUInt16LE(ho + 8);
        const left = (r2tLeft.get(cid) ?? 0) - h.readUInt32LE(ho + 16);
        if (left > 0) r2tLeft.set(cid, left);
        else {
          r2tLeft.delete(cid);
          capsuleResp(cid);
        }
      }
    };
    socket.on('data', (chunk: Buffer) => {
      let off = 0;
      const len = chunk.length;
      while (off < len) {
        if (skip > 0) {
          const n = Math.min(skip, len - off);
          off += n;
          skip -= n;
          if (skip === 0) onPdu(hdr, 0);
          continue;
        }
        // Reading a header: zero-copy when it sits in this chunk, else assembled in hdr.
        if (hdrHave === 0 && len - off >= 8) {
          const hl = chunk[off + 2];
          const pl = chunk.readUInt32LE(off + 4);
          if (hl < 8 || pl < hl) {
            socket.destroy();
            return;
          }
          if (len - off >= pl) {
            onPdu(chunk, off);
            off += pl;
            continue;
          }
          if (len - off >= hl) {
            chunk.copy(hdr, 0, off, off + hl);
            hlen = hl;
            plen = pl;
            off += hl;
            skip = plen - hlen;
            continue;
          }
        }
        const want = hdrHave < 8 ? 8 : hlen;
        const n = Math.min(want - hdrHave, len - off);
        chunk.copy(hdr, hdrHave, off, off + n);
        hdrHave += n;
        off += n;
        if (hdrHave === 8) {
          hlen = hdr[2];
          plen = hdr.readUInt32LE(4);
          if (hlen < 8 || plen < hlen) {
            socket.destroy();
            return;
          }
        }
        if (hdrHave >= 8 && hdrHave === hlen) {
          hdrHave = 0;
          skip = plen - hlen;
          if (skip === 0) onPdu(hdr, 0);
        }
      }
      if (pos > start) parts.push(ring.subarray(start, pos));
      start = pos;
      if (parts.length === 1) socket.write(parts[0]);
      else if (parts.length > 1) {
        socket.cork();
        for (const p of parts) socket.write(p);
        socket.uncork();
      }
      parts = [];
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return (server.address() as net.AddressInfo).port;
}

/** Thicket's target serving an engine clone. */
async function nvmeServer(handlers: { prepare?: () => Promise<string | undefined>; stats?: () => unknown; close?: () => Promise<void> }): Promise<number> {
  const { Engine } = await import('../../src/engine/engine.ts');
  const { Target, nguidFor } = await import('../../src/nvmeof/target/target.ts');
  const { TcpListener } = await import('../../src/nvmeof/transport/tcp-listener.ts');
  const { CloneNamespaceBackend } = await import('../../src/nvmeof/target/engine-backend.ts');
  const parent = process.env.BENCH_DIR || os.tmpdir();
  const dir = fs.mkdtempSync(path.join(parent, 'thicket-bench-nvme-'));
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

  const t0 = performance.now();
  const replicaPath = path.join(dir, 'replica.img');
  {
    const fd = fs.openSync(replicaPath, 'w', 0o600);
    const buf = Buffer.allocUnsafe(MiB);
    for (let pos = 0; pos < REPLICA_BYTES; pos += MiB) {
      randomFillSync(buf);
      for (let b = 0; b < MiB; b += BS) {
        buf.writeDoubleLE((pos + b) / BS, b); // every block starts with its LBA ...
        buf.write('R', b + 8, 'latin1'); // ... and R(eplica)
      }
      fs.writeSync(fd, buf, 0, MiB, pos);
    }
    fs.closeSync(fd);
    fs.chmodSync(replicaPath, 0o444);
  }
  const engine = new Engine();
  engine.onError = (err) => console.error('engine error:', err);
  await engine.openPool({ id: 'bench', path: path.join(dir, 'pool') }, []);
  const clone = engine.createClone({ id: '00000000-0000-4000-8000-00000000b001', poolId: 'bench', replica: { id: 'replica-bench', path: replicaPath, sizeBytes: REPLICA_BYTES } });
  const order = permutation(BLOCKS, 2);
  const owned = Math.floor(BLOCKS * OWNED_FRACTION);
  const fill = Buffer.alloc(BS, 0x77);
  fill.write('W', 8, 'latin1');
  const refill = async () => {
    await clone.reset();
    for (let i = 0; i < owned; i++) {
      fill.writeDoubleLE(order[i], 0);
      await clone.write(order[i], fill);
    }
    await clone.flush();
    await engine.pool('bench').settle();
    // Warm: every block once (inherited ones into the replica cache, owned ones are in the page cache).
    for (let lba = 0; lba < BLOCKS; lba += 32) await clone.read(lba, 32);
  };
  await refill();
  let writesAtRefill = clone.stats.writeOps;
  const setupSeconds = (performance.now() - t0) / 1000;

  const target = new Target({ ioPort: 0 });
  const listener = new TcpListener(target);
  await listener.listen({ host: '127.0.0.1', ioPort: 0, discoveryPort: 0 });
  target.addSubsystem(SUBNQN);
  target.setHosts(SUBNQN, [HOSTNQN]);
  target.addNamespace(SUBNQN, { nsid: 1, uuid: clone.id, nguid: nguidFor(clone.id), backend: new CloneNamespaceBackend(clone), visibleTo: null });

  handlers.prepare = async () => {
    if (clone.stats.writeOps === writesAtRefill || process.env.BENCH_REFILL === '0') return undefined;
    const t = performance.now();
    await refill();
    writesAtRefill = clone.stats.writeOps;
    return `clone reset and refilled to ${OWNED_FRACTION * 100}% owned in ${((performance.now() - t) / 1000).toFixed(1)} s`;
  };
  handlers.stats = () => ({ setupSeconds, ownedBlocks: clone.ownedBlocks, cache: engine.cache.getStats(), clone: clone.stats, memory: process.memoryUsage() });
  handlers.close = async () => {
    target.close();
    await listener.close();
    await engine.close();
    cleanup();
  };
  return listener.ioPort;
}

// ---------------------------------------------------------------------------------------------------
// Client (this process)

interface Server {
  kind: 'nvme' | 'plain';
  child: ChildProcess;
  port: number;
  call(msg: Msg): Promise<{ ok: boolean; error?: string; [k: string]: unknown }>;
}

async function startServer(kind: 'nvme' | 'plain'): Promise<Server> {
  const execArgv = [...process.execArgv];
  // Both servers run with the data plane's V8 heap settings (src/dataplane/v8-flags.ts), as the target
  // does in Thicket; BENCH_V8_DEFAULTS=1 runs them with V8's defaults instead, for comparison.
  if (process.env.BENCH_V8_DEFAULTS !== '1') execArgv.push(...DATAPLANE_V8_FLAGS);
  const prof = process.env.BENCH_CPU_PROF;
  if (prof && kind === 'nvme') execArgv.push('--cpu-prof', `--cpu-prof-dir=${prof}`);
  // For `perf record -p <pid>`: JIT frames get names in /tmp/perf-<pid>.map.
  if (process.env.BENCH_PERF_MAP === '1') execArgv.push('--perf-basic-prof');
  if (process.env.BENCH_SERVER_NODE_ARGS) execArgv.push(...process.env.BENCH_SERVER_NODE_ARGS.split(' ').filter(Boolean));
  const child = fork(fileURLToPath(import.meta.url), ['--server', kind], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiters: Array<(m: never) => void> = [];
  let ready: ((port: number) => void) | undefined;
  const readyP = new Promise<number>((resolve, reject) => {
    ready = resolve;
    child.once('exit', (code) => reject(new Error(`${kind} server exited (${code}) before it was ready`)));
  });
  child.on('message', (m: { ready?: boolean; port?: number }) => {
    if (m.ready) ready!(m.port!);
    else waiters.shift()?.(m as never);
  });
  const port = await readyP;
  return {
    kind,
    child,
    port,
    call: (msg) =>
      new Promise((resolve, reject) => {
        waiters.push(((m: { ok: boolean; error?: string }) => (m.ok ? resolve(m) : reject(new Error(m.error)))) as never);
        child.send(msg);
      }),
  };
}

interface Case {
  name: string;
  op: 'read' | 'write';
  bytes: number;
  qd: number;
  conns: number;
  seq: boolean;
}

const CASES: Case[] = [
  ...(['read', 'write'] as const).flatMap((op) => [
    ...[1, 4].flatMap((conns) => [1, 32].map((qd) => ({ name: `4k-rand${op}-qd${qd}-c${conns}`, op, bytes: 4 * KiB, qd, conns, seq: false }))),
    { name: `128k-seq${op}-qd8-c1`, op, bytes: 128 * KiB, qd: 8, conns: 1, seq: true },
  ]),
];

interface Connection {
  queues: HostQueue[];
  close(): Promise<void>;
}

async function connect(server: Server, conns: number): Promise<Connection> {
  if (server.kind === 'nvme') {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: server.port, subnqn: SUBNQN, hostnqn: HOSTNQN, ioQueues: conns, queueSize: 128 });
    if (host.io.length !== conns) throw new Error(`asked for ${conns} I/O queues, got ${host.io.length}`);
    for (const q of host.io) q.batchWrites = true;
    return { queues: host.io, close: () => host.close() };
  }
  const queues: HostQueue[] = [];
  for (let i = 0; i < conns; i++) {
    const q = await HostQueue.open({ host: '127.0.0.1', port: server.port });
    q.batchWrites = true;
    queues.push(q);
  }
  return {
    queues,
    close: async () => {
      for (const q of queues) q.close();
    },
  };
}

interface RunResult {
  ops: number;
  seconds: number;
  iops: number;
  mbps: number;
  p50: number;
  p99: number;
  cpu: CpuSample;
}

const latencies = new Float32Array(MAX_OPS);
const lbaTable = (() => {
  const rand = prng(7);
  const t = new Uint32Array(1 << 20);
  for (let i = 0; i < t.length; i++) t[i] = Math.floor(rand() * BLOCKS);
  return t;
})();

/**
 * Drives the queues: `qd` slots per queue, each keeping one command in flight. Warm-up, then a timed
 * phase (or a fixed operation count when `countOps` is given).
 */
async function drive(server: Server, c: Case, seconds: number, countOps?: number, hooks: { start?: () => void; stop?: () => void } = {}): Promise<RunResult> {
  const conn = await connect(server, c.conns);
  const nlb = c.bytes / BS;
  const seqSpan = BLOCKS - (BLOCKS % nlb);
  let lbaIdx = Math.floor(Math.random() * lbaTable.length);
  const cursors = conn.queues.map((_, i) => (i * Math.floor(seqSpan / c.conns / nlb)) * nlb);
  const writeData = c.op === 'write' ? Buffer.alloc(c.bytes, 0x3c) : undefined;
  let recording = false;
  let stop = false;
  let n = 0;
  let ops = 0;
  let failure: Error | undefined;
  const slot = async (qi: number) => {
    const q = conn.queues[qi];
    const sqe = Buffer.alloc(64);
    sqe[0] = c.op === 'read' ? 0x02 : 0x01;
    sqe.writeUInt32LE(1, 4); // NSID
    sqe.writeUInt32LE(nlb - 1, 48);
    const opts = c.op === 'read' ? { readLength: c.bytes, readViews: true } : { write: writeData };
    while (!stop) {
      let lba: number;
      if (c.seq) {
        lba = cursors[qi];
        cursors[qi] = lba + nlb >= seqSpan ? 0 : lba + nlb;
      } else {
        lba = lbaTable[lbaIdx];
        lbaIdx = (lbaIdx + 1) & (lbaTable.length - 1);
      }
      sqe.writeUInt32LE(lba, 40);
      const t0 = performance.now();
      const r = await q.submit(sqe, opts);
      const t1 = performance.now();
      if (r.status !== 0) throw new Error(`${c.op} at LBA ${lba} failed with status 0x${r.status.toString(16)}`);
      if (recording) {
        if (n < MAX_OPS) latencies[n++] = (t1 - t0) * 1000;
        ops++;
        if (ops >= (countOps ?? MAX_OPS) && !stop) {
          stop = true;
          hooks.stop?.();
        }
      }
    }
  };
  const slots: Array<Promise<void>> = [];
  for (let qi = 0; qi < conn.queues.length; qi++) {
    for (let s = 0; s < c.qd; s++) {
      slots.push(
        slot(qi).catch((err) => {
          failure ??= err as Error;
          stop = true;
        }),
      );
    }
  }
  let meter: (() => CpuSample) | undefined;
  let tStart = 0;
  let tEnd = 0;
  const timers: NodeJS.Timeout[] = [];
  timers.push(
    setTimeout(() => {
      recording = true;
      tStart = performance.now();
      meter = cpuMeter(server.child.pid!);
      hooks.start?.();
    }, countOps !== undefined ? 100 : WARM_SECONDS * 1000),
  );
  if (countOps === undefined) timers.push(setTimeout(() => (stop = true), (WARM_SECONDS + seconds) * 1000));
  // Hard bound: nothing runs longer than this.
  timers.push(setTimeout(() => (stop = true), (WARM_SECONDS + seconds + 60) * 1000));
  await Promise.all(slots);
  tEnd = performance.now();
  const cpu = meter ? meter() : { serverPct: 0, serverSysPct: 0, clientPct: 0, boxPct: 0, otherPct: 0 };
  for (const t of timers) clearTimeout(t);
  await conn.close();
  if (failure) throw failure;
  const secs = (tEnd - tStart) / 1000;
  const lat = latencies.subarray(0, n).sort();
  const pct = (p: number) => (n > 0 ? lat[Math.min(n - 1, Math.floor(p * n))] : NaN);
  return { ops, seconds: secs, iops: ops / secs, mbps: (ops * c.bytes) / secs / 1e6, p50: pct(0.5), p99: pct(0.99), cpu };
}

/** A few reads before anything writes: the target returns the replica's and the owned blocks' bytes. */
async function sanityCheck(server: Server): Promise<void> {
  const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: server.port, subnqn: SUBNQN, hostnqn: HOSTNQN, ioQueues: 1 });
  try {
    const rand = prng(11);
    let replicaBlocks = 0;
    let ownedBlocks = 0;
    for (let i = 0; i < 256; i++) {
      const lba = Math.floor(rand() * BLOCKS);
      const b = await host.read(1, lba, 1);
      if (b.readDoubleLE(0) !== lba) throw new Error(`sanity: LBA ${lba} returned the bytes of LBA ${b.readDoubleLE(0)}`);
      const tag = b.toString('latin1', 8, 9);
      if (tag === 'R') replicaBlocks++;
      else if (tag === 'W') ownedBlocks++;
      else throw new Error(`sanity: LBA ${lba} has neither replica nor clone bytes`);
    }
    console.log(`sanity: 256 random 4 KiB reads returned the right blocks (${replicaBlocks} from the replica, ${ownedBlocks} owned by the clone)`);
  } finally {
    await host.close();
  }
}

async function clientMain(): Promise<void> {
  const seconds = envNum('BENCH_SECONDS', 2, 0.2, 30);
  const rounds = envNum('BENCH_ROUNDS', 3, 1, 20);
  const only = process.env.BENCH_CASES?.split(',').filter(Boolean);
  const cases = CASES.filter((c) => !only || only.includes(c.name));
  if (cases.length === 0) throw new Error(`BENCH_CASES matches no case; cases: ${CASES.map((c) => c.name).join(', ')}`);

  console.log(`nvme bench: node ${process.version}, ${os.cpus().length} CPUs, client pid ${process.pid}; ${rounds} rounds x ${seconds} s (+${WARM_SECONDS} s warm-up) per case and server`);
  const servers: Server[] = [];
  const killAll = () => {
    for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGTERM');
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

  const t0 = performance.now();
  const [nvme, plain] = await Promise.all([startServer('nvme'), startServer('plain')]);
  servers.push(nvme, plain);
  const st = (await nvme.call({ cmd: 'stats' })).stats as { setupSeconds: number; ownedBlocks: number; cache: { cachedBytes: number } };
  console.log(
    `servers: target pid ${nvme.child.pid} port ${nvme.port} (setup ${st.setupSeconds.toFixed(1)} s: clone owns ${fmt(st.ownedBlocks)} of ${fmt(BLOCKS)} blocks, replica cache holds ${fmt(st.cache.cachedBytes / MiB)} MiB), ` +
      `plain pid ${plain.child.pid} port ${plain.port}; ready after ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  await sanityCheck(nvme);

  const results = new Map<string, { nvme: RunResult[]; plain: RunResult[]; ratios: number[]; coreRatios: number[] }>();
  for (const c of cases) {
    const r = { nvme: [] as RunResult[], plain: [] as RunResult[], ratios: [] as number[], coreRatios: [] as number[] };
    results.set(c.name, r);
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? [nvme, plain] : [plain, nvme];
      const got: Partial<Record<'nvme' | 'plain', RunResult>> = {};
      for (const s of order) {
        if (s.kind === 'nvme') {
          const p = await s.call({ cmd: 'prepare' });
          if (p.note) console.log(`  (${p.note})`);
        }
        await waitIdle();
        const res = await drive(s, c, seconds);
        got[s.kind] = res;
        r[s.kind].push(res);
        console.log(
          `round ${round} ${c.name.padEnd(22)} ${s.kind.padEnd(5)} ${fmt(res.iops).padStart(8)} IOPS ${fmt(res.mbps).padStart(5)} MB/s p50 ${fmt(res.p50).padStart(5)} us p99 ${fmt(res.p99).padStart(6)} us` +
            ` | CPU server ${res.cpu.serverPct.toFixed(0)}% (${((res.cpu.serverPct * 1e4) / res.iops).toFixed(1)} us/op, ${((res.cpu.serverSysPct * 1e4) / res.iops).toFixed(1)} sys) client ${res.cpu.clientPct.toFixed(0)}% (${((res.cpu.clientPct * 1e4) / res.iops).toFixed(1)} us/op) other ${res.cpu.otherPct.toFixed(0)}%`,
        );
      }
      r.ratios.push(got.nvme!.iops / got.plain!.iops);
      const perCore = (x: RunResult) => x.iops / Math.max(0.01, x.cpu.serverPct / 100);
      r.coreRatios.push(perCore(got.nvme!) / perCore(got.plain!));
    }
  }

  const rows: Array<Array<string | number>> = [];
  for (const c of cases) {
    const r = results.get(c.name)!;
    const med = (xs: RunResult[], f: (x: RunResult) => number) => median(xs.map(f));
    const side = (xs: RunResult[]) => [fmt(med(xs, (x) => x.iops)), fmt(med(xs, (x) => x.mbps)), fmt(med(xs, (x) => x.p50)), fmt(med(xs, (x) => x.p99)), fmt(med(xs, (x) => x.cpu.serverPct))];
    const ratio = median(r.ratios);
    const goal = c.bytes === 4 * KiB && c.qd === 32 ? (ratio >= 0.5 ? 'met' : 'MISSED') : '';
    rows.push([
      c.name,
      ...side(r.nvme),
      ...side(r.plain),
      ratio.toFixed(2),
      goal,
      median(r.coreRatios).toFixed(2),
      `${fmt(Math.min(...r.nvme.map((x) => x.iops)))}-${fmt(Math.max(...r.nvme.map((x) => x.iops)))}`,
      fmt(median([...r.nvme, ...r.plain].map((x) => x.cpu.otherPct))),
    ]);
  }
  table(
    `NVMe/TCP target (engine clone, 256 MiB, cached) vs no-storage Node server, same TypeScript host client; medians of ${rounds} rounds x ${seconds} s; QD per connection; latency in us; CPU in % of one core`,
    ['case', 'target IOPS', 'MB/s', 'p50', 'p99', 'srv CPU', 'ceiling IOPS', 'MB/s', 'p50', 'p99', 'srv CPU', 'ratio', 'goal >= 0.5', 'per-core ratio', 'target IOPS min-max', 'other CPU'],
    rows,
  );

  if (process.env.BENCH_COPIES !== '0') await copyPhase(nvme, plain, cases);

  const fin = (await nvme.call({ cmd: 'stats' })).stats as { cache: { misses: number; hits: number }; memory: NodeJS.MemoryUsage };
  const m = fin.memory;
  console.log(
    `\ntarget replica cache over the run: ${fmt(fin.cache.hits)} block hits, ${fmt(fin.cache.misses)} misses; target memory at the end: ` +
      `heap ${fmt(m.heapUsed / MiB)} MiB used of ${fmt(m.heapTotal / MiB)}, external ${fmt(m.external / MiB)} MiB, RSS ${fmt(m.rss / MiB)} MiB`,
  );
  for (const s of servers) await s.call({ cmd: 'exit' }).catch(() => {});
  await Promise.all(servers.map((s) => (s.child.exitCode !== null ? undefined : new Promise((r) => s.child.once('exit', r)))));
}

async function copyPhase(nvme: Server, plain: Server, cases: Case[]): Promise<void> {
  const picked = cases.filter((c) => c.conns === 1 && (c.qd === 32 || c.seq));
  const rows: Array<Array<string | number>> = [];
  const sites = new Map<string, { bytes: number; calls: number; where: string }>();
  for (const c of picked) {
    for (const s of [nvme, plain]) {
      if (s.kind === 'nvme') await s.call({ cmd: 'prepare' });
      // Counting starts after 0.1 s of running and stops after COPY_PHASE_OPS operations (the server's
      // switch travels over IPC, so its window may be off by the commands in flight: <= QD of 20,000).
      let client: CopyCounts | undefined;
      let started: Promise<unknown> | undefined;
      const res = await drive(s, c, 30, Math.max(500, Math.min(COPY_PHASE_OPS, (256 * MiB) / c.bytes)), {
        start: () => {
          started = s.call({ cmd: 'copies-start' });
          startCopyCount();
        },
        stop: () => {
          client = stopCopyCount();
        },
      });
      await started;
      const server = (await s.call({ cmd: 'copies-stop' })).copies as CopyCounts;
      client ??= stopCopyCount();
      const payload = res.ops * c.bytes;
      const per = (n: number) => (n / payload).toFixed(3);
      rows.push([
        c.name,
        s.kind === 'nvme' ? 'target' : 'ceiling',
        fmt(res.ops),
        per(server.bytes),
        fmt(server.calls / res.ops, 2),
        per(server.socketReadCopyBytes),
        per(server.bytes + server.socketReadCopyBytes),
        per(client.bytes),
        per(client.socketReadCopyBytes),
        per(client.bytes + client.socketReadCopyBytes),
      ]);
      for (const [side, counts] of [[s.kind === 'nvme' ? 'target' : 'ceiling', server], ['host', client]] as const) {
        for (const [site, v] of Object.entries(counts.sites)) {
          const key = `${c.name}|${side}|${site}`;
          const e = sites.get(key) ?? { bytes: 0, calls: 0, where: `${c.name}, ${side}: ${site}` };
          e.bytes += v.bytes;
          e.calls += v.calls;
          sites.set(key, e);
        }
      }
    }
  }
  table(
    `User-space bytes copied per payload byte (up to ${fmt(COPY_PHASE_OPS)} operations per case after 0.1 s of warm-up; connection setup not included). ` +
      `JS: Buffer#copy, Buffer.concat, Buffer.from(view), TypedArray#set/slice; Node read copy: Node's memcpy of every socket read shorter than its 64 KiB buffer`,
    ['case', 'server', 'ops', 'server JS copies/B', 'JS copy calls/op', 'server Node read copy/B', 'server total/B', 'host JS copies/B', 'host Node read copy/B', 'host total/B'],
    rows,
  );
  const top = [...sites.values()].sort((a, b) => b.bytes - a.bytes).slice(0, 20);
  console.log('\ncopy sites (bytes, calls):');
  for (const t of top) console.log(`  ${fmt(t.bytes).padStart(14)} B ${fmt(t.calls).padStart(8)}x  ${t.where}`);
}

// ---------------------------------------------------------------------------------------------------

const serverIdx = process.argv.indexOf('--server');
if (serverIdx >= 0) {
  const kind = process.argv[serverIdx + 1];
  if (kind !== 'nvme' && kind !== 'plain') throw new Error(`unknown server kind ${kind}`);
  await serverMain(kind);
} else {
  await clientMain();
}
