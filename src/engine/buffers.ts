// Buffer helpers for the data path: a slab allocator (a fresh 4 KiB Buffer costs about 2 µs, as much as
// a page-cache read; perf-limits.md §4), shared zero views, and slicing of gather lists without copies.
import { BLOCK_SIZE_BYTES } from './block-size.ts';

const SLAB_BYTES = 1024 * 1024;
const MAX_SLAB_TAKE = 256 * 1024;
let slab = Buffer.allocUnsafe(SLAB_BYTES);
let slabOffset = 0;

/** A buffer of `bytes` whose contents the caller will overwrite completely. */
export function takeBuffer(bytes: number): Buffer {
  if (bytes > MAX_SLAB_TAKE) return Buffer.allocUnsafe(bytes);
  if (slabOffset + bytes > SLAB_BYTES) {
    slab = Buffer.allocUnsafe(SLAB_BYTES);
    slabOffset = 0;
  }
  const b = slab.subarray(slabOffset, slabOffset + bytes);
  slabOffset += (bytes + 7) & ~7;
  return b;
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
