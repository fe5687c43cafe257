// Copies a raw image file to a new sparse file, hashing every byte on the way. Used for promotion (template
// version → replica), replica moves and imports; hashFile re-hashes a file (replica verification).
//
// The copy is a pipeline over a ring of shared-memory slots: reads run several slots ahead, the sha256 is
// computed on a worker thread (it is the bottleneck: one core hashes ~0.35-0.4 GB/s on the project machine,
// while reading and writing go at 1-2 GB/s), and the main thread only zero-scans each slot and starts the
// writes of its non-zero runs. A slot is reused once it is hashed and written. While the copy runs, an
// fdatasync is started every SYNC_EVERY_BYTES written, so the disk writes back during the copy instead of
// all at the end. Small files are hashed inline (starting a worker costs more than hashing them).
import { createHash, type Hash } from 'node:crypto';
import { fstat } from 'node:fs';
import { promisify } from 'node:util';
import { BLOCK_SIZE_BYTES, roundUpToBlock } from './block-size.ts';
import { close, fdatasync, ftruncate, open, pread } from './fs-callbacks.ts';
import { Sha256Worker, writeDataRuns, type SparseImageResult } from './sparse-image-writer.ts';

const fstatAsync = promisify(fstat);

const MiB = 1024 * 1024;
/** Bytes per pipeline slot (one read, one hash update, one zero scan). */
const SLOT_BYTES = 1 * MiB;
/** Slots in the ring: bounds the memory per copy (SLOTS × SLOT_BYTES) and how far reads run ahead of hashing. */
const SLOTS = 16;
/** Reads in flight at once. */
const READS_IN_FLIGHT = 4;
/** Files up to this size are hashed on the main thread. */
const INLINE_HASH_MAX_BYTES = 16 * MiB;
/** Start a background fdatasync after this many bytes were written since the last one started. */
const SYNC_EVERY_BYTES = 128 * MiB;

export class CopyAbortedError extends Error {
  constructor() {
    super('copy cancelled');
    this.name = 'CopyAbortedError';
  }
}

export interface CopyOptions {
  /** Called with bytes processed so far, at most once per chunk. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  signal?: AbortSignal;
  /** fdatasync the destination before returning (default true). */
  sync?: boolean;
  /** File mode of the destination (default 0o644). */
  mode?: number;
}

async function readFull(fd: number, buffer: Buffer, length: number, position: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const n = await pread(fd, buffer, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** The part of Sha256Worker the pipeline uses, so small files can be hashed inline instead. */
interface ChunkHasher {
  readonly slotBytes: number;
  readonly slots: number;
  slot(index: number): Buffer;
  submit(seq: number, length: number): void;
  waitHashed(count: number): Promise<void>;
  digest(): Promise<string>;
  close(): Promise<void>;
}

class InlineHasher implements ChunkHasher {
  readonly slotBytes: number;
  readonly slots: number;
  #hash: Hash = createHash('sha256');
  #buffers: Buffer[];
  constructor(slotBytes: number, slots: number) {
    this.slotBytes = slotBytes;
    this.slots = slots;
    this.#buffers = Array.from({ length: slots }, () => Buffer.allocUnsafe(slotBytes));
  }
  slot(index: number): Buffer {
    return this.#buffers[index];
  }
  submit(seq: number, length: number): void {
    this.#hash.update(this.#buffers[seq % this.slots].subarray(0, length));
  }
  async waitHashed(): Promise<void> {}
  async digest(): Promise<string> {
    return this.#hash.digest('hex');
  }
  async close(): Promise<void> {}
}

function createHasher(size: number): ChunkHasher {
  if (size <= INLINE_HASH_MAX_BYTES) return new InlineHasher(SLOT_BYTES, Math.min(SLOTS, Math.max(1, Math.ceil(size / SLOT_BYTES))));
  return new Sha256Worker({ slotBytes: SLOT_BYTES, slots: SLOTS });
}

interface StreamOptions {
  /** Pad the last chunk with zeroes to a 4096 multiple (hashed, and seen by onChunk). */
  pad: boolean;
  signal?: AbortSignal;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  progressTotal: number;
  /** Called with each chunk in order; the returned promise must settle before the slot is reused. */
  onChunk?: (chunk: Buffer, length: number, position: number) => Promise<unknown> | undefined;
}

/**
 * Streams `size` bytes of `fd` through the hasher and `onChunk`. Returns the digest and the bytes hashed.
 * On return or throw, no read or onChunk promise is still running.
 */
async function streamFile(fd: number, size: number, options: StreamOptions): Promise<{ sha256: string; hashedBytes: number }> {
  const hasher = createHasher(size);
  const { slots, slotBytes } = hasher;
  const chunkCount = Math.ceil(size / slotBytes);
  // Everything started and not yet settled; none of these promises rejects (errors go to firstError).
  const inflight = new Set<Promise<unknown>>();
  let firstError: unknown;
  const track = (p: Promise<unknown>): Promise<void> => {
    const settled = p.then(
      () => undefined,
      (err: unknown) => {
        firstError ??= err;
      },
    );
    inflight.add(settled);
    void settled.then(() => inflight.delete(settled));
    return settled;
  };
  const slotBusy: Array<Promise<void> | undefined> = new Array(slots);
  const reads: Array<Promise<{ got: number } | { error: unknown }>> = [];
  let nextRead = 0;
  let stopped = false; // set on the way out: reads still waiting for their slot then do nothing

  const readChunk = async (seq: number): Promise<number> => {
    const slot = seq % slots;
    if (seq >= slots) {
      await hasher.waitHashed(seq - slots + 1);
      await slotBusy[slot];
    }
    if (stopped) return 0;
    const position = seq * slotBytes;
    return readFull(fd, hasher.slot(slot), Math.min(slotBytes, size - position), position);
  };
  // Called at chunk `current`: chunks before it are submitted. A read may start only once the slot's
  // previous chunk has been submitted; readChunk then waits for it to be hashed and written.
  const startReads = (current: number) => {
    while (nextRead < chunkCount && nextRead < current + slots && reads.length < READS_IN_FLIGHT && !options.signal?.aborted) {
      const read = readChunk(nextRead++).then(
        (got) => ({ got }),
        (error: unknown) => ({ error }),
      );
      inflight.add(read);
      void read.then(() => inflight.delete(read));
      reads.push(read);
    }
  };

  let hashedBytes = 0;
  try {
    for (let seq = 0; seq < chunkCount; seq++) {
      if (options.signal?.aborted) throw new CopyAbortedError();
      startReads(seq);
      const result = await reads.shift()!;
      if ('error' in result) throw result.error;
      if (firstError !== undefined) throw firstError;
      const slot = seq % slots;
      const buffer = hasher.slot(slot);
      const position = seq * slotBytes;
      const expected = Math.min(slotBytes, size - position);
      let length = result.got;
      const last = seq === chunkCount - 1 || length < expected; // a short read: the file shrank, stop there
      if (last && options.pad) {
        const padded = roundUpToBlock(position + length) - position;
        buffer.fill(0, length, padded);
        length = padded;
      }
      hasher.submit(seq, length);
      hashedBytes += length;
      const busy = options.onChunk?.(buffer, length, position);
      slotBusy[slot] = busy ? track(busy) : undefined;
      options.onProgress?.(Math.min(position + length, options.progressTotal), options.progressTotal);
      if (last) break;
    }
    await Promise.all(inflight);
    if (firstError !== undefined) throw firstError;
    return { sha256: await hasher.digest(), hashedBytes };
  } finally {
    // Nothing may touch the fds after we return: wait for every read and write still running.
    stopped = true;
    for (let i = 0; i < 4 && inflight.size > 0; i++) await Promise.all(inflight);
    await hasher.close();
  }
}

/**
 * Copies `sourcePath` to `destinationPath` (which must not exist), padded to a 4096 multiple, skipping
 * all-zero blocks. A failed or cancelled copy leaves the partial destination for the caller to remove.
 */
export async function copySparse(sourcePath: string, destinationPath: string, options: CopyOptions = {}): Promise<SparseImageResult> {
  const src = await open(sourcePath, 'r');
  let dst: number | undefined;
  try {
    const { size } = await fstatAsync(src);
    const sizeBytes = roundUpToBlock(size);
    dst = await open(destinationPath, 'wx', options.mode ?? 0o644);
    const dstFd = dst;
    const sync = options.sync !== false;
    let written = 0;
    let unsynced = 0;
    // At most one background fdatasync at a time; it never rejects (its error is kept for the end).
    let backgroundSync: Promise<void> | undefined;
    let syncError: unknown;
    try {
      const { sha256 } = await streamFile(src, size, {
        pad: true,
        signal: options.signal,
        onProgress: options.onProgress,
        progressTotal: sizeBytes,
        onChunk: (chunk, length, position) => {
          const { bytes, done } = writeDataRuns(dstFd, chunk, length, position);
          written += bytes;
          unsynced += bytes;
          if (sync && unsynced >= SYNC_EVERY_BYTES && !backgroundSync) {
            // Have the disk write back what is written so far while the copy goes on.
            unsynced = 0;
            backgroundSync = fdatasync(dstFd).then(
              () => {
                backgroundSync = undefined;
              },
              (err: unknown) => {
                syncError ??= err;
                backgroundSync = undefined;
              },
            );
          }
          return done;
        },
      });
      await backgroundSync;
      if (syncError !== undefined) throw syncError;
      await ftruncate(dst, sizeBytes);
      if (sync) await fdatasync(dst);
      return { logicalBytes: size, sizeBytes, writtenBytes: written, sha256 };
    } finally {
      await backgroundSync; // before the fd is closed
    }
  } finally {
    await close(src);
    if (dst !== undefined) await close(dst);
  }
}

/** Re-reads a file and returns its sha256 (for replica verification). */
export async function hashFile(filePath: string, options: Pick<CopyOptions, 'onProgress' | 'signal'> = {}): Promise<{ sizeBytes: number; sha256: string }> {
  const fd = await open(filePath, 'r');
  try {
    const { size } = await fstatAsync(fd);
    const { sha256 } = await streamFile(fd, size, { pad: false, signal: options.signal, onProgress: options.onProgress, progressTotal: size });
    return { sizeBytes: size, sha256 };
  } finally {
    await close(fd);
  }
}

export { BLOCK_SIZE_BYTES };
