// Block contents for the engine crash test (test/integration/engine-crash.test.ts and its child,
// test/helpers/engine-crash-child.ts). Every 4 KiB block the test writes, and every block of the test
// replica, is one 32-byte unit repeated 128 times; the unit names the clone, the LBA and the write
// (round and counter) it belongs to, so a block that lands on the wrong clone or LBA, or a block mixed
// from two writes, is recognised on read-back.

import fs from 'node:fs';
import os from 'node:os';

export const BS = 4096;
const UNIT = 32;
const MAGIC_WRITE = 0x4b575448; // 'THWK' little-endian
const MAGIC_REPLICA = 0x4c504552; // 'REPL' little-endian
export const REPLICA_CLONE = 0xffffffff;
const TAIL = Buffer.from('thicket!', 'latin1');

function check(magic: number, clone: number, lba: number, round: number, counter: number): number {
  let h = Math.imul(magic ^ 0x9e3779b9, 0x85ebca6b);
  for (const v of [clone, lba, round, counter]) h = Math.imul(h ^ v, 0xc2b2ae35) ^ (h >>> 15);
  return h >>> 0;
}

function unit(magic: number, clone: number, lba: number, round: number, counter: number): Buffer {
  const u = Buffer.alloc(UNIT);
  u.writeUInt32LE(magic, 0);
  u.writeUInt32LE(clone >>> 0, 4);
  u.writeUInt32LE(lba, 8);
  u.writeUInt32LE(round, 12);
  u.writeUInt32LE(counter, 16);
  u.writeUInt32LE(check(magic, clone >>> 0, lba, round, counter), 20);
  TAIL.copy(u, 24);
  return u;
}

/** Fills `out` (one block) with the content of write (round, counter) of `clone` at `lba`. */
export function fillWriteBlock(out: Buffer, clone: number, lba: number, round: number, counter: number): void {
  out.fill(unit(MAGIC_WRITE, clone, lba, round, counter), 0, BS);
}

/** The replica's block at `lba`. */
export function replicaBlock(lba: number): Buffer {
  return Buffer.alloc(BS, unit(MAGIC_REPLICA, REPLICA_CLONE, lba, 0, 0));
}

export type Decoded =
  | { kind: 'zero' }
  | { kind: 'replica'; lba: number }
  | { kind: 'write'; clone: number; lba: number; round: number; counter: number }
  | { kind: 'garbage'; why: string };

const ZERO_BLOCK = Buffer.alloc(BS);

/** Identifies a block read back: zeroes, a replica block, a test write, or something else. */
export function decodeBlock(b: Buffer): Decoded {
  if (b.length !== BS) return { kind: 'garbage', why: `length ${b.length}` };
  if (b.equals(ZERO_BLOCK)) return { kind: 'zero' };
  const magic = b.readUInt32LE(0);
  const clone = b.readUInt32LE(4);
  const lba = b.readUInt32LE(8);
  const round = b.readUInt32LE(12);
  const counter = b.readUInt32LE(16);
  if (magic !== MAGIC_WRITE && magic !== MAGIC_REPLICA) return { kind: 'garbage', why: `magic ${magic.toString(16)}` };
  if (b.readUInt32LE(20) !== check(magic, clone, lba, round, counter)) return { kind: 'garbage', why: 'unit checksum' };
  // The block repeats its first unit exactly when every byte equals the one UNIT bytes before it.
  if (!b.subarray(UNIT).equals(b.subarray(0, BS - UNIT))) return { kind: 'garbage', why: 'mixed block (not one unit repeated)' };
  if (magic === MAGIC_REPLICA) return { kind: 'replica', lba };
  return { kind: 'write', clone, lba, round, counter };
}

/** Small, fast, seedable PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function cloneIdFor(index: number): string {
  return `00000000-0000-4000-8000-${String(index + 1).padStart(12, '0')}`;
}

/** What the child is told (JSON in argv[2]). */
export interface CrashChildConfig {
  /** Storage pools and the clones (indexes into cloneIds) each one holds. */
  pools: Array<{ id: string; path: string; journalBytes: number; clones: number[] }>;
  replicaPath: string;
  replicaBytes: number;
  cloneBytes: number;
  cloneIds: string[];
  seed: number;
  round: number;
  logPath: string;
  /** Operations kept in flight at once. */
  inflight: number;
  /** The child stops starting operations after this many, or after maxMs, and exits without closing. */
  maxOps: number;
  maxMs: number;
}

/**
 * Where a kill -9 crash test keeps its data: the directory named by `envVar`, else /dev/shm when
 * writable, else the temp directory. A RAM file system changes nothing about what a process kill may lose
 * (the page cache outlives the process either way; power cuts are out of reach of any process-level
 * test), but it makes fdatasync cheap: more operations per round, a shorter round, and no burst of
 * writeback slowing the test files that run beside it.
 */
export function crashBaseDir(envVar: string): string {
  const configured = process.env[envVar];
  if (configured) return configured;
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK);
    return '/dev/shm';
  } catch {
    return os.tmpdir();
  }
}
