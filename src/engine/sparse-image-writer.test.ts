import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { close, open as openFd } from './fs-callbacks.ts';
import { forEachDataRun, Sha256Worker, SparseImageWriter, STAGING_BYTES, writeSparseChunk } from './sparse-image-writer.ts';

const BLOCK = 4096;
const sha256 = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

/** A buffer of `blocks` 4 KiB blocks; block i is filled with pattern(i) (0 = all zero). */
function blocks(pattern: number[]): Buffer {
  const b = Buffer.alloc(pattern.length * BLOCK);
  pattern.forEach((v, i) => {
    if (v) b.fill(v, i * BLOCK, (i + 1) * BLOCK);
  });
  return b;
}

function runsOf(chunk: Uint8Array, length = chunk.length): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  const total = forEachDataRun(chunk, length, (s, e) => runs.push([s, e]));
  expect(total).toBe(runs.reduce((a, [s, e]) => a + e - s, 0));
  return runs;
}

describe('forEachDataRun', () => {
  it('finds maximal runs of non-zero blocks', () => {
    expect(runsOf(blocks([1, 1, 0, 0, 2, 0, 3, 3, 3]))).toEqual([
      [0, 2 * BLOCK],
      [4 * BLOCK, 5 * BLOCK],
      [6 * BLOCK, 9 * BLOCK],
    ]);
    expect(runsOf(blocks([0, 0, 0]))).toEqual([]);
    expect(runsOf(blocks([5, 5]))).toEqual([[0, 2 * BLOCK]]);
    expect(runsOf(Buffer.alloc(0))).toEqual([]);
  });

  it('sees a single non-zero byte anywhere in a block', () => {
    for (const at of [0, 1, 7, 8, 1000, 2047, 2048, 2049, 4094, 4095]) {
      const b = Buffer.alloc(3 * BLOCK);
      b[BLOCK + at] = 0x80;
      expect(runsOf(b), `byte ${at}`).toEqual([[BLOCK, 2 * BLOCK]]);
    }
  });

  it('handles a short last block and only looks at the first `length` bytes', () => {
    const b = Buffer.alloc(2 * BLOCK + 100);
    b[2 * BLOCK + 50] = 1;
    expect(runsOf(b)).toEqual([[2 * BLOCK, 2 * BLOCK + 100]]);
    b[2 * BLOCK + 99] = 0;
    const c = blocks([0, 0, 9]);
    expect(runsOf(c, 2 * BLOCK)).toEqual([]);
    expect(runsOf(c, 2 * BLOCK + 1)).toEqual([[2 * BLOCK, 2 * BLOCK + 1]]);
  });

  it('works on a view with an odd byte offset', () => {
    const backing = Buffer.alloc(3 * BLOCK + 3);
    const view = backing.subarray(3);
    view[BLOCK + 4095] = 1;
    expect(runsOf(view)).toEqual([[BLOCK, 2 * BLOCK]]);
  });
});

describe('on files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-siw-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writeSparseChunk hashes everything and writes only non-zero blocks', async () => {
    const file = path.join(dir, 'a.img');
    const fd = await openFd(file, 'wx', 0o644);
    const chunk = blocks([0, 7, 7, 0, 0, 0, 0, 0, 3, 0]);
    const hash = createHash('sha256');
    try {
      expect(await writeSparseChunk(fd, hash, chunk, 2 * BLOCK)).toBe(3 * BLOCK);
    } finally {
      await close(fd);
    }
    expect(hash.digest('hex')).toBe(sha256(chunk));
    const content = await readFile(file);
    expect(content.length).toBe(2 * BLOCK + 9 * BLOCK); // ends after the last written block
    expect(content.subarray(2 * BLOCK).equals(chunk.subarray(0, 9 * BLOCK))).toBe(true);
  });

  it('writeSparseChunk rejects when the writes fail', async () => {
    const file = path.join(dir, 'ro.img');
    await (await open(file, 'w')).close();
    const fd = await openFd(file, 'r');
    try {
      await expect(writeSparseChunk(fd, createHash('sha256'), blocks([1, 0, 1, 0, 1]), 0)).rejects.toMatchObject({ code: 'EBADF' });
    } finally {
      await close(fd);
    }
  });

  async function writeWithWriter(data: Buffer, pieceSizes: number[]) {
    const file = path.join(dir, `w-${Math.random().toString(36).slice(2)}.img`);
    const fd = await openFd(file, 'wx', 0o644);
    try {
      const writer = new SparseImageWriter(fd);
      let off = 0;
      for (let i = 0; off < data.length; i++) {
        const n = Math.min(pieceSizes[i % pieceSizes.length], data.length - off);
        await writer.write(data.subarray(off, off + n));
        off += n;
        expect(writer.bytesReceived).toBe(off);
      }
      return { file, result: await writer.finish() };
    } finally {
      await close(fd);
    }
  }

  it('SparseImageWriter pads to 4096, hashes the padding and stays sparse, across staging boundaries', async () => {
    // 2.5 staging buffers of mostly zeroes with data runs across both staging boundaries, odd length.
    const size = 2 * STAGING_BYTES + STAGING_BYTES / 2 + 1234;
    const data = Buffer.alloc(size);
    data.fill(0xab, STAGING_BYTES - 3 * BLOCK, STAGING_BYTES + 2 * BLOCK);
    data.fill(0xcd, 2 * STAGING_BYTES - 1, 2 * STAGING_BYTES + 1);
    data.fill(0xef, size - 1000, size);
    const { file, result } = await writeWithWriter(data, [1_000_003, 65_536, 7]);
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    expect(result).toEqual({
      logicalBytes: size,
      sizeBytes: padded,
      writtenBytes: 5 * BLOCK + 2 * BLOCK + BLOCK,
      sha256: sha256(data, Buffer.alloc(padded - size)),
    });
    const st = await stat(file);
    expect(st.size).toBe(padded);
    expect(st.blocks * 512).toBeLessThanOrEqual(8 * BLOCK + 64 * 1024);
    const content = await readFile(file);
    expect(content.subarray(0, size).equals(data)).toBe(true);
    expect(content.subarray(size).every((b) => b === 0)).toBe(true);
  });

  it('SparseImageWriter with nothing written gives an empty file', async () => {
    const { file, result } = await writeWithWriter(Buffer.alloc(0), [1]);
    expect(result).toEqual({ logicalBytes: 0, sizeBytes: 0, writtenBytes: 0, sha256: sha256() });
    expect((await stat(file)).size).toBe(0);
  });

  it('SparseImageWriter with an exact 4096 multiple adds no padding', async () => {
    const data = blocks([0, 1, 0]);
    const { result } = await writeWithWriter(data, [4096]);
    expect(result).toEqual({ logicalBytes: 3 * BLOCK, sizeBytes: 3 * BLOCK, writtenBytes: BLOCK, sha256: sha256(data) });
  });
});

describe('Sha256Worker', () => {
  it('hashes chunks submitted through a ring of slots, in order', async () => {
    const worker = new Sha256Worker({ slotBytes: 2 * BLOCK, slots: 3 });
    const reference = createHash('sha256');
    try {
      for (let seq = 0; seq < 50; seq++) {
        if (seq >= worker.slots) await worker.waitHashed(seq - worker.slots + 1);
        const slot = worker.slot(seq % worker.slots);
        expect(slot.length).toBe(2 * BLOCK);
        const length = (seq * 977) % (2 * BLOCK + 1); // includes 0 and the full slot
        for (let i = 0; i < length; i++) slot[i] = (seq * 31 + i) & 0xff;
        reference.update(slot.subarray(0, length));
        worker.submit(seq, length);
      }
      expect(worker.submitted).toBe(50);
      await worker.waitHashed(50);
      expect(worker.hashed).toBe(50);
      expect(await worker.digest()).toBe(reference.digest('hex'));
    } finally {
      await worker.close();
      await worker.close(); // idempotent
    }
  });

  it('digest of nothing is the empty sha256', async () => {
    const worker = new Sha256Worker({ slotBytes: BLOCK, slots: 1 });
    try {
      expect(await worker.digest()).toBe(sha256());
    } finally {
      await worker.close();
    }
  });

  it('refuses bad arguments and out-of-order chunks', async () => {
    expect(() => new Sha256Worker({ slotBytes: 1000, slots: 2 })).toThrow(RangeError);
    expect(() => new Sha256Worker({ slotBytes: BLOCK, slots: 0 })).toThrow(RangeError);
    const worker = new Sha256Worker({ slotBytes: BLOCK, slots: 2 });
    try {
      expect(() => worker.submit(1, 10)).toThrow(/out of order/);
      expect(() => worker.submit(0, BLOCK + 1)).toThrow(RangeError);
      worker.submit(0, 10);
    } finally {
      await worker.close();
    }
    expect(() => worker.submit(1, 10)).toThrow(/closed/);
    await expect(worker.waitHashed(5)).rejects.toThrow();
    await expect(worker.digest()).rejects.toThrow();
  });

  it('exits by itself when abandoned, and then reports that instead of hanging', async () => {
    const worker = new Sha256Worker({ slotBytes: BLOCK, slots: 2, idleTimeoutMs: 50 });
    try {
      await expect(worker.waitHashed(1)).rejects.toThrow(/exited/);
    } finally {
      await worker.close();
    }
  });
});
