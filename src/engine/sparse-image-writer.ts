// Writes a raw image into a file while hashing it, skipping all-zero 4 KiB blocks so the file stays sparse.
// The sha256 always covers every byte, including skipped zeroes and the padding up to a 4096 multiple.
import { createHash, type Hash } from 'node:crypto';
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

/**
 * Hashes `chunk` (which sits at `position` in the image) and writes its non-zero 4 KiB runs to `fd`.
 * The chunk length must be a multiple of 4096 except for the last one. Returns the bytes written.
 */
export async function writeSparseChunk(fd: number, hash: Hash, chunk: Buffer, position: number): Promise<number> {
  hash.update(chunk);
  if (chunk.length === ZERO_STAGING.length && chunk.equals(ZERO_STAGING)) return 0;
  const writes: Promise<void>[] = [];
  let written = 0;
  let runStart = -1;
  for (let off = 0; off < chunk.length; off += BLOCK_SIZE_BYTES) {
    const end = Math.min(off + BLOCK_SIZE_BYTES, chunk.length);
    const block = chunk.subarray(off, end);
    const zero = block.length === BLOCK_SIZE_BYTES ? block.equals(ZERO_BLOCK) : block.equals(ZERO_BLOCK.subarray(0, block.length));
    if (!zero) {
      if (runStart < 0) runStart = off;
    } else if (runStart >= 0) {
      writes.push(pwriteAll(fd, chunk.subarray(runStart, off), position + runStart));
      written += off - runStart;
      runStart = -1;
    }
  }
  if (runStart >= 0) {
    writes.push(pwriteAll(fd, chunk.subarray(runStart), position + runStart));
    written += chunk.length - runStart;
  }
  await Promise.all(writes);
  return written;
}

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
