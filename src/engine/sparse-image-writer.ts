// Writes a raw image into a file while hashing it, skipping all-zero 4 KiB blocks so the file stays sparse.
// The sha256 always covers every byte, including skipped zeroes and the padding up to a 4096 multiple.
//
// Also home of the two pieces the fast copy path (sparse-copy.ts) is built from:
// - forEachDataRun: finds the runs of non-zero blocks in a chunk without allocating per block;
// - Sha256Worker: sha256 of a stream of chunks computed on a worker thread, reading the chunks from a
//   SharedArrayBuffer ring, so hashing (the bottleneck: one core does ~0.35-0.4 GB/s) runs in parallel with
//   reading, zero-scanning and writing, and never blocks the event loop.
import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { BLOCK_SIZE_BYTES } from './block-size.ts';
import { ftruncate, pwriteAll } from './fs-callbacks.ts';

export const STAGING_BYTES = 4 * 1024 * 1024;
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE_BYTES);
const ZERO_STAGING = Buffer.alloc(STAGING_BYTES);

export interface SparseImageResult {
  /** Bytes received before padding. */
  logicalBytes: number;
  /** logicalBytes rounded up to 4096. */
  sizeBytes: number;
  /** Bytes actually written to the file (non-zero blocks). */
  writtenBytes: number;
  sha256: string;
}

/** True if chunk[start, end) is all zero bytes (end - start <= 4096). */
function isZeroBlock(chunk: Uint8Array, start: number, end: number): boolean {
  // Most data blocks have a non-zero byte at one of these places: rejects them without a native call.
  if (chunk[start] !== 0 || chunk[end - 1] !== 0 || chunk[(start + end) >>> 1] !== 0) return false;
  return ZERO_BLOCK.compare(chunk, start, end, 0, end - start) === 0;
}

/** True if chunk[start, end) is all zero bytes, for any length. */
function isZeroRange(chunk: Uint8Array, start: number, end: number): boolean {
  for (let off = start; off < end; off += ZERO_STAGING.length) {
    const n = Math.min(ZERO_STAGING.length, end - off);
    if (ZERO_STAGING.compare(chunk, off, off + n, 0, n) !== 0) return false;
  }
  return true;
}

/**
 * Calls `onRun(start, end)` for every maximal run of 4 KiB blocks of `chunk[0, length)` that are not all
 * zero (the last block may be shorter). Returns the number of bytes in those runs.
 */
export function forEachDataRun(chunk: Uint8Array, length: number, onRun: (start: number, end: number) => void): number {
  if (length === 0) return 0;
  // Whole chunks of zeroes are common (free space): one memcmp, which stops at the first non-zero byte.
  if (chunk[0] === 0 && isZeroRange(chunk, 0, length)) return 0;
  let total = 0;
  let runStart = -1;
  for (let off = 0; off < length; off += BLOCK_SIZE_BYTES) {
    const end = Math.min(off + BLOCK_SIZE_BYTES, length);
    if (!isZeroBlock(chunk, off, end)) {
      if (runStart < 0) runStart = off;
    } else if (runStart >= 0) {
      onRun(runStart, off);
      total += off - runStart;
      runStart = -1;
    }
  }
  if (runStart >= 0) {
    onRun(runStart, length);
    total += length - runStart;
  }
  return total;
}

/** Settles once every promise has settled; rejects with the first rejection, if any. */
async function allSettledOrThrow(promises: Promise<unknown>[]): Promise<void> {
  for (const result of await Promise.allSettled(promises)) if (result.status === 'rejected') throw result.reason;
}

/**
 * Starts the pwrites of the non-zero runs of `chunk[0, length)` (which sits at `position` in the file).
 * Returns the bytes they write and a promise that settles once all of them have settled.
 */
export function writeDataRuns(fd: number, chunk: Buffer, length: number, position: number): { bytes: number; done: Promise<void> } {
  const writes: Promise<void>[] = [];
  const bytes = forEachDataRun(chunk, length, (start, end) => writes.push(pwriteAll(fd, chunk.subarray(start, end), position + start)));
  return { bytes, done: writes.length === 0 ? Promise.resolve() : writes.length === 1 ? writes[0] : allSettledOrThrow(writes) };
}

/**
 * Hashes `chunk` (which sits at `position` in the image) and writes its non-zero 4 KiB runs to `fd`.
 * The chunk length must be a multiple of 4096 except for the last one. Returns the bytes written.
 */
export async function writeSparseChunk(fd: number, hash: Hash, chunk: Buffer, position: number): Promise<number> {
  hash.update(chunk);
  const { bytes, done } = writeDataRuns(fd, chunk, chunk.length, position);
  await done; // settles only once every write has: the caller may close the fd as soon as we return
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------
// sha256 on a worker thread over a SharedArrayBuffer ring of slots.

// Int32 control words, then one length per slot.
const CTL_SUBMITTED = 0; // chunks submitted by the main thread (a count, not a slot)
const CTL_HASHED = 1; // chunks the worker has hashed
const CTL_FINISH = 2; // 1: no more chunks, post the digest
const CTL_BELL = 3; // bumped on every submit/finish; the worker sleeps on it
const CTL_WORDS = 4;

// Plain JavaScript, evaluated as a CommonJS worker: no file to resolve, works under any loader.
const WORKER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { control, data, slotBytes, slots, idleTimeoutMs } = workerData;
const ctl = new Int32Array(control);
const hash = createHash('sha256');
let seq = 0;
for (;;) {
  const bell = Atomics.load(ctl, ${CTL_BELL});
  const submitted = Atomics.load(ctl, ${CTL_SUBMITTED});
  if (seq < submitted) {
    const slot = seq % slots;
    hash.update(new Uint8Array(data, slot * slotBytes, ctl[${CTL_WORDS} + slot]));
    seq++;
    Atomics.store(ctl, ${CTL_HASHED}, seq);
    Atomics.notify(ctl, ${CTL_HASHED});
    continue;
  }
  if (Atomics.load(ctl, ${CTL_FINISH}) === 1) {
    parentPort.postMessage({ sha256: hash.digest('hex'), chunks: seq });
    break;
  }
  // Abandoned by the main thread (it terminates us normally): do not linger.
  if (Atomics.wait(ctl, ${CTL_BELL}, bell, idleTimeoutMs) === 'timed-out' && Atomics.load(ctl, ${CTL_BELL}) === bell) break;
}
`;

export interface Sha256WorkerOptions {
  /** Bytes per slot, a multiple of 4096. */
  slotBytes: number;
  slots: number;
  /** The worker exits by itself after this long without a submit (default 60 s). */
  idleTimeoutMs?: number;
}

/**
 * A sha256 computed on a worker thread. The caller owns a ring of `slots` buffers (`slot(i)`, backed by shared
 * memory): it fills slot `seq % slots`, calls `submit(seq, length)` in order, and may reuse the slot once
 * `waitHashed(seq + 1)` resolves. `digest()` after the last submit; `close()` always (idempotent).
 */
export class Sha256Worker {
  readonly slotBytes: number;
  readonly slots: number;
  #ctl: Int32Array;
  #data: SharedArrayBuffer;
  #views: Buffer[];
  #worker: Worker;
  #submitted = 0;
  #failure: Promise<never>;
  #failed: Error | undefined;
  #closed = false;

  constructor(options: Sha256WorkerOptions) {
    if (options.slotBytes <= 0 || options.slotBytes % BLOCK_SIZE_BYTES !== 0) throw new RangeError('slotBytes must be a positive multiple of 4096');
    if (!Number.isInteger(options.slots) || options.slots < 1) throw new RangeError('slots must be a positive integer');
    this.slotBytes = options.slotBytes;
    this.slots = options.slots;
    const control = new SharedArrayBuffer((CTL_WORDS + options.slots) * 4);
    this.#ctl = new Int32Array(control);
    this.#data = new SharedArrayBuffer(options.slotBytes * options.slots);
    this.#views = Array.from({ length: options.slots }, (_, i) => Buffer.from(this.#data, i * options.slotBytes, options.slotBytes));
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { control, data: this.#data, slotBytes: options.slotBytes, slots: options.slots, idleTimeoutMs: options.idleTimeoutMs ?? 60_000 },
      stdout: false,
      stderr: false,
    });
    this.#failure = new Promise<never>((_, reject) => {
      const fail = (err: Error) => {
        this.#failed ??= err;
        reject(this.#failed);
      };
      this.#worker.once('error', fail);
      this.#worker.once('exit', (code) => fail(new Error(`sha256 worker exited (code ${code})`)));
    });
    this.#failure.catch(() => {}); // observed through the methods below
  }

  /** The shared buffer of slot `index` (slotBytes long). */
  slot(index: number): Buffer {
    return this.#views[index];
  }

  get submitted(): number {
    return this.#submitted;
  }

  get hashed(): number {
    return Atomics.load(this.#ctl, CTL_HASHED);
  }

  /** Hands slot `seq % slots`, holding `length` bytes, to the worker. Chunks must be submitted in order. */
  submit(seq: number, length: number): void {
    if (this.#closed) throw new Error('Sha256Worker is closed');
    if (this.#failed) throw this.#failed;
    if (seq !== this.#submitted) throw new Error(`chunk ${seq} submitted out of order (expected ${this.#submitted})`);
    if (length < 0 || length > this.slotBytes) throw new RangeError(`chunk length ${length} out of range`);
    this.#ctl[CTL_WORDS + (seq % this.slots)] = length;
    this.#submitted = seq + 1;
    Atomics.store(this.#ctl, CTL_SUBMITTED, this.#submitted);
    Atomics.add(this.#ctl, CTL_BELL, 1);
    Atomics.notify(this.#ctl, CTL_BELL);
  }

  /** Resolves once at least `count` chunks have been hashed (their slots may be reused). */
  async waitHashed(count: number): Promise<void> {
    for (let spins = 0; ; spins++) {
      if (this.#failed) throw this.#failed;
      const hashed = Atomics.load(this.#ctl, CTL_HASHED);
      if (hashed >= count) return;
      if (this.#closed) throw new Error('Sha256Worker is closed');
      const wait = Atomics.waitAsync(this.#ctl, CTL_HASHED, hashed);
      if (wait.async) await Promise.race([wait.value, this.#failure]);
    }
  }

  /** Ends the stream and returns the hex digest of everything submitted. */
  async digest(): Promise<string> {
    if (this.#failed) throw this.#failed;
    const message = new Promise<{ sha256: string; chunks: number }>((resolve) => this.#worker.once('message', resolve));
    Atomics.store(this.#ctl, CTL_FINISH, 1);
    Atomics.add(this.#ctl, CTL_BELL, 1);
    Atomics.notify(this.#ctl, CTL_BELL);
    const result = await Promise.race([message, this.#failure]);
    if (result.chunks !== this.#submitted) throw new Error(`sha256 worker hashed ${result.chunks} of ${this.#submitted} chunks`);
    return result.sha256;
  }

  /** Stops the worker. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#failed ??= new Error('Sha256Worker is closed');
    await this.#worker.terminate();
  }
}

// ---------------------------------------------------------------------------------------------------------

/** Accepts a byte stream in pieces of any size (an HTTP upload) and writes it sparsely. */
export class SparseImageWriter {
  #fd: number;
  #hash = createHash('sha256');
  #staging = Buffer.allocUnsafe(STAGING_BYTES);
  #fill = 0;
  #position = 0;
  #written = 0;

  constructor(fd: number) {
    this.#fd = fd;
  }

  get bytesReceived(): number {
    return this.#position + this.#fill;
  }

  async write(data: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < data.length) {
      const n = Math.min(data.length - offset, STAGING_BYTES - this.#fill);
      this.#staging.set(data.subarray(offset, offset + n), this.#fill);
      this.#fill += n;
      offset += n;
      if (this.#fill === STAGING_BYTES) await this.#flush();
    }
  }

  async #flush(): Promise<void> {
    if (this.#fill === 0) return;
    this.#written += await writeSparseChunk(this.#fd, this.#hash, this.#staging.subarray(0, this.#fill), this.#position);
    this.#position += this.#fill;
    this.#fill = 0;
  }

  /** Pads to a 4096 multiple (hashed as zeroes), sets the file length, returns size and digest. */
  async finish(): Promise<SparseImageResult> {
    const logicalBytes = this.bytesReceived;
    const pad = (BLOCK_SIZE_BYTES - (logicalBytes % BLOCK_SIZE_BYTES)) % BLOCK_SIZE_BYTES;
    if (pad > 0) {
      this.#staging.fill(0, this.#fill, this.#fill + pad);
      this.#fill += pad;
    }
    await this.#flush();
    const sizeBytes = this.#position;
    await ftruncate(this.#fd, sizeBytes);
    return { logicalBytes, sizeBytes, writtenBytes: this.#written, sha256: this.#hash.digest('hex') };
  }
}
