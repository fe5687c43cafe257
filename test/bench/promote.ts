// Promotion benchmark (issue 2): imports a 2 GiB raw image with half its 4 KiB blocks zero as a template
// version, then times promotion to a replica against `cp --sparse=always` of the same file on the same
// filesystem, interleaved, and prints MB/s and the ratio promote/cp. Goal: ratio >= 0.8.
//
//   npm run bench:promote
//
// Environment (all optional): BENCH_SIZE_MIB (default 2048), BENCH_ROUNDS (default 3, max 20),
// BENCH_SEED (default 1), BENCH_SOURCE=sparse|dense (default sparse: zero runs are holes, the layout the
// template version itself has; dense: zero runs are written as explicit zeroes), BENCH_DIR (parent of the
// temp dir, default os.tmpdir()).
//
// Promotion is timed from the POST to the first poll (every 25 ms) that sees the job succeeded.
//
// Fairness: both sides end durable. Promotion fdatasyncs the replica (and seals it: chmod, rename, directory
// fsync); cp is timed as `cp --sparse=always SRC DST && sync -d DST` (sync -d = fdatasync of DST), spawned
// through sh, spawn time included. Both copy into the same temp dir's filesystem (Thicket's data dir is
// inside it) with the source in the page cache. Before every timed run the filesystem is flushed (`sync -f`)
// untimed, the previous run's output is deleted, the bench waits (at most 60 s) for the box to be below 20%
// busy, and the order alternates (promote, cp, sha256 in odd rounds; the reverse in even rounds). Each run
// line shows the CPU the measured work used and the "foreign" CPU used by everything else meanwhile (other
// tenants of a shared box, kernel writeback); runs are never dropped, the summary is the median.
// MB/s = logical image bytes / seconds (1 MB = 10^6 bytes).
//
// Also measured, as a reference: sha256 of the same number of bytes from memory on one core. Promotion must
// hash every byte (holes included) and cp hashes nothing, so ceiling/cp bounds the ratio any promotion can
// reach on this machine.
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, fdatasyncSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { replicaImagePath } from '../../src/engine/storage-pool-fs.ts';
import { startThicket, type ThicketInstance } from '../../src/thicket.ts';
import { testConfig } from '../helpers/thicket.ts';

const BLOCK = 4096;
const MiB = 1024 * 1024;
const TOKEN = 'bench-admin-token-0123456789abcdef';
const JOB_TIMEOUT_MS = 10 * 60_000;
const CP_TIMEOUT_MS = 10 * 60_000;
const POLL_MS = 25;

function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer in [${min}, ${max}], got "${raw}"`);
  return n;
}

const SIZE_MIB = envInt('BENCH_SIZE_MIB', 2048, 16, 64 * 1024);
const ROUNDS = envInt('BENCH_ROUNDS', 3, 1, 20);
const SEED = envInt('BENCH_SEED', 1, 0, 2 ** 31 - 1);
const SOURCE_KIND = process.env.BENCH_SOURCE ?? 'sparse';
if (SOURCE_KIND !== 'sparse' && SOURCE_KIND !== 'dense') throw new Error(`BENCH_SOURCE must be sparse or dense, got "${SOURCE_KIND}"`);
const SIZE_BYTES = SIZE_MIB * MiB;

/** mulberry32: small deterministic PRNG for the block layout. */
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

interface Run {
  zero: boolean;
  blocks: number;
}

/**
 * Alternating runs of data and zero blocks, exactly half of each. Run lengths are log-uniform between 1 block
 * (4 KiB) and 512 blocks (2 MiB), so there are many short runs (scattered small files, metadata) and some
 * long ones (big files, free space).
 */
function layout(totalBlocks: number, seed: number): Run[] {
  const rand = prng(seed);
  const runLength = () => Math.max(1, Math.floor(2 ** (rand() * 9.0001)));
  const lengths = (budget: number): number[] => {
    const out: number[] = [];
    for (let left = budget; left > 0; ) {
      const n = Math.min(runLength(), left);
      out.push(n);
      left -= n;
    }
    return out;
  };
  const data = lengths(Math.floor(totalBlocks / 2));
  const zero = lengths(totalBlocks - data.reduce((a, b) => a + b, 0));
  // Same number of runs on both sides, so they alternate: split random runs of the shorter list in two.
  for (let i = 0; i < 10 * totalBlocks && data.length !== zero.length; i++) {
    const list = data.length < zero.length ? data : zero;
    const k = Math.floor(rand() * list.length);
    if (list[k] < 2) continue;
    const first = 1 + Math.floor(rand() * (list[k] - 1));
    list.splice(k, 1, first, list[k] - first);
  }
  const runs: Run[] = [];
  for (let i = 0; i < Math.max(data.length, zero.length); i++) {
    if (i < data.length) runs.push({ zero: false, blocks: data[i] });
    if (i < zero.length) runs.push({ zero: true, blocks: zero[i] });
  }
  return runs;
}

/** Writes the image: data blocks from an AES-128-CTR keystream (deterministic, incompressible, never all zero). */
function writeImage(file: string, runs: Run[], seed: number, dense: boolean): { sha256: string; dataBlocks: number; runs: number } {
  const key = createHash('sha256').update(`thicket-bench-${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(512 * BLOCK);
  const hash = createHash('sha256');
  const fd = openSync(file, 'wx', 0o644);
  try {
    let position = 0;
    let dataBlocks = 0;
    for (const run of runs) {
      // Runs can be longer than the 2 MiB scratch buffer (the leftover run at the end): write in pieces.
      for (let left = run.blocks; left > 0; ) {
        const blocks = Math.min(left, 512);
        const bytes = blocks * BLOCK;
        left -= blocks;
        if (run.zero) {
          const z = zero.subarray(0, bytes);
          hash.update(z);
          if (dense) writeAll(fd, z, position);
        } else {
          const data = cipher.update(zero.subarray(0, bytes));
          for (let off = 0; off < bytes; off += BLOCK) data[off] |= 1; // never an all-zero data block
          hash.update(data);
          writeAll(fd, data, position);
          dataBlocks += blocks;
        }
        position += bytes;
      }
    }
    ftruncateSync(fd, position);
    fdatasyncSync(fd);
    return { sha256: hash.digest('hex'), dataBlocks, runs: runs.length };
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, buffer: Buffer, position: number): void {
  let done = 0;
  while (done < buffer.length) done += writeSync(fd, buffer, done, buffer.length - done, position + done);
}

function run(command: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} ${args.join(' ')} failed (${signal ?? code}): ${stderr.trim()}`));
    });
  });
}

/** Box-wide CPU busy fraction between two /proc/stat samples (to spot interference from other tenants). */
async function cpuSample(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = v[3] + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Waits (at most maxWaitMs) until the whole box is below `threshold` busy, so runs start on a quiet machine. */
async function waitForIdle(threshold = 0.2, maxWaitMs = 60_000): Promise<{ waitedMs: number; busy: number }> {
  const start = Date.now();
  let busy = 1;
  for (let i = 0; i < 1000 && Date.now() - start < maxWaitMs; i++) {
    const a = await cpuSample();
    await new Promise((r) => setTimeout(r, 500));
    const b = await cpuSample();
    busy = b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0;
    if (busy < threshold) break;
  }
  return { waitedMs: Date.now() - start, busy };
}

interface Timed {
  seconds: number;
  /** CPU used by the measured work (this process, or the child processes), in cores. */
  ownCores: number;
  /** CPU used by everything else on the box during the run (other tenants, kernel writeback), in cores. */
  foreignCores: number;
  note?: string;
}

/** Times `fn`; it returns the CPU seconds of child processes it ran (if any), which count as its own. */
async function timed(fn: () => Promise<number | void>, countProcess: boolean): Promise<Timed> {
  const c0 = await cpuSample();
  const p0 = process.cpuUsage();
  const t0 = performance.now();
  const childCpu = (await fn()) ?? 0;
  const seconds = (performance.now() - t0) / 1000;
  const p = process.cpuUsage(p0);
  const c1 = await cpuSample();
  const ncpu = os.availableParallelism();
  const boxCores = c1.total > c0.total ? ((c1.busy - c0.busy) / (c1.total - c0.total)) * ncpu : 0;
  const ownCores = ((countProcess ? (p.user + p.system) / 1e6 : 0) + childCpu) / seconds;
  return { seconds, ownCores, foreignCores: Math.max(0, boxCores - ownCores) };
}

type Kind = 'promote' | 'cp' | 'sha256';

const mbps = (bytes: number, seconds: number) => bytes / 1e6 / seconds;
function show(what: string, round: number, t: Timed, idle?: { waitedMs: number; busy: number }): void {
  console.log(
    `${round ? `round ${round}` : 'once   '} ${what.padEnd(8)} ${t.seconds.toFixed(3).padStart(7)} s ${mbps(SIZE_BYTES, t.seconds).toFixed(0).padStart(5)} MB/s` +
      `  (own CPU ${t.ownCores.toFixed(2)} cores, foreign ${t.foreignCores.toFixed(2)} cores${t.foreignCores > 0.3 ? ' — disturbed' : ''}` +
      (idle && idle.waitedMs > 1000 ? `; waited ${(idle.waitedMs / 1000).toFixed(0)} s for a quiet box` : '') +
      (t.note ? `; ${t.note}` : '') +
      ')',
  );
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main(): Promise<void> {
  const parent = process.env.BENCH_DIR ?? os.tmpdir();
  const dir = await mkdtemp(path.join(parent, 'thicket-bench-'));
  let thicket: ThicketInstance | undefined;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await thicket?.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    void cleanup().finally(() => process.kill(process.pid, sig));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const source = path.join(dir, 'source.img');
    const runs = layout(SIZE_BYTES / BLOCK, SEED);
    const tGen = performance.now();
    const image = writeImage(source, runs, SEED, SOURCE_KIND === 'dense');
    const srcStat = await stat(source);
    console.log(
      `image: ${SIZE_MIB} MiB ${SOURCE_KIND} raw, ${image.dataBlocks}/${SIZE_BYTES / BLOCK} data blocks in ${image.runs} runs (1-512 blocks), ` +
        `seed ${SEED}, ${(srcStat.blocks * 512) / MiB} MiB allocated, sha256 ${image.sha256.slice(0, 16)}…, written in ${((performance.now() - tGen) / 1000).toFixed(1)} s`,
    );
    console.log(`dir: ${dir} (node ${process.version}, ${os.availableParallelism()} CPUs, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')})`);

    const dataDir = path.join(dir, 'data');
    // The test helper's config (PGlite in the data dir, ephemeral HTTP port, silent), kept in step with Config.
    const config: Config = { ...testConfig(dataDir, undefined), adminToken: TOKEN };
    thicket = await startThicket(config, { logger: createLogger('silent') });
    const base = thicket.url;
    const api = async <T = any>(method: string, pathname: string, body?: unknown): Promise<{ status: number; body: T }> => {
      const res = await fetch(`${base}${pathname}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
    };
    const expect = <T>(r: { status: number; body: T }, status: number, what: string): T => {
      if (r.status !== status) throw new Error(`${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    };

    const template = expect(await api('POST', '/api/v1/templates', { name: 'bench' }), 201, 'create template');
    let version: any;
    await run('sync', ['-f', dir], CP_TIMEOUT_MS);
    await waitForIdle();
    const imp = await timed(async () => {
      version = expect(await api('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: source, format: 'raw' }), 201, 'import');
    }, true);
    if (version.sha256 !== image.sha256 || version.sizeBytes !== SIZE_BYTES) {
      throw new Error(`import mismatch: ${version.sha256} ${version.sizeBytes}, expected ${image.sha256} ${SIZE_BYTES}`);
    }
    show('import', 0, imp);

    const pools = expect(await api<any[]>('GET', '/api/v1/storage-pools'), 200, 'list pools');
    const pool = pools.find((p) => p.name === 'fast');
    if (!pool) throw new Error('no "fast" pool');

    const promoteOnce = async (): Promise<Timed> => {
      let replicaId = '';
      let jobSeconds = 0;
      const t = await timed(async () => {
        const { replica, job } = expect(await api('POST', '/api/v1/replicas', { templateVersionId: version.id, storagePoolId: pool.id }), 202, 'promote');
        replicaId = replica.id;
        const deadline = Date.now() + JOB_TIMEOUT_MS;
        for (let i = 0; ; i++) {
          const j = expect(await api('GET', `/api/v1/jobs/${job.id}`), 200, 'job');
          if (j.state === 'succeeded') {
            jobSeconds = (Date.parse(j.finishedAt) - Date.parse(j.startedAt)) / 1000;
            break;
          }
          if (j.state !== 'queued' && j.state !== 'running') throw new Error(`promotion job ${j.state}: ${JSON.stringify(j.error)}`);
          if (Date.now() > deadline || i > 1_000_000) throw new Error('promotion did not finish in time');
          // 25 ms: fine enough for runs of seconds, cheap enough not to load the server being measured.
          await new Promise((r) => setTimeout(r, POLL_MS));
        }
      }, true);
      t.note = `job ran ${jobSeconds.toFixed(3)} s`;
      const r = expect(await api('GET', `/api/v1/replicas/${replicaId}`), 200, 'replica');
      if (r.state !== 'ready' || r.sha256 !== image.sha256) throw new Error(`replica ${r.state} ${r.sha256}`);
      const st = await stat(replicaImagePath(pool.path, replicaId));
      if (st.blocks * 512 > image.dataBlocks * BLOCK + 64 * MiB) throw new Error(`replica not sparse: ${st.blocks * 512} bytes allocated`);
      expect(await api('DELETE', `/api/v1/replicas/${replicaId}`), 204, 'delete replica');
      return t;
    };
    const cpOnce = async (): Promise<Timed> => {
      const dst = path.join(dir, 'cp-copy.img');
      // `times` prints the CPU time of the shell's children (cp, sync): the second line, user and system.
      const t = await timed(async () => {
        const out = await run('sh', ['-c', 'cp --sparse=always -- "$1" "$2" && sync -d -- "$2" && times', 'sh', source, dst], CP_TIMEOUT_MS);
        const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(out.trim().split('\n')[1] ?? '');
        return m ? Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]) : 0;
      }, false);
      const st = await stat(dst);
      if (st.size !== SIZE_BYTES) throw new Error(`cp produced ${st.size} bytes`);
      await rm(dst);
      return t;
    };

    // The floor under any promotion: sha256 of every byte on one core (in memory, no I/O). Promotion must hash
    // all 2 GiB, holes included; cp does not hash at all.
    const sha256Once = async (): Promise<Timed> =>
      timed(async () => {
        const buffer = Buffer.alloc(MiB, 0x5a);
        const hash = createHash('sha256');
        for (let done = 0; done < SIZE_BYTES; done += MiB) hash.update(buffer);
        hash.digest();
      }, true);

    const results: Record<Kind, Timed[]> = { promote: [], cp: [], sha256: [] };
    for (let round = 1; round <= ROUNDS; round++) {
      const order: Kind[] = round % 2 === 1 ? ['promote', 'cp', 'sha256'] : ['sha256', 'cp', 'promote'];
      for (const what of order) {
        await run('sync', ['-f', dir], CP_TIMEOUT_MS);
        const idle = await waitForIdle();
        const t = what === 'promote' ? await promoteOnce() : what === 'cp' ? await cpOnce() : await sha256Once();
        results[what].push(t);
        show(what, round, t, idle);
      }
    }

    const importMBps = mbps(SIZE_BYTES, imp.seconds);
    const med = (k: Kind) => median(results[k].map((t) => mbps(SIZE_BYTES, t.seconds)));
    const promoteMBps = med('promote');
    const cpMBps = med('cp');
    const shaMBps = med('sha256');
    const ratio = promoteMBps / cpMBps;
    const line = (label: string, value: string) => console.log(`  ${label.padEnd(40)} ${value}`);
    console.log('');
    console.log(`summary: ${SIZE_MIB} MiB ${SOURCE_KIND} raw image, half its blocks zero; median of ${ROUNDS} interleaved rounds; MB = 10^6 B`);
    line('import (JSON sourcePath, raw)', `${importMBps.toFixed(0).padStart(5)} MB/s (1 run)`);
    line('promote (POST → job succeeded)', `${promoteMBps.toFixed(0).padStart(5)} MB/s`);
    line('cp --sparse=always && sync -d', `${cpMBps.toFixed(0).padStart(5)} MB/s`);
    line('sha256 alone, one core, in memory', `${shaMBps.toFixed(0).padStart(5)} MB/s (ceiling for anything that hashes every byte)`);
    line('ratio promote / cp', `${ratio.toFixed(2)} (goal >= 0.80: ${ratio >= 0.8 ? 'met' : 'NOT met'})`);
    line('ratio sha256 ceiling / cp', `${(shaMBps / cpMBps).toFixed(2)} (best ratio any promotion that hashes every byte can reach here)`);
    line('promote / sha256 ceiling', `${(promoteMBps / shaMBps).toFixed(2)}`);
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

await main();
