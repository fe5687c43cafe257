// Crash tests of the block store (design.md §4, invariants 1–3; issue 3 "A crash test").
//
// 1. Random kill -9: a child process (test/helpers/engine-crash-child.ts) runs random writes, FUA writes,
//    flushes, write zeroes, deallocates and resets on 20 clones of one replica with many operations in
//    flight, and is killed with SIGKILL at a random moment, round after round on the same pools. After
//    each kill this process opens the pools (recovery) and checks every block of every clone against a
//    model built from the child's log of what was started and what was acknowledged. The clones live
//    on two storage pools: one with a tiny journal, so journal switches and checkpoints happen every
//    few milliseconds and kills land in them, and one with a larger journal, so that recovery has long
//    runs of records to replay (payload redo, resets and data-synced flushes in one replay).
// 2. A damaged map checkpoint fails its clone only.
// 3. A journal whose tail is cut or torn mid-record loses exactly that record.
//
// Rounds and seed: ENGINE_CRASH_ROUNDS (default 30, the minimum), ENGINE_CRASH_SEED (default:
// random; printed, and part of every failure message), ENGINE_CRASH_DIR (see crashBaseDir in
// test/helpers/engine-crash-blocks.ts). A failing run keeps its directory (printed).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.ts';
import { CloneFailedError } from '../../src/engine/errors.ts';
import { decodeRecord, RECORD_TYPE_PAD, type DecodedRecord } from '../../src/engine/journal-record.ts';
import { JOURNAL_HEADER_BYTES } from '../../src/engine/pool-journal.ts';
import {
  BS,
  cloneIdFor,
  crashBaseDir,
  decodeBlock,
  fillWriteBlock,
  prng,
  replicaBlock,
  type CrashChildConfig,
} from '../helpers/engine-crash-blocks.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const NODE = path.join(ROOT, 'node_modules/.bin/node');
const CHILD = path.join(ROOT, 'test/helpers/engine-crash-child.ts');

const ROUNDS = Math.max(1, Number(process.env.ENGINE_CRASH_ROUNDS ?? 30));
const BASE_SEED = Number(process.env.ENGINE_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CLONES = 20;
const REPLICA_BLOCKS = 768; // 3 MiB
const CLONE_BLOCKS = 800; // 32 blocks past the replica's end read as zeroes until written
const JOURNAL_BYTES = 1024 * 1024; // small: journal switches and checkpoints happen all the time
const POOL_ID = 'crash-pool';
/** Clones 0-9 on pool a (1 MiB journal), 10-19 on pool b (6 MiB journal). */
const POOLS = [
  { id: 'crash-pool-a', dir: 'pool-a', journalBytes: JOURNAL_BYTES, clones: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] },
  { id: 'crash-pool-b', dir: 'pool-b', journalBytes: 6 * 1024 * 1024, clones: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19] },
];
const REPLICA_ID = 'crash-replica';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const sha256File = (p: string) => createHash('sha256').update(fs.readFileSync(p)).digest('hex');

const children = new Set<ChildProcess>();
const keepDirs: string[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  if (keepDirs.length > 0) console.error(`engine crash test: kept for inspection: ${keepDirs.join(', ')}`);
});

// ---- the model ----

type OpType = 'W' | 'U' | 'Z' | 'D' | 'F' | 'R';

interface LoggedOp {
  id: number;
  type: OpType;
  clone: number;
  lba: number;
  n: number;
  round: number;
  ctr: number;
  /** Line index of its B line: the op's effect happened after this. */
  s: number;
  /** Line index of its E line (Infinity if it never resolved): its effect happened before this. */
  e: number;
}

interface ParsedLog {
  ready: boolean;
  ops: LoggedOp[];
  errors: string[];
}

function parseLog(text: string): ParsedLog {
  const lines = text.split('\n');
  // The last piece is '' after a complete log, or a line cut by the kill: dropped. A cut B line belongs
  // to an operation that was never called; a cut E line makes a completed operation look in flight,
  // which the model only treats more leniently.
  lines.pop();
  const byId = new Map<number, LoggedOp>();
  const errors: string[] = [];
  let ready = false;
  for (let i = 0; i < lines.length; i++) {
    const f = lines[i].split(' ');
    if (f[0] === 'READY') ready = true;
    else if (f[0] === 'B') {
      const op: LoggedOp = {
        id: Number(f[1]),
        type: f[2] as OpType,
        clone: Number(f[3]),
        lba: Number(f[4]),
        n: Number(f[5]),
        round: Number(f[6]),
        ctr: Number(f[7]),
        s: i,
        e: Infinity,
      };
      byId.set(op.id, op);
    } else if (f[0] === 'E') {
      const op = byId.get(Number(f[1]));
      if (!op) errors.push(`line ${i}: E of unknown op: ${lines[i]}`);
      else op.e = i;
    } else if (f[0] === 'X') errors.push(`line ${i}: ${lines[i]}`);
    else errors.push(`line ${i}: unparsable: ${lines[i]}`);
  }
  return { ready, ops: [...byId.values()], errors };
}

/** The content an LBA shows after an op: a write's own key, zeroes, or the replica (zeroes past its end). */
function valueOf(op: LoggedOp, lba: number): string {
  if (op.type === 'W' || op.type === 'U') return `W:${op.round}:${op.ctr}`;
  if (op.type === 'Z' || op.type === 'D') return 'Z';
  return lba < REPLICA_BLOCKS ? 'R' : 'Z';
}

const initialValue = (lba: number) => (lba < REPLICA_BLOCKS ? 'R' : 'Z');

/**
 * For each clone and LBA, the contents a read may legally return after the crash.
 *
 * Every op's effect lies inside [s, e] (B line .. E line). An op is known durable when
 *  - it is a FUA write that resolved, or a reset that resolved (reset is durable when it returns), or
 *  - it is a write / write zeroes / deallocate that resolved before a flush of its clone was STARTED,
 *    and that flush resolved (an op completing while a flush runs may or may not be covered by it).
 * A durable op D supersedes every op E with E.e < D.s (E surely took effect before D). So the legal
 * contents are: the value before the round (`base`, from the last recovery) if no durable op touched
 * the LBA, plus the value of every op (durable or not, resolved or still in flight) that no durable op
 * surely followed. This is "every flushed or FUA write reads back unless a later op may have changed
 * it", and it leaves room for every order of overlapping ops.
 */
function acceptable(ops: LoggedOp[], base: string[][]): { sets: Array<Array<Set<string>>>; durable: Set<LoggedOp> } {
  const durable = new Set<LoggedOp>();
  const sets: Array<Array<Set<string>>> = [];
  for (let c = 0; c < CLONES; c++) {
    const mine = ops.filter((o) => o.clone === c);
    let lastFlushStart = -1;
    for (const o of mine) if (o.type === 'F' && o.e !== Infinity) lastFlushStart = Math.max(lastFlushStart, o.s);
    const perLba: LoggedOp[][] = Array.from({ length: CLONE_BLOCKS }, () => []);
    const maxDurableStart = new Array<number>(CLONE_BLOCKS).fill(-1);
    const resets: LoggedOp[] = [];
    let resetDurableStart = -1;
    for (const o of mine) {
      if (o.type === 'F') continue;
      const isDurable =
        o.e !== Infinity && (o.type === 'U' || o.type === 'R' || o.e < lastFlushStart);
      if (isDurable) durable.add(o);
      if (o.type === 'R') {
        resets.push(o);
        if (isDurable) resetDurableStart = Math.max(resetDurableStart, o.s);
        continue;
      }
      for (let lba = o.lba; lba < o.lba + o.n; lba++) {
        perLba[lba].push(o);
        if (isDurable) maxDurableStart[lba] = Math.max(maxDurableStart[lba], o.s);
      }
    }
    const row: Array<Set<string>> = [];
    for (let lba = 0; lba < CLONE_BLOCKS; lba++) {
      const mds = Math.max(maxDurableStart[lba], resetDurableStart);
      const set = new Set<string>();
      if (mds < 0) set.add(base[c][lba]);
      for (const o of perLba[lba]) if (o.e > mds) set.add(valueOf(o, lba));
      for (const o of resets) if (o.e > mds) set.add(valueOf(o, lba));
      row.push(set);
    }
    sets.push(row);
  }
  return { sets, durable };
}

/** Reads every block of every clone; returns the observed value keys and the problems found. */
async function readAll(engine: Engine): Promise<{ observed: string[][]; problems: Array<{ clone: number; lba: number; what: string; key: string }> }> {
  const observed: string[][] = [];
  const problems: Array<{ clone: number; lba: number; what: string; key: string }> = [];
  for (let c = 0; c < CLONES; c++) {
    const clone = engine.clone(cloneIdFor(c));
    const row: string[] = [];
    for (let start = 0; start < CLONE_BLOCKS; start += 100) {
      const n = Math.min(100, CLONE_BLOCKS - start);
      const data = Buffer.concat(await clone.read(start, n));
      for (let i = 0; i < n; i++) {
        const lba = start + i;
        const d = decodeBlock(data.subarray(i * BS, (i + 1) * BS));
        let key: string;
        if (d.kind === 'zero') key = 'Z';
        else if (d.kind === 'replica') {
          key = 'R';
          if (d.lba !== lba) problems.push({ clone: c, lba, what: `shows the replica's block of LBA ${d.lba}`, key });
          if (lba >= REPLICA_BLOCKS) problems.push({ clone: c, lba, what: 'shows replica data past the replica end', key });
        } else if (d.kind === 'write') {
          key = `W:${d.round}:${d.counter}`;
          if (d.clone !== c) problems.push({ clone: c, lba, what: `shows clone ${d.clone}'s data (its LBA ${d.lba})`, key });
          else if (d.lba !== lba) problems.push({ clone: c, lba, what: `shows this clone's data of LBA ${d.lba}`, key });
        } else {
          key = `garbage(${d.why})`;
          problems.push({ clone: c, lba, what: `shows unrecognisable data: ${d.why}`, key });
        }
        row.push(key);
      }
    }
    observed.push(row);
  }
  return { observed, problems };
}

function describeOp(o: LoggedOp, durable: Set<LoggedOp>): string {
  const range = o.type === 'F' || o.type === 'R' ? '' : ` lba ${o.lba}+${o.n}`;
  const val = o.type === 'W' || o.type === 'U' ? ` W:${o.round}:${o.ctr}` : '';
  return `  op ${o.id} ${o.type}${range}${val} lines ${o.s}..${o.e === Infinity ? 'in flight' : o.e}${durable.has(o) ? ' durable' : ''}`;
}

// ---- helpers ----

function writeReplica(p: string): void {
  const img = Buffer.alloc(REPLICA_BLOCKS * BS);
  for (let lba = 0; lba < REPLICA_BLOCKS; lba++) replicaBlock(lba).copy(img, lba * BS);
  fs.writeFileSync(p, img);
  fs.chmodSync(p, 0o444);
}

function cloneSpecs(replicaPath: string, ids: string[], blocks = CLONE_BLOCKS) {
  const replica = { id: REPLICA_ID, path: replicaPath, sizeBytes: REPLICA_BLOCKS * BS };
  return ids.map((id) => ({ id, replica, sizeBytes: blocks * BS }));
}

interface ChildRun {
  child: ChildProcess;
  output: () => string;
  ready: Promise<boolean>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startChild(config: CrashChildConfig): ChildRun {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VITEST') && k !== 'NODE_OPTIONS') env[k] = v;
  const child = spawn(NODE, [CHILD, JSON.stringify(config)], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let resolveReady: (v: boolean) => void = () => {};
  const ready = new Promise<boolean>((r) => (resolveReady = r));
  child.stdout!.on('data', (b) => {
    out += b;
    if (out.includes('ready\n')) resolveReady(true);
  });
  child.stderr!.on('data', (b) => (out += b));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolveReady(false);
      resolve({ code, signal });
    }),
  );
  return { child, output: () => out, ready, exited };
}

// ---- 1. random kill -9 ----

describe('engine crash recovery (kill -9 of a process doing random I/O on 20 clones)', () => {
  it(`keeps every acknowledged write and never shows foreign data, ${ROUNDS} rounds`, { timeout: 60_000 + ROUNDS * 15_000 }, async () => {
    const dir = await mkdtemp(path.join(crashBaseDir('ENGINE_CRASH_DIR'), 'thicket-engine-crash-'));
    let ok = false;
    try {
      const replicaPath = path.join(dir, 'replica.img');
      writeReplica(replicaPath);
      const replicaSha = sha256File(replicaPath);
      const ids = Array.from({ length: CLONES }, (_, i) => cloneIdFor(i));
      const pools = POOLS.map((p) => ({ id: p.id, path: path.join(dir, p.dir), journalBytes: p.journalBytes, clones: p.clones }));
      const openPools = async (engine: Engine) => {
        const failed: Array<{ id: string; reason: string }> = [];
        let replayed = 0;
        for (const p of pools) {
          const report = await engine.openPool(
            { id: p.id, path: p.path, journalBytes: p.journalBytes },
            cloneSpecs(replicaPath, p.clones.map((i) => ids[i])),
          );
          failed.push(...report.failed);
          replayed += report.replayedRecords;
        }
        return { failed, replayedRecords: replayed };
      };
      console.log(`engine crash test: ${ROUNDS} rounds, ENGINE_CRASH_SEED=${BASE_SEED}, dir ${dir}`);

      let base: string[][] = Array.from({ length: CLONES }, () => Array.from({ length: CLONE_BLOCKS }, (_, lba) => initialValue(lba)));
      const totals = { ops: 0, completed: 0, durable: 0, replayed: 0, earlyKills: 0 };
      const ms = { startup: 0, running: 0, recovery: 0, checking: 0 };
      let t0 = performance.now();

      for (let round = 1; round <= ROUNDS; round++) {
        const seed = (BASE_SEED + round * 7919) >>> 0;
        const random = prng(seed ^ 0x5bd1e995);
        const where = `round ${round}, ENGINE_CRASH_SEED=${BASE_SEED} (round seed ${seed}), dir ${dir}`;
        const logPath = path.join(dir, `round-${round}.log`);
        const config: CrashChildConfig = {
          pools,
          replicaPath,
          replicaBytes: REPLICA_BLOCKS * BS,
          cloneBytes: CLONE_BLOCKS * BS,
          cloneIds: ids,
          seed,
          round,
          logPath,
          inflight: 16 + Math.floor(random() * 64),
          maxOps: 2_000_000,
          maxMs: 30_000,
        };
        t0 = performance.now();
        const run = startChild(config);
        // Mostly kill while operations run; sometimes during start-up and recovery of the last crash.
        const early = random() < 0.12;
        if (early) {
          totals.earlyKills++;
          await sleep(20 + random() * 400);
        } else {
          const ready = await Promise.race([run.ready, sleep(30_000).then(() => false)]);
          if (!ready) {
            run.child.kill('SIGKILL');
            await run.exited;
            throw new Error(`child never became ready (${where}):\n${run.output()}`);
          }
          ms.startup += performance.now() - t0;
          t0 = performance.now();
          await sleep(200 + random() * 1300);
        }
        run.child.kill('SIGKILL');
        const exit = await run.exited;
        ms.running += performance.now() - t0;
        t0 = performance.now();
        if (exit.signal !== 'SIGKILL' && exit.code !== 0) {
          throw new Error(`child failed on its own (code ${exit.code}, ${where}):\n${run.output()}`);
        }

        const log = parseLog(fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : '');
        if (log.errors.length > 0) throw new Error(`child reported errors (${where}):\n${log.errors.slice(0, 20).join('\n')}`);
        if (!early && !log.ready) throw new Error(`child log has no READY (${where})`);

        const { sets, durable } = acceptable(log.ops, base);
        totals.ops += log.ops.length;
        totals.completed += log.ops.filter((o) => o.e !== Infinity).length;
        totals.durable += durable.size;

        const engine = new Engine({ replicaCacheBytes: 8 * 1024 * 1024 });
        try {
          const report = await openPools(engine);
          ms.recovery += performance.now() - t0;
          t0 = performance.now();
          totals.replayed += report.replayedRecords;
          if (report.failed.length > 0) throw new Error(`recovery failed clones (${where}): ${JSON.stringify(report.failed)}`);
          const { observed, problems } = await readAll(engine);
          for (let c = 0; c < CLONES; c++) {
            for (let lba = 0; lba < CLONE_BLOCKS; lba++) {
              if (!sets[c][lba].has(observed[c][lba])) problems.push({ clone: c, lba, what: 'is not a legal outcome', key: observed[c][lba] });
            }
          }
          if (problems.length > 0) {
            const lines = problems.slice(0, 12).map((p) => {
              const history = log.ops
                .filter((o) => o.clone === p.clone && (o.type === 'R' || o.type === 'F' || (p.lba >= o.lba && p.lba < o.lba + o.n)))
                .slice(-25)
                .map((o) => describeOp(o, durable));
              return [
                `clone ${p.clone} LBA ${p.lba} ${p.what}: read ${p.key}; legal: {${[...sets[p.clone][p.lba]].join(', ')}}; before the round: ${base[p.clone][p.lba]}`,
                ...history,
              ].join('\n');
            });
            throw new Error(`${problems.length} bad block(s) after the crash (${where}, log ${logPath}):\n${lines.join('\n')}`);
          }
          if (sha256File(replicaPath) !== replicaSha) throw new Error(`the replica file changed (${where})`);
          // Recovery checkpointed what it rebuilt, so that is the durable truth the next round starts from.
          base = observed;
        } finally {
          await engine.close();
        }
        ms.checking += performance.now() - t0;
        fs.rmSync(logPath, { force: true });
      }

      // A clean close and reopen changes nothing.
      const engine = new Engine({ replicaCacheBytes: 8 * 1024 * 1024 });
      try {
        const report = await openPools(engine);
        expect(report.failed).toEqual([]);
        const { observed, problems } = await readAll(engine);
        expect(problems).toEqual([]);
        expect(observed).toEqual(base);
      } finally {
        await engine.close();
      }
      expect(sha256File(replicaPath)).toBe(replicaSha);
      console.log(
        `engine crash test: ${ROUNDS} rounds, ${totals.ops} ops logged, ${totals.completed} acknowledged, ` +
          `${totals.durable} known durable, ${totals.replayed} journal records replayed, ${totals.earlyKills} kills during start-up; ` +
          `seconds in child start-up ${(ms.startup / 1000).toFixed(1)}, running ${(ms.running / 1000).toFixed(1)}, ` +
          `recovery ${(ms.recovery / 1000).toFixed(1)}, checks and close ${(ms.checking / 1000).toFixed(1)}`,
      );
      ok = true;
    } finally {
      if (ok) await rm(dir, { recursive: true, force: true });
      else keepDirs.push(dir);
    }
  });
});

// ---- 2 and 3: damaged files ----

describe('engine recovery from damaged files', () => {
  let dir = '';
  let replicaPath = '';
  let engine: Engine | undefined;
  const ids = [0, 1, 2].map(cloneIdFor);

  async function setup(): Promise<void> {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-engine-damage-'));
    replicaPath = path.join(dir, 'replica.img');
    writeReplica(replicaPath);
  }

  async function openEngine() {
    engine = new Engine({ replicaCacheBytes: 1024 * 1024, journalBytes: JOURNAL_BYTES });
    return engine.openPool({ id: POOL_ID, path: path.join(dir, 'pool') }, cloneSpecs(replicaPath, ids));
  }

  async function closeEngine(): Promise<void> {
    await engine?.close();
    engine = undefined;
  }

  afterEach(async () => {
    await engine?.close().catch(() => {});
    engine = undefined;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function block(clone: number, lba: number, ctr: number): Buffer {
    const b = Buffer.alloc(BS);
    fillWriteBlock(b, clone, lba, 0, ctr);
    return b;
  }

  async function readBlock(clone: number, lba: number): Promise<Buffer> {
    return Buffer.concat(await engine!.clone(ids[clone]).read(lba, 1));
  }

  it('marks a clone whose map checkpoint is damaged failed and keeps serving the others', async () => {
    await setup();
    await openEngine();
    for (let c = 0; c < 3; c++) {
      const clone = engine!.clone(ids[c]);
      for (let lba = 0; lba < 40; lba += 4) await clone.write(lba, block(c, lba, 1));
      await clone.flush();
    }
    await closeEngine();
    // Recovery replays the journal and checkpoints every clone it touched: now each has a map file.
    expect((await openEngine()).failed).toEqual([]);
    await closeEngine();
    const mapPath = path.join(dir, 'pool', 'clones', ids[1], 'map');
    const map = fs.readFileSync(mapPath);
    expect(map.length).toBeGreaterThan(64);
    for (const off of [map.length - 20, Math.floor(map.length / 2), 60]) map[off] ^= 0x5a;
    fs.writeFileSync(mapPath, map);

    const report = await openEngine();
    expect(report.failed.map((f) => f.id)).toEqual([ids[1]]);
    expect(report.failed[0].reason).toMatch(/checksum|damaged|header|length/);
    expect(engine!.info(ids[1]).failed).toBeTruthy();
    await expect(engine!.clone(ids[1]).read(0, 1)).rejects.toBeInstanceOf(CloneFailedError);
    await expect(engine!.clone(ids[1]).write(0, block(1, 0, 2))).rejects.toBeInstanceOf(CloneFailedError);
    // The other clones read their data and keep working.
    for (const c of [0, 2]) {
      for (let lba = 0; lba < 40; lba++) {
        const want = lba % 4 === 0 ? block(c, lba, 1) : replicaBlock(lba);
        expect((await readBlock(c, lba)).equals(want)).toBe(true);
      }
      await engine!.clone(ids[c]).write(1, block(c, 1, 3), { fua: true });
      expect((await readBlock(c, 1)).equals(block(c, 1, 3))).toBe(true);
    }
    await closeEngine();
    // Still failed on the next start (never silently served), the others still whole.
    const again = await openEngine();
    expect(again.failed.map((f) => f.id)).toEqual([ids[1]]);
    for (const c of [0, 2]) {
      expect((await readBlock(c, 1)).equals(block(c, 1, 3))).toBe(true);
      expect((await readBlock(c, 4)).equals(block(c, 4, 1))).toBe(true);
    }

    // A reset is the repair: back to the replica, writable, and whole after the next start too.
    await engine!.resetClone(ids[1]);
    expect(engine!.info(ids[1]).failed).toBeNull();
    expect((await readBlock(1, 4)).equals(replicaBlock(4))).toBe(true);
    await engine!.clone(ids[1]).write(8, block(1, 8, 4), { fua: true });
    await closeEngine();
    expect((await openEngine()).failed).toEqual([]);
    expect((await readBlock(1, 8)).equals(block(1, 8, 4))).toBe(true);
    expect((await readBlock(1, 4)).equals(replicaBlock(4))).toBe(true);
  });

  /** Records of the journal file holding the current epoch's records, with their offsets. */
  function journalRecords(): { file: string; records: Array<DecodedRecord & { offset: number }> } {
    let best: { file: string; epoch: number; records: Array<DecodedRecord & { offset: number }> } | undefined;
    for (const name of ['0.jnl', '1.jnl']) {
      const file = path.join(dir, 'pool', 'journal', name);
      const buf = fs.readFileSync(file);
      if (buf.toString('latin1', 0, 8) !== 'THKJNL01') continue;
      const epoch = buf.readDoubleLE(8);
      const records: Array<DecodedRecord & { offset: number }> = [];
      let off = JOURNAL_HEADER_BYTES;
      for (let i = 0; i < 100_000 && off < buf.length; i++) {
        const rec = decodeRecord(buf, off, epoch);
        if (!rec) break;
        if (rec.type !== RECORD_TYPE_PAD) records.push({ ...rec, offset: off });
        off += rec.length;
      }
      if (!best || epoch > best.epoch) best = { file, epoch, records };
    }
    if (!best) throw new Error('no journal file with a header');
    return best;
  }

  /** Ten FUA writes, one journal record each, to fresh blocks of clone 0; then a clean close (no checkpoint). */
  async function tenRecords(): Promise<void> {
    await setup();
    await openEngine();
    for (let i = 0; i < 10; i++) await engine!.clone(ids[0]).write(100 + i, block(0, 100 + i, 1), { fua: true });
    await closeEngine();
  }

  async function expectOnlyLastLost(report: { replayedRecords: number; failed: unknown[] }): Promise<void> {
    expect(report.failed).toEqual([]);
    expect(report.replayedRecords).toBe(9);
    for (let i = 0; i < 9; i++) expect((await readBlock(0, 100 + i)).equals(block(0, 100 + i, 1))).toBe(true);
    // The lost record mapped a fresh block: without it the LBA still reads the replica.
    expect((await readBlock(0, 109)).equals(replicaBlock(109))).toBe(true);
    // The pool works on: a new write survives a restart.
    await engine!.clone(ids[0]).write(109, block(0, 109, 2), { fua: true });
    await closeEngine();
    expect((await openEngine()).failed).toEqual([]);
    expect((await readBlock(0, 109)).equals(block(0, 109, 2))).toBe(true);
    expect((await readBlock(0, 100)).equals(block(0, 100, 1))).toBe(true);
  }

  it('discards only the last record when the journal file is cut in the middle of it', async () => {
    await tenRecords();
    const { file, records } = journalRecords();
    expect(records.length).toBe(10);
    const last = records[records.length - 1];
    fs.truncateSync(file, last.offset + Math.floor(last.length / 2));
    await expectOnlyLastLost(await openEngine());
  });

  it('discards only the last record when its second half never reached the disk (torn write)', async () => {
    await tenRecords();
    const { file, records } = journalRecords();
    expect(records.length).toBe(10);
    const last = records[records.length - 1];
    const fd = fs.openSync(file, 'r+');
    try {
      const half = Math.floor(last.length / 2);
      fs.writeSync(fd, randomBytes(last.length - half), 0, last.length - half, last.offset + half);
    } finally {
      fs.closeSync(fd);
    }
    await expectOnlyLastLost(await openEngine());
  });
});
