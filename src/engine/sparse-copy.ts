// Copies a raw image file to a new sparse file, hashing every byte on the way. Used for promotion (template
// version → replica) and replica moves. Reads run one chunk ahead of hashing and writing.
import { createHash } from 'node:crypto';
import { fstat } from 'node:fs';
import { promisify } from 'node:util';
import { BLOCK_SIZE_BYTES, roundUpToBlock } from './block-size.ts';
import { close, fdatasync, ftruncate, open, pread } from './fs-callbacks.ts';
import { STAGING_BYTES, writeSparseChunk, type SparseImageResult } from './sparse-image-writer.ts';

const fstatAsync = promisify(fstat);

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
    const hash = createHash('sha256');
    const buffers = [Buffer.allocUnsafe(STAGING_BYTES), Buffer.allocUnsafe(STAGING_BYTES)];
    let written = 0;
    let position = 0;
    let index = 0;
    let pendingRead: Promise<number> | undefined = size > 0 ? readFull(src, buffers[0], Math.min(STAGING_BYTES, size), 0) : undefined;
    while (pendingRead) {
      if (options.signal?.aborted) throw new CopyAbortedError();
      const got = await pendingRead;
      const current = buffers[index];
      const nextPosition = position + got;
      pendingRead =
        got > 0 && nextPosition < size
          ? readFull(src, buffers[index ^ 1], Math.min(STAGING_BYTES, size - nextPosition), nextPosition)
          : undefined;
      let length = got;
      if (nextPosition >= size || got === 0) {
        // The last chunk is padded with zeroes to the block size: hashed, never written.
        const padded = roundUpToBlock(position + got) - position;
        current.fill(0, got, padded);
        length = padded;
        pendingRead = undefined;
      }
      if (length > 0) written += await writeSparseChunk(dst, hash, current.subarray(0, length), position);
      position += length;
      index ^= 1;
      options.onProgress?.(Math.min(position, sizeBytes), sizeBytes);
    }
    await ftruncate(dst, sizeBytes);
    if (options.sync !== false) await fdatasync(dst);
    return { logicalBytes: size, sizeBytes, writtenBytes: written, sha256: hash.digest('hex') };
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
    const hash = createHash('sha256');
    const buffers = [Buffer.allocUnsafe(STAGING_BYTES), Buffer.allocUnsafe(STAGING_BYTES)];
    let position = 0;
    let index = 0;
    let pendingRead: Promise<number> | undefined = size > 0 ? readFull(fd, buffers[0], Math.min(STAGING_BYTES, size), 0) : undefined;
    while (pendingRead) {
      if (options.signal?.aborted) throw new CopyAbortedError();
      const got = await pendingRead;
      const nextPosition = position + got;
      pendingRead = got > 0 && nextPosition < size ? readFull(fd, buffers[index ^ 1], Math.min(STAGING_BYTES, size - nextPosition), nextPosition) : undefined;
      hash.update(buffers[index].subarray(0, got));
      position = nextPosition;
      index ^= 1;
      options.onProgress?.(position, size);
    }
    return { sizeBytes: size, sha256: hash.digest('hex') };
  } finally {
    await close(fd);
  }
}

export { BLOCK_SIZE_BYTES };
