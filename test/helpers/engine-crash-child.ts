// Child process of the engine crash test (test/integration/engine-crash.test.ts). Run with the project's
// node: `node_modules/.bin/node test/helpers/engine-crash-child.ts '<CrashChildConfig as JSON>'`.
//
// It opens the storage pools holding 20 clones of one replica (running recovery of whatever the last
// kill left), prints "ready", then keeps many random operations in flight across the clones until it is
// killed with SIGKILL (or, as a bound, until maxOps / maxMs, when it exits without closing anything).
//
// The log (config.logPath) is the test's only knowledge of what happened. Each line is written with
// fs.writeSync, so every line that is in the file was written before the kill:
//   READY                                         recovery done, operations start
//   B <op> <type> <clone> <lba> <n> <round> <ctr> operation <op> is about to start (type W write, U FUA
//                                                 write, Z write zeroes, D deallocate, F flush, R reset);
//                                                 written BEFORE the call, so an operation without a B
//                                                 line never ran
//   E <op>                                        operation <op> resolved; written only AFTER its promise
//                                                 resolved, so a B without E may or may not have happened
//   X <op|-> <message>                            an operation (or the engine in the background) failed
// A write of n blocks at lba carries the blocks (clone, lba+i, round, ctr) of engine-crash-blocks.ts.
import fs from 'node:fs';
import { Engine } from '../../src/engine/engine.ts';
import { BS, fillWriteBlock, prng, type CrashChildConfig } from './engine-crash-blocks.ts';

const config = JSON.parse(process.argv[2] ?? '') as CrashChildConfig;
const logFd = fs.openSync(config.logPath, 'a');
function log(line: string): void {
  fs.writeSync(logFd, line + '\n');
}

const random = prng(config.seed);
const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
const cloneBlocks = Math.floor(config.cloneBytes / BS);
const HOT_BLOCKS = 64;

const engine = new Engine({ replicaCacheBytes: 8 * 1024 * 1024 });
engine.onError = (err) => log(`X - engine: ${String((err as Error)?.message ?? err).replace(/\n/g, ' ')}`);

const replica = { id: 'crash-replica', path: config.replicaPath, sizeBytes: config.replicaBytes };
for (const pool of config.pools) {
  await engine.openPool(
    { id: pool.id, path: pool.path, journalBytes: pool.journalBytes },
    pool.clones.map((i) => ({ id: config.cloneIds[i], replica, sizeBytes: config.cloneBytes })),
  );
}
log('READY');
process.stdout.write('ready\n');

const clones = config.cloneIds.map((id) => engine.clone(id));
// Some clones flush often (mostly small, journalled flushes), some rarely (large flushes that sync the
// data file), so both durability paths and their mixtures are exercised.
const flushWeight = clones.map((_, i) => [0.04, 0.12, 0.25][i % 3]);

let nextOp = 1;
let counter = 0;
let inflight = 0;
let started = 0;
const deadline = performance.now() + config.maxMs;

function pickLba(n: number): number {
  if (random() < 0.5) return int(0, HOT_BLOCKS - n);
  return int(0, cloneBlocks - n);
}

/** Logs the B line of one random operation on clone `ci` and starts it. */
function run(ci: number, op: number): Promise<unknown> {
  const clone = clones[ci];
  const r = random();
  const fw = flushWeight[ci];
  if (r < 0.01) {
    log(`B ${op} R ${ci} 0 0 0 0`);
    return clone.reset();
  }
  if (r < 0.01 + fw) {
    log(`B ${op} F ${ci} 0 0 0 0`);
    return clone.flush();
  }
  if (r < 0.16 + fw) {
    const n = int(1, 16);
    const lba = pickLba(n);
    const dealloc = random() < 0.5;
    log(`B ${op} ${dealloc ? 'D' : 'Z'} ${ci} ${lba} ${n} 0 0`);
    return dealloc ? clone.deallocate(lba, n) : clone.writeZeroes(lba, n);
  }
  const n = int(1, 8);
  const lba = pickLba(n);
  const fua = random() < 0.12;
  const ctr = ++counter;
  const data = Buffer.allocUnsafe(n * BS);
  for (let i = 0; i < n; i++) fillWriteBlock(data.subarray(i * BS, (i + 1) * BS), ci, lba + i, config.round, ctr);
  // Sometimes hand the engine a gather list of several views instead of one buffer.
  const chunks = n > 1 && random() < 0.5 ? [data.subarray(0, BS), data.subarray(BS)] : data;
  log(`B ${op} ${fua ? 'U' : 'W'} ${ci} ${lba} ${n} ${config.round} ${ctr}`);
  return clone.write(lba, chunks, { fua });
}

function startOne(): void {
  const ci = int(0, clones.length - 1);
  const op = nextOp++;
  let promise: Promise<unknown>;
  try {
    promise = run(ci, op);
  } catch (err) {
    promise = Promise.reject(err);
  }
  inflight++;
  started++;
  promise
    .then(
      () => log(`E ${op}`),
      (err: unknown) => log(`X ${op} ${String((err as Error)?.message ?? err).replace(/\n/g, ' ')}`),
    )
    .finally(() => {
      inflight--;
      schedule();
    });
}

let scheduled = false;
// Starting new operations from setImmediate, not from the completion callbacks themselves: writes
// resolve in microtasks, and refilling from there would never let the event loop reach the I/O
// callbacks of flushes.
function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(pump);
}

function pump(): void {
  scheduled = false;
  const now = performance.now();
  if (started >= config.maxOps || now >= deadline) {
    // Bound reached (the test normally kills long before): leave like a crash, without closing.
    if (inflight === 0) process.exit(0);
    return;
  }
  // Start a few at a time so completions, flush callbacks and timers interleave with new work.
  for (let i = 0; i < 8 && inflight < config.inflight && started < config.maxOps; i++) startOne();
  if (inflight < config.inflight) schedule();
}

schedule();
