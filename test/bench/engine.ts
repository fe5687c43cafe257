// Engine benchmarks (issue 3). Each one prints a table with its figures and, where the issue sets a goal
// against a baseline, the baseline measured in the same run and the ratio.
//
//   npm run bench:engine                      # all five, each in its own child process
//   node test/bench/engine.ts rand-io         # one of: rand-io write-amp boot-storm flush-storm clone-create
//
// Environment (all optional): BENCH_DIR (parent of the temp dir, default os.tmpdir(), i.e. /tmp; the temp
// dir is removed at the end, on error and on SIGINT/SIGTERM), BENCH_SECONDS (seconds per timed rand-io
// phase, default 1.5, max 30), BENCH_ROUNDS (rand-io / flush-storm rounds, default 3 / 12, max 50),
// BENCH_PATTERNS (rand-io patterns, comma-separated: randread,randwrite,randrw 50/50), BENCH_IDLE_WAIT_S
// (how long to wait for an idle box before a timed run, default 20), THICKET_REPLICA_CACHE_BYTES (the
// replica cache size, as in the server; default 256 MiB).
//
// 1. rand-io: 4 KiB random reads and writes at queue depth 32 on a 1 GiB clone of a 1 GiB replica with
//    half its blocks owned (a random half written and flushed before measuring) against pread/pwrite of a
//    plain 1 GiB file with the same LBA sequence. I/O style: the engine's read()/write() are async calls
//    that do synchronous fs.readSync/fs.writevSync inside; the baseline is the same: an async function per
//    operation doing fs.readSync/fs.writeSync on the plain file. 32 workers each keep one operation in
//    flight (`await op()` in a loop), so 32 operations are outstanding. Reads run two ways on the engine:
//    into the worker's own buffer (read(lba, 1, buf), like the baseline's pread), and as views of memory
//    the engine provides (read(lba, 1), what the NVMe target does; such views are not touched here).
//    Both files are fully in the page cache: this measures the engine's CPU cost over a page-cache
//    pread/pwrite. The plain file and the clone's data file are both filled with 4 KiB writes (small
//    page-cache folios: perf-limits.md §2b shows buffered 4 KiB writes into large folios cost 30x more).
//    Every engine phase starts from a clone with exactly half its blocks owned (refilled after phases
//    that wrote); phases that write are capped at 131,072 operations. No flush inside the timed phases.
//    Rounds alternate the order of the sides; the table shows medians, and also the process CPU time per
//    operation, which other load on the (shared) box disturbs less than IOPS.
// 2. write-amp: 4 KiB random writes (QD32) to fresh blocks of a new clone under several flush patterns,
//    each ending with a flush. Device bytes are /proc/self/io write_bytes: the kernel charges a process
//    for every page-cache folio it dirties (and for direct I/O), once per clean->dirty transition, i.e.
//    what writeback will submit to the block layer: data file, journal (a 4176-byte record that dirties
//    two pages counts 8 KiB), checkpoints. The threadpool's writes count (the file sums all threads).
//    Caveat: a large folio is charged whole, so this overstates the device bytes of small writes into
//    large folios (how the journal's old 1 MiB-chunk preallocation showed up: 258x for FUA writes).
//    Not counted there: ext4's own metadata (jbd2, written by a kernel thread); so the table also shows
//    the sectors written to the whole device (/sys/dev/block/M:m/stat) between two syncfs calls, which
//    includes ext4 metadata but also every other process writing to that disk at the time (noisy upper
//    bound), and the engine's own count of data + journal bytes.
// 3. boot-storm: 200 clones of one replica read the same 256 MiB region at once, each sequentially in
//    128 KiB requests (views, as the NVMe target reads), through the shared replica cache at its default
//    size. The replica file is dropped from the page cache first (dd iflag=nocache count=0) so the misses
//    go to the disk. Bytes read from the replica file per unique byte come from the cache's own counters
//    (deviceBytes / 256 MiB), with /proc/self/io read_bytes as a cross-check; MB/s = 200 x 256 MiB / wall
//    time. The clones run in one process and advance nearly in lockstep.
// 4. flush-storm: 500 clones each write 4 KiB (a new random LBA every round) and flush, all at once,
//    repeated for a number of rounds (round 0 also creates every clone's directory and data file).
//    Flushes per second = 500 / wall time of a round. Baseline, run for 0.4 s right before every round:
//    one writer doing fs.writeSync of 4 KiB at a random offset of a preallocated file + fdatasync in a
//    loop, once with fdatasync through the threadpool (the engine's style) and once with fs.fdatasyncSync;
//    each round's ratio uses the faster of its two baselines, and the summary is the median over rounds
//    1.. (fdatasync latency on a shared disk swings by 10x within seconds).
// 5. clone-create: 10,000 clones of one 64 GiB replica (a sparse file made with truncate) created with
//    Engine.createClones: wall time, and RSS / V8 heap after a full GC before and after.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Engine } from '../../src/engine/engine.ts';
import type { Clone } from '../../src/engine/clone.ts';

const BS = 4096;
const KiB = 1024;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const QD = 32;

const BENCHES: Record<string, () => Promise<void>> = {
  'rand-io': randIo,
  'write-amp': writeAmp,
  'boot-storm': bootStorm,
  'flush-storm': flushStorm,
  'clone-create': cloneCreate,
};

function envNum(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number in [${min}, ${max}], got "${raw}"`);
  return n;
}

const PHASE_SECONDS = envNum('BENCH_SECONDS', 1.5, 0.2, 30);

// ---------------------------------------------------------------------------------------------------
// helpers

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

function randomLbas(count: number, blocks: number, seed: number): Uint32Array {
  const rand = prng(seed);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.floor(rand() * blocks);
  return out;
}

/** A random permutation of [0, n). */
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

function cloneId(i: number): string {
  return `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
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

function readProcIo(): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const line of fs.readFileSync('/proc/self/io', 'latin1').split('\n')) {
      const [k, v] = line.split(':');
      if (k && v) out[k.trim()] = Number(v.trim());
    }
  } catch {
    // not Linux: the callers print n/a
  }
  return out;
}

/** Sectors written to the block device holding `dir` (whole device, all processes), or undefined. */
function deviceSectorsWritten(dir: string): number | undefined {
  try {
    const dev = fs.statSync(dir).dev;
    const major = Math.floor(dev / 256) & 0xfff;
    const minor = (dev & 0xff) | ((Math.floor(dev / 4096) & 0xfff00) >>> 0);
    const stat = fs.readFileSync(`/sys/dev/block/${major}:${minor}/stat`, 'latin1').trim().split(/\s+/).map(Number);
    return stat[6];
  } catch {
    return undefined;
  }
}

function syncfs(dir: string): void {
  spawnSync('sync', ['-f', dir], { stdio: 'ignore' });
}

function cpuTicks(): { busy: number; total: number } {
  try {
    const f = fs.readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3] - (f[4] ?? 0), total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** Starts measuring box CPU; the returned function gives box busy % and the part not used by this process (% of one CPU). */
function boxBusy(): () => { boxPct: number; foreignPct: number } {
  const c0 = cpuTicks();
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const c1 = cpuTicks();
    const u1 = process.cpuUsage(u0);
    const ncpu = os.cpus().length;
    const total = c1.total - c0.total;
    const boxPct = total > 0 ? (100 * ncpu * (c1.busy - c0.busy)) / total : 0;
    const selfPct = (100 * (u1.user + u1.system)) / 1000 / (performance.now() - t0);
    return { boxPct, foreignPct: Math.max(0, boxPct - selfPct) };
  };
}

/**
 * The box is shared (perf-limits.md): before a timed run wait up to BENCH_IDLE_WAIT_S (default 20) seconds
 * for a 200 ms window in which the box is less than 25% busy; go on regardless after that.
 */
async function waitIdle(): Promise<void> {
  const limit = performance.now() + envNum('BENCH_IDLE_WAIT_S', 20, 0, 600) * 1000;
  for (;;) {
    const m = boxBusy();
    await new Promise((r) => setTimeout(r, 200));
    if (m().boxPct < 25 || performance.now() > limit) return;
  }
}

let gcFn: (() => void) | undefined;
function fullGc(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}

/** Writes `bytes` of pseudo-random data to `file` in `chunk`-byte writes. */
function fillFile(file: string, bytes: number, chunk: number, seed: number): void {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    const pattern = Buffer.allocUnsafe(MiB);
    const rand = prng(seed);
    for (let i = 0; i < pattern.length; i += 4) pattern.writeUInt32LE((rand() * 2 ** 32) >>> 0, i);
    const buf = Buffer.allocUnsafe(chunk);
    for (let pos = 0; pos < bytes; pos += chunk) {
      pattern.copy(buf, 0, pos % MiB, (pos % MiB) + chunk);
      buf.writeDoubleLE(pos, 0); // every block differs
      fs.writeSync(fd, buf, 0, chunk, pos);
    }
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Runs `op` with `qd` operations in flight until `maxOps` operations or the deadline, whichever first.
 * Returns {ops, seconds}. op(k, worker) gets the global operation number and the worker's index.
 */
async function runQd(qd: number, seconds: number, maxOps: number, op: (k: number, w: number) => unknown): Promise<{ ops: number; seconds: number }> {
  let next = 0;
  let done = 0;
  let stop = false;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const worker = async (w: number) => {
    while (!stop && next < maxOps) {
      const k = next++;
      if ((k & 63) === 0 && performance.now() > deadline) {
        stop = true;
        break;
      }
      await op(k, w);
      done++;
    }
  };
  await Promise.all(Array.from({ length: qd }, (_, w) => worker(w)));
  const elapsed = (performance.now() - t0) / 1000;
  return { ops: done, seconds: elapsed };
}

async function withTempDir(name: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const parent = process.env.BENCH_DIR || os.tmpdir();
  const dir = fs.mkdtempSync(path.join(parent, `thicket-bench-${name}-`));
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  const onSignal = (sig: NodeJS.Signals) => {
    cleanup();
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await fn(dir);
  } finally {
    cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function openEngine(dir: string): Promise<Engine> {
  // THICKET_REPLICA_CACHE_BYTES sizes the replica cache as in the server (default 256 MiB).
  const cacheBytes = process.env.THICKET_REPLICA_CACHE_BYTES;
  const engine = new Engine({ replicaCacheBytes: cacheBytes ? envNum('THICKET_REPLICA_CACHE_BYTES', 0, 0, 2 ** 40) : undefined });
  engine.onError = (err) => console.error('engine error:', err);
  await engine.openPool({ id: 'bench', path: path.join(dir, 'pool') }, []);
  return engine;
}

// ---------------------------------------------------------------------------------------------------
// 1. rand-io

async function randIo(): Promise<void> {
  await withTempDir('rand-io', async (dir) => {
    const size = GiB;
    const blocks = size / BS;
    const rounds = envNum('BENCH_ROUNDS', 3, 1, 50);
    const replicaPath = path.join(dir, 'replica.img');
    const plainPath = path.join(dir, 'plain.img');
    let t = performance.now();
    fillFile(replicaPath, size, MiB, 1);
    fillFile(plainPath, size, BS, 2);
    console.log(`setup: replica and plain file written in ${((performance.now() - t) / 1000).toFixed(1)} s`);

    const engine = await openEngine(dir);
    const replica = { id: 'replica-1', path: replicaPath, sizeBytes: size };
    const clone = engine.createClone({ id: cloneId(1), poolId: 'bench', replica });
    const order = permutation(blocks, 3);
    const fill = Buffer.allocUnsafe(BS);
    /** Resets the clone and writes a random half of its blocks (not timed). */
    const refill = async () => {
      const t0 = performance.now();
      await clone.reset();
      for (let i = 0; i < blocks / 2; i++) {
        fill.writeDoubleLE(order[i], 0);
        await clone.write(order[i], fill);
      }
      await clone.flush();
      await engine.pool('bench').settle();
      console.log(`setup: clone reset, ${fmt(blocks / 2)} of ${fmt(blocks)} blocks written and flushed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    };

    const plainFd = fs.openSync(plainPath, 'r+');
    const readBufs = Array.from({ length: QD }, () => Buffer.allocUnsafe(BS));
    const writeBufs = Array.from({ length: QD }, (_, w) => Buffer.alloc(BS, w + 1));
    const maxOps = 20_000_000;
    const lbas = randomLbas(1 << 22, blocks, 4);
    const mask = lbas.length - 1;

    // Sides: the plain file, the engine reading into the caller's per-worker buffer (read(lba, 1, buf): what
    // the baseline does, and what a target with per-command buffers does), and the engine returning views
    // of memory it allocates (read(lba, 1)).
    type Side = 'pread/pwrite' | 'engine' | 'engine, new memory';
    type Kind = 'randread' | 'randwrite' | 'randrw 50/50';
    const isWrite = (k: number) => (Math.imul(k, 0x9e3779b1) >>> 31) === 1;
    const ops: Record<Kind, Partial<Record<Side, (k: number, w: number) => unknown>>> = {
      randread: {
        'pread/pwrite': async (k, w) => {
          fs.readSync(plainFd, readBufs[w], 0, BS, lbas[k & mask] * BS);
        },
        engine: (k, w) => clone.read(lbas[k & mask], 1, readBufs[w]),
        'engine, new memory': (k) => clone.read(lbas[k & mask], 1),
      },
      randwrite: {
        'pread/pwrite': async (k, w) => {
          fs.writeSync(plainFd, writeBufs[w], 0, BS, lbas[k & mask] * BS);
        },
        engine: (k, w) => clone.write(lbas[k & mask], writeBufs[w]),
      },
      'randrw 50/50': {
        'pread/pwrite': async (k, w) => {
          if (isWrite(k)) fs.writeSync(plainFd, writeBufs[w], 0, BS, lbas[k & mask] * BS);
          else fs.readSync(plainFd, readBufs[w], 0, BS, lbas[k & mask] * BS);
        },
        engine: (k, w) => (isWrite(k) ? clone.write(lbas[k & mask], writeBufs[w]) : clone.read(lbas[k & mask], 1, readBufs[w])),
        'engine, new memory': (k, w) => (isWrite(k) ? clone.write(lbas[k & mask], writeBufs[w]) : clone.read(lbas[k & mask], 1)),
      },
    };
    const only = process.env.BENCH_PATTERNS?.split(',');
    const kinds = (Object.keys(ops) as Kind[]).filter((k) => !only || only.includes(k));
    const results: Record<string, number[]> = {};
    const owned: Record<string, number[]> = {};
    let offset = 0;
    for (let round = 0; round < rounds; round++) {
      for (const kind of kinds) {
        // Every engine phase starts from a clone with exactly half its blocks owned (refilled after a phase
        // that wrote); a phase that writes is capped at as many operations as the clone has inherited
        // blocks, so it ends at most near 70% owned.
        const cap = kind === 'randread' ? maxOps : blocks / 2;
        const all = Object.keys(ops[kind]) as Side[];
        const sides = round % 2 === 0 ? all : [...all].reverse();
        for (const side of sides) {
          // Same LBA sequence for both sides of a round.
          const base = offset;
          if (side !== 'pread/pwrite' && clone.ownedBlocks !== blocks / 2) await refill();
          const before = clone.ownedBlocks;
          await waitIdle();
          const busy = boxBusy();
          const fn = ops[kind][side]!;
          const cpu0 = process.cpuUsage();
          const r = await runQd(QD, PHASE_SECONDS, cap, (k, w) => fn(base + k, w));
          const cpu = process.cpuUsage(cpu0);
          const load = busy();
          const iops = r.ops / r.seconds;
          const cpuUs = (cpu.user + cpu.system) / r.ops;
          (results[`${kind}|${side}`] ??= []).push(iops);
          (results[`${kind}|${side}|cpu`] ??= []).push(cpuUs);
          if (side !== 'pread/pwrite') (owned[kind] ??= []).push(before / blocks, clone.ownedBlocks / blocks);
          console.log(
            `round ${round} ${kind.padEnd(12)} ${side.padEnd(18)} ${fmt(iops).padStart(9)} IOPS, ${cpuUs.toFixed(2)} us CPU/op (${fmt(r.ops)} ops in ${r.seconds.toFixed(2)} s, box CPU ${load.boxPct.toFixed(0)}%, other processes ${load.foreignPct.toFixed(0)}%)` +
              (side !== 'pread/pwrite' ? `, clone ${((100 * before) / blocks).toFixed(0)}% -> ${((100 * clone.ownedBlocks) / blocks).toFixed(0)}% owned` : ''),
          );
        }
        offset += 3_000_000;
      }
    }
    fs.closeSync(plainFd);
    const rows: Array<Array<string | number>> = [];
    for (const kind of kinds) {
      const b = median(results[`${kind}|pread/pwrite`]);
      const bCpu = median(results[`${kind}|pread/pwrite|cpu`]);
      for (const side of Object.keys(ops[kind]) as Side[]) {
        if (side === 'pread/pwrite') continue;
        const e = median(results[`${kind}|${side}`]);
        const eCpu = median(results[`${kind}|${side}|cpu`]);
        const o = owned[kind];
        rows.push([
          `${kind}, ${side}`,
          fmt(e),
          fmt(b),
          (e / b).toFixed(2),
          e / b >= 0.8 ? 'met' : 'MISSED',
          `${eCpu.toFixed(2)} / ${bCpu.toFixed(2)}`,
          (bCpu / eCpu).toFixed(2),
          `${(100 * Math.min(...o)).toFixed(0)}-${(100 * Math.max(...o)).toFixed(0)}%`,
        ]);
      }
    }
    table(
      `rand-io: 4 KiB random I/O, QD ${QD}, 1 GiB clone of a 1 GiB replica with half its blocks owned, vs a plain 1 GiB file; median of ${rounds} rounds, <= ${PHASE_SECONDS} s each`,
      ['pattern, engine side', 'engine IOPS', 'pread/pwrite IOPS', 'ratio', 'goal >= 0.8', 'CPU us/op engine / plain', 'CPU ratio', 'clone blocks owned'],
      rows,
    );
    console.log('CPU ratio = process CPU per operation of the plain file / of the engine: the same comparison, less sensitive to other load on the box.');
    const cs = engine.cache.getStats();
    console.log(`replica cache: ${fmt(cs.hits)} hits, ${fmt(cs.misses)} misses, ${fmt(cs.cachedBytes / MiB)} MiB cached`);
    await engine.close();
  });
}

// ---------------------------------------------------------------------------------------------------
// 2. write-amp

async function writeAmp(): Promise<void> {
  await withTempDir('write-amp', async (dir) => {
    const replicaPath = path.join(dir, 'replica.img');
    const replicaSize = 4 * GiB;
    fs.writeFileSync(replicaPath, '');
    fs.truncateSync(replicaPath, replicaSize);
    const replica = { id: 'replica-1', path: replicaPath, sizeBytes: replicaSize };
    const engine = await openEngine(dir);
    const pool = engine.pool('bench');
    const writes = 65_536; // 256 MiB per pattern
    const patterns: Array<{ name: string; flushEvery: number; fua?: boolean }> = [
      { name: 'final flush only', flushEvery: 0 },
      { name: 'flush every 1024 writes', flushEvery: 1024 },
      { name: 'flush every 256 writes', flushEvery: 256 },
      { name: 'flush every 32 writes', flushEvery: 32 },
      { name: 'FUA on every write', flushEvery: 1, fua: true },
    ];
    const hasProcIo = readProcIo().write_bytes !== undefined;
    const rows: Array<Array<string | number>> = [];
    const buf = Buffer.alloc(BS, 0x5a);
    for (let pi = 0; pi < patterns.length; pi++) {
      const pat = patterns[pi];
      const clone = engine.createClone({ id: cloneId(100 + pi), poolId: 'bench', replica });
      const lbas = permutation(replicaSize / BS, 10 + pi);
      await pool.settle();
      syncfs(dir);
      const io0 = readProcIo();
      const dev0 = deviceSectorsWritten(dir);
      const journal0 = pool.journal.bytesWritten;
      const epoch0 = pool.journal.epoch;
      const t0 = performance.now();
      let flushes: Promise<void>[] = [];
      const r = await runQd(QD, 120, writes, async (k) => {
        await clone.write(lbas[k], buf, { fua: pat.fua });
        if (pat.flushEvery > 1 && (k + 1) % pat.flushEvery === 0) flushes.push(clone.flush());
        if (flushes.length > 64) {
          await Promise.all(flushes);
          flushes = [];
        }
      });
      await Promise.all(flushes);
      await clone.flush();
      await pool.settle();
      const seconds = (performance.now() - t0) / 1000;
      const io1 = readProcIo();
      syncfs(dir);
      const dev1 = deviceSectorsWritten(dir);
      const logical = r.ops * BS;
      const procBytes = hasProcIo ? io1.write_bytes - io0.write_bytes : NaN;
      const journalBytes = pool.journal.bytesWritten - journal0;
      const engineBytes = clone.stats.writeBytes + journalBytes;
      const devBytes = dev0 !== undefined && dev1 !== undefined ? (dev1 - dev0) * 512 : NaN;
      rows.push([
        pat.name,
        fmt(r.ops),
        fmt(logical / MiB),
        fmt(procBytes / MiB, 1),
        (procBytes / logical).toFixed(3),
        (engineBytes / logical).toFixed(3),
        fmt(journalBytes / MiB, 1),
        pool.journal.epoch - epoch0,
        (devBytes / logical).toFixed(3),
        fmt(r.ops / seconds),
      ]);
      console.log(`${pat.name}: done in ${seconds.toFixed(2)} s`);
      await engine.deleteClone(clone.id);
    }
    table(
      `write-amp: 4 KiB random writes to fresh blocks, QD ${QD}, ${fmt((writes * BS) / MiB)} MiB per pattern, each ending with a flush`,
      [
        'pattern',
        'writes',
        'MiB written',
        'write_bytes MiB',
        'WA (/proc/self/io)',
        'WA (engine count)',
        'journal MiB',
        'journal switches',
        'WA (device, noisy)',
        'writes/s',
      ],
      rows,
    );
    console.log('WA (/proc/self/io) = write_bytes delta / bytes written: data file + journal + checkpoints, page-granular (the goal figure, <= 1.1).');
    console.log('WA (engine count) = (data bytes + journal bytes) / bytes written, checkpoints not included.');
    console.log('WA (device) = sectors written to the whole disk between two syncfs calls: includes ext4 metadata and any other process.');
    await engine.close();
  });
}

// ---------------------------------------------------------------------------------------------------
// 3. boot-storm

async function bootStorm(): Promise<void> {
  await withTempDir('boot-storm', async (dir) => {
    const clones = 200;
    const region = 256 * MiB;
    const request = 128 * KiB;
    const replicaSize = 1 * GiB;
    const replicaPath = path.join(dir, 'replica.img');
    fillFile(replicaPath, replicaSize, MiB, 7);
    const reqBlocks = request / BS;
    const regionBlocks = region / BS;
    // lockstep: every clone starts at the region's first block (one process: they advance nearly together).
    // scattered: every clone starts at its own random 128 KiB-aligned offset and wraps round, so the
    // whole region is in use at once, as when clones boot at slightly different times.
    for (const scenario of ['lockstep', 'scattered'] as const) {
      const dropped = spawnSync('dd', [`if=${replicaPath}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' }).status === 0;
      const engine = await openEngine(dir);
      const replica = { id: 'replica-1', path: replicaPath, sizeBytes: replicaSize };
      const list: Clone[] = [];
      for (let i = 0; i < clones; i++) list.push(engine.createClone({ id: cloneId(i), poolId: 'bench', replica }));
      const rand = prng(21);
      const starts = list.map(() => (scenario === 'lockstep' ? 0 : Math.floor(rand() * (regionBlocks / reqBlocks)) * reqBlocks));
      fullGc();
      const rss0 = process.memoryUsage().rss;
      const s0 = engine.cache.getStats();
      const io0 = readProcIo();
      const deadline = performance.now() + 300_000;
      let timedOut = false;
      let maxLatency = 0;
      await waitIdle();
      const t0 = performance.now();
      await Promise.all(
        list.map(async (c, k) => {
          for (let done = 0; done < regionBlocks; done += reqBlocks) {
            const s = performance.now();
            if (s > deadline) {
              timedOut = true;
              return;
            }
            await c.read((starts[k] + done) % regionBlocks, reqBlocks);
            const l = performance.now() - s;
            if (l > maxLatency) maxLatency = l;
          }
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      const s1 = engine.cache.getStats();
      const io1 = readProcIo();
      const rss1 = process.memoryUsage().rss;
      const deviceBytes = s1.deviceBytes - s0.deviceBytes;
      const ratio = deviceBytes / region;
      const total = clones * region;
      table(
        `boot-storm (${scenario}): ${clones} clones read the same ${region / MiB} MiB of one replica at once, ${request / KiB} KiB sequential requests, replica cache ${s1.capacityBytes / MiB} MiB (default)`,
        ['figure', 'value'],
        [
          ['bytes read from the replica per unique byte (cache deviceBytes)', `${ratio.toFixed(3)} (goal <= 1.1: ${ratio <= 1.1 ? 'met' : 'MISSED'})`],
          ['  cross-check: /proc/self/io read_bytes per unique byte', io1.read_bytes !== undefined ? ((io1.read_bytes - io0.read_bytes) / region).toFixed(3) : 'n/a'],
          ['aggregate MB/s (200 x 256 MiB / wall time, 1 MB = 10^6 B)', fmt(total / 1e6 / seconds)],
          ['wall time s', seconds.toFixed(2)],
          ['device reads / misses / hits (blocks)', `${fmt(s1.deviceReads - s0.deviceReads)} / ${fmt(s1.misses - s0.misses)} / ${fmt(s1.hits - s0.hits)}`],
          ['cache bytes at end', `${fmt(s1.cachedBytes / MiB)} MiB`],
          ['RSS before -> after', `${fmt(rss0 / MiB)} -> ${fmt(rss1 / MiB)} MiB`],
          ['max request latency ms', maxLatency.toFixed(1)],
          ['replica dropped from page cache first', dropped ? 'yes' : 'no (dd failed: misses were page-cache reads)'],
          ['stopped by the 300 s time bound', timedOut ? 'YES (figures cover a partial run)' : 'no'],
        ],
      );
      await engine.close();
      fullGc();
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// 4. flush-storm

async function flushStorm(): Promise<void> {
  await withTempDir('flush-storm', async (dir) => {
    const clones = 500;
    const rounds = envNum('BENCH_ROUNDS', 12, 2, 50);
    const replicaSize = 256 * MiB;
    const replicaPath = path.join(dir, 'replica.img');
    fs.writeFileSync(replicaPath, '');
    fs.truncateSync(replicaPath, replicaSize);
    const replica = { id: 'replica-1', path: replicaPath, sizeBytes: replicaSize };

    // Baseline file: preallocated with 4 KiB writes and synced, so overwrites need no allocation.
    const plainPath = path.join(dir, 'plain.img');
    const plainBlocks = (64 * MiB) / BS;
    fillFile(plainPath, plainBlocks * BS, BS, 8);
    const plainFd = fs.openSync(plainPath, 'r+');
    const plainBuf = Buffer.alloc(BS, 0x33);
    const baselineLbas = randomLbas(1 << 16, plainBlocks, 9);
    const baseline = async (style: 'threadpool' | 'sync', ms: number): Promise<number> => {
      const t0 = performance.now();
      let n = 0;
      while (n < 100_000 && performance.now() - t0 < ms) {
        fs.writeSync(plainFd, plainBuf, 0, BS, baselineLbas[n & 0xffff] * BS);
        if (style === 'sync') fs.fdatasyncSync(plainFd);
        else await new Promise<void>((res, rej) => fs.fdatasync(plainFd, (err) => (err ? rej(err) : res())));
        n++;
      }
      return n / ((performance.now() - t0) / 1000);
    };
    await baseline('threadpool', 300); // warm-up

    const engine = await openEngine(dir);
    const pool = engine.pool('bench');
    const list: Clone[] = [];
    for (let i = 0; i < clones; i++) list.push(engine.createClone({ id: cloneId(i), poolId: 'bench', replica }));
    const bufs = list.map((_, i) => Buffer.alloc(BS, i & 0xff));
    const rand = prng(11);
    interface Round {
      rate: number;
      seconds: number;
      cpuMs: number;
      commits: number;
      switched: boolean;
      baseTp: number;
      baseSync: number;
    }
    const perRound: Round[] = [];
    for (let round = 0; round < rounds; round++) {
      // The baseline runs right before each round (0.4 s per style), so each round has its own ratio.
      await pool.settle();
      await waitIdle();
      const baseTp = await baseline('threadpool', 400);
      const baseSync = await baseline('sync', 400);
      const lbas = list.map(() => Math.floor(rand() * (replicaSize / BS)));
      const commits0 = pool.journal.commits;
      const epoch0 = pool.journal.epoch;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(
        list.map(async (c, i) => {
          await c.write(lbas[i], bufs[i]);
          await c.flush();
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      perRound.push({
        rate: clones / seconds,
        seconds,
        cpuMs: (cpu.user + cpu.system) / 1000,
        commits: pool.journal.commits - commits0,
        switched: pool.journal.epoch !== epoch0,
        baseTp,
        baseSync,
      });
    }
    await pool.settle();
    fs.closeSync(plainFd);

    const steady = perRound.slice(1);
    const engineRate = median(steady.map((r) => r.rate));
    const baseTp = median(steady.map((r) => r.baseTp));
    const baseSync = median(steady.map((r) => r.baseSync));
    const ratio = median(steady.map((r) => r.rate / Math.max(r.baseTp, r.baseSync)));
    table(
      `flush-storm rounds: ${clones} clones each write 4 KiB + flush, all at once; baseline: one writer, write + fdatasync, run just before the round`,
      ['round', 'wall ms', 'engine CPU ms', 'flushes/s', 'journal commits (fdatasync)', 'journal switch', 'baseline /s threadpool', 'baseline /s sync', 'ratio'],
      perRound.map((r, i) => [
        i === 0 ? '0 (creates data files)' : i,
        (r.seconds * 1000).toFixed(1),
        r.cpuMs.toFixed(1),
        fmt(r.rate),
        r.commits,
        r.switched ? 'yes' : '',
        fmt(r.baseTp),
        fmt(r.baseSync),
        (r.rate / Math.max(r.baseTp, r.baseSync)).toFixed(1),
      ]),
    );
    table(
      'flush-storm summary',
      ['figure', 'value'],
      [
        [`engine flushes/s (median of rounds 1..${rounds - 1})`, fmt(engineRate)],
        ['engine flushes/s, round 0 (first write of every clone: creates its directory and data file)', fmt(perRound[0].rate)],
        ['baseline write + fdatasync through the threadpool (median)', `${fmt(baseTp)} /s`],
        ['baseline write + fdatasyncSync (median)', `${fmt(baseSync)} /s`],
        ['ratio engine / faster baseline of the same round (median of rounds 1..)', `${ratio.toFixed(1)} (goal >= 10: ${ratio >= 10 ? 'met' : 'MISSED'})`],
        ['ratio, round 0', (perRound[0].rate / Math.max(perRound[0].baseTp, perRound[0].baseSync)).toFixed(1)],
      ],
    );
    await engine.close();
  });
}

// ---------------------------------------------------------------------------------------------------
// 5. clone-create

async function cloneCreate(): Promise<void> {
  await withTempDir('clone-create', async (dir) => {
    const count = 10_000;
    const replicaSize = 64 * GiB;
    const replicaPath = path.join(dir, 'replica.img');
    fs.writeFileSync(replicaPath, '');
    fs.truncateSync(replicaPath, replicaSize);
    const engine = await openEngine(dir);
    const replica = { id: 'replica-64g', path: replicaPath, sizeBytes: replicaSize };
    const inputs = Array.from({ length: count }, (_, i) => ({ id: cloneId(i), poolId: 'bench', replica }));
    fullGc();
    const m0 = process.memoryUsage();
    const t0 = performance.now();
    engine.createClones(inputs);
    const ms = performance.now() - t0;
    const m1raw = process.memoryUsage();
    fullGc();
    const m1 = process.memoryUsage();
    const entries = fs.readdirSync(path.join(dir, 'pool', 'clones')).length;
    table(
      `clone-create: ${fmt(count)} clones of one ${replicaSize / GiB} GiB replica (sparse file) with Engine.createClones`,
      ['figure', 'value'],
      [
        ['time', `${ms.toFixed(1)} ms (goal <= 1000 ms: ${ms <= 1000 ? 'met' : 'MISSED'})`],
        ['per clone', `${((ms * 1000) / count).toFixed(2)} us`],
        ['process RSS before -> after (after full GC)', `${fmt(m0.rss / MiB, 1)} -> ${fmt(m1.rss / MiB, 1)} MiB (goal <= 200 MiB: ${m1.rss <= 200 * MiB ? 'met' : 'MISSED'})`],
        ['process RSS right after creation (before GC)', `${fmt(m1raw.rss / MiB, 1)} MiB`],
        ['V8 heap used before -> after', `${fmt(m0.heapUsed / MiB, 1)} -> ${fmt(m1.heapUsed / MiB, 1)} MiB`],
        ['heap per clone', `${fmt((m1.heapUsed - m0.heapUsed) / count)} B`],
        ['clone directories created on disk', String(entries)],
      ],
    );
    await engine.close();
  });
}

// ---------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const name = process.argv[2];
  if (name && name !== 'all') {
    const fn = BENCHES[name];
    if (!fn) {
      console.error(`unknown benchmark "${name}"; choose one of: ${Object.keys(BENCHES).join(', ')}, all`);
      process.exit(2);
    }
    console.log(`== ${name} (node ${process.version}, ${os.cpus().length} CPUs, ${os.release()})`);
    await fn();
    return;
  }
  // All of them, each in a fresh process (clean heap and RSS figures, no state carried over).
  const self = fileURLToPath(import.meta.url);
  let failed = 0;
  for (const b of Object.keys(BENCHES)) {
    const r = spawnSync(process.execPath, [...process.execArgv, self, b], { stdio: 'inherit', env: process.env });
    if (r.status !== 0) {
      failed++;
      console.error(`benchmark ${b} failed (status ${r.status}, signal ${r.signal})`);
    }
  }
  if (failed > 0) process.exit(1);
}

await main();
