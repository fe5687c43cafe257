import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CopyAbortedError, copySparse, hashFile } from './sparse-copy.ts';

const BLOCK = 4096;
const MiB = 1024 * 1024;
const sha256 = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};
const roundUp = (n: number) => Math.ceil(n / BLOCK) * BLOCK;

/**
 * An image of `size` bytes, zero except for the given [start, end) ranges filled with a deterministic
 * non-zero pattern. Returns the bytes and how many 4 KiB blocks (of the padded image) hold data.
 */
function image(size: number, ranges: Array<[number, number]>): { data: Buffer; dataBlocks: number } {
  const data = Buffer.alloc(size);
  const touched = new Set<number>();
  for (const [start, end] of ranges) {
    for (let i = start; i < end; i++) data[i] = ((i * 2654435761) >>> 24) | 1;
    for (let b = Math.floor(start / BLOCK); b * BLOCK < end; b++) touched.add(b);
  }
  return { data, dataBlocks: touched.size };
}

describe('copySparse', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-copy-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function check(size: number, ranges: Array<[number, number]>, options: Parameters<typeof copySparse>[2] = {}) {
    const { data, dataBlocks } = image(size, ranges);
    const src = path.join(dir, 'src.img');
    const dst = path.join(dir, 'dst.img');
    await writeFile(src, data);
    const progress: Array<[number, number]> = [];
    const result = await copySparse(src, dst, { ...options, onProgress: (done, total) => progress.push([done, total]) });
    const padded = roundUp(size);
    expect(result).toEqual({
      logicalBytes: size,
      sizeBytes: padded,
      writtenBytes: dataBlocks * BLOCK,
      sha256: sha256(data, Buffer.alloc(padded - size)),
    });
    const st = await stat(dst);
    expect(st.size).toBe(padded);
    // Sparse: about as many bytes allocated as there are data blocks (a little slack for filesystem metadata).
    expect(st.blocks * 512).toBeGreaterThanOrEqual(dataBlocks * BLOCK);
    expect(st.blocks * 512).toBeLessThanOrEqual(dataBlocks * BLOCK + 256 * 1024);
    const copy = await readFile(dst);
    expect(copy.subarray(0, size).equals(data)).toBe(true);
    expect(copy.subarray(size).every((b) => b === 0)).toBe(true);
    // Progress: monotonic, always out of the padded size, ending at it.
    for (let i = 1; i < progress.length; i++) expect(progress[i][0]).toBeGreaterThanOrEqual(progress[i - 1][0]);
    expect(progress.every(([, total]) => total === padded)).toBe(true);
    if (size > 0) expect(progress.at(-1)).toEqual([padded, padded]);
    expect((await hashFile(dst)).sha256).toBe(result.sha256);
    return result;
  }

  it('copies a small file with a size that is not a 4096 multiple, hashing the zero padding', async () => {
    await check(3 * BLOCK + 5, [
      [10, 20],
      [3 * BLOCK, 3 * BLOCK + 5],
    ]);
  });

  it('copies a large file (worker hashing) with data runs across chunk boundaries and an unaligned end', async () => {
    const size = 37 * MiB + 3 * BLOCK + 777; // chunk boundaries every MiB; last chunk short and unaligned
    await check(size, [
      [0, BLOCK],
      [MiB - 2 * BLOCK, MiB + BLOCK + 1], // across the first chunk boundary, ending inside a block
      [5 * MiB + 100, 5 * MiB + 101], // one byte in a block
      [16 * MiB - 1, 16 * MiB + 1], // across the 16th boundary (ring wraps)
      [17 * MiB, 20 * MiB], // whole chunks of data
      [size - 10, size], // in the padded last block
    ]);
  });

  it('copies a file just above and just below the inline-hashing size', async () => {
    await check(16 * MiB, [[8 * MiB, 8 * MiB + 10]]);
    await rm(path.join(dir, 'dst.img'));
    await check(16 * MiB + BLOCK, [[16 * MiB, 16 * MiB + BLOCK]]);
  });

  it('copies an all-zero file without writing anything', async () => {
    const result = await check(20 * MiB + 1, []);
    expect(result.writtenBytes).toBe(0);
    expect((await stat(path.join(dir, 'dst.img'))).blocks).toBe(0);
  });

  it('copies a zero-length file', async () => {
    const result = await check(0, []);
    expect(result.sha256).toBe(sha256());
  });

  it('copies without fdatasync when asked, and applies the mode', async () => {
    await check(2 * MiB + 1, [[MiB, MiB + 2]], { sync: false, mode: 0o600 });
    expect((await stat(path.join(dir, 'dst.img'))).mode & 0o777).toBe(0o600);
  });

  it('refuses an existing destination and a missing source', async () => {
    const src = path.join(dir, 'src.img');
    const dst = path.join(dir, 'dst.img');
    await writeFile(src, 'abc');
    await writeFile(dst, 'keep');
    await expect(copySparse(src, dst)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(dst, 'utf8')).toBe('keep');
    await expect(copySparse(path.join(dir, 'missing.img'), path.join(dir, 'x.img'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('stops when cancelled and leaves the partial destination for the caller to remove', async () => {
    const { data } = image(40 * MiB, [[0, 40 * MiB]]);
    const src = path.join(dir, 'src.img');
    const dst = path.join(dir, 'dst.img');
    await writeFile(src, data);
    const controller = new AbortController();
    let calls = 0;
    const copy = copySparse(src, dst, {
      signal: controller.signal,
      onProgress: () => {
        if (++calls === 3) controller.abort();
      },
    });
    await expect(copy).rejects.toBeInstanceOf(CopyAbortedError);
    expect(calls).toBeLessThan(40);
    // Nothing writes to it any more once the copy has rejected.
    const before = await stat(dst);
    await new Promise((r) => setTimeout(r, 100));
    const after = await stat(dst);
    expect(after.size).toBe(before.size);
    expect(after.blocks).toBe(before.blocks);
    expect(before.size).toBeLessThan(40 * MiB);
    await rm(dst);
  });

  it('rejects at once with an already aborted signal', async () => {
    const src = path.join(dir, 'src.img');
    const dst = path.join(dir, 'dst.img');
    await writeFile(src, Buffer.alloc(20 * MiB, 1));
    const controller = new AbortController();
    controller.abort();
    await expect(copySparse(src, dst, { signal: controller.signal })).rejects.toBeInstanceOf(CopyAbortedError);
    expect((await stat(dst)).size).toBe(0);
  });
});

describe('hashFile', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-hash-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes the bytes of the file as they are (no padding), small and large', async () => {
    for (const size of [0, 1, BLOCK + 3, 25 * MiB + 11]) {
      const { data } = image(size, [[0, Math.min(size, 3 * MiB)]]);
      const file = path.join(dir, `f${size}.img`);
      await writeFile(file, data);
      const progress: number[] = [];
      expect(await hashFile(file, { onProgress: (done, total) => progress.push(done / total) })).toEqual({ sizeBytes: size, sha256: sha256(data) });
      if (size > 0) expect(progress.at(-1)).toBe(1);
    }
  });

  it('can be cancelled', async () => {
    const file = path.join(dir, 'big.img');
    await writeFile(file, Buffer.alloc(30 * MiB, 7));
    const controller = new AbortController();
    const hashing = hashFile(file, { signal: controller.signal, onProgress: () => controller.abort() });
    await expect(hashing).rejects.toBeInstanceOf(CopyAbortedError);
  });
});
