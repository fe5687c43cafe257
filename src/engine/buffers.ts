// Buffer helpers for the data path: a slab allocator (a fresh 4 KiB Buffer costs about 2 µs, as much as
// a page-cache read; perf-limits.md §4), shared zero views, and slicing of gather lists without copies.
import { BLOCK_SIZE_BYTES } from './block-size.ts';

/** Carves small buffers out of larger allocations. A live view keeps its whole slab alive. */
class Slab {
  #slabBytes: number;
  #maxTake: number;
  #slab: Buffer;
  #offset = 0;

  constructor(slabBytes: number) {
    this.#slabBytes = slabBytes;
    this.#maxTake = slabBytes / 4;
    this.#slab = Buffer.allocUnsafe(slabBytes);
  }

  take(bytes: number): Buffer {
    if (bytes > this.#maxTake) return Buffer.allocUnsafe(bytes);
    if (this.#offset + bytes > this.#slabBytes) {
      this.#slab = Buffer.allocUnsafe(this.#slabBytes);
      this.#offset = 0;
    }
    const b = this.#slab.subarray(this.#offset, this.#offset + bytes);
    this.#offset += (bytes + 7) & ~7;
    return b;
  }
}

// Short-lived buffers (reads, journal scratch) share 1 MiB slabs.
const shortLived = new Slab(1024 * 1024);
// Copies of written blocks may live until a checkpoint writes them to the data file: smaller slabs, kept
// apart from the short-lived ones, so that one lingering copy pins 64 KiB and not a 1 MiB read slab.
const blockCopies = new Slab(64 * 1024);

/** A buffer of `bytes` whose contents the caller will overwrite completely. */
export function takeBuffer(bytes: number): Buffer {
  return shortLived.take(bytes);
}

/** takeBuffer for a block copy that may be kept for a long time (see Clone's deferred blocks). */
export function takeBlockCopy(bytes: number): Buffer {
  return blockCopies.take(bytes);
}

const ZEROES = Buffer.alloc(32 * BLOCK_SIZE_BYTES);

/** Pushes views of a shared all-zero buffer covering `bytes`. Callers must never write into them. */
export function pushZeroes(out: Buffer[], bytes: number): void {
  while (bytes > 0) {
    const n = Math.min(bytes, ZEROES.length);
    out.push(ZEROES.subarray(0, n));
    bytes -= n;
  }
}

export function totalLength(chunks: readonly Buffer[]): number {
  let n = 0;
  for (const c of chunks) n += c.length;
  return n;
}

/** Views of bytes [offset, offset+length) of a gather list. */
export function sliceChunks(chunks: readonly Buffer[], offset: number, length: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = offset;
  let need = length;
  for (const c of chunks) {
    if (need <= 0) break;
    if (skip >= c.length) {
      skip -= c.length;
      continue;
    }
    const take = Math.min(c.length - skip, need);
    out.push(c.subarray(skip, skip + take));
    need -= take;
    skip = 0;
  }
  return out;
}
