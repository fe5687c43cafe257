import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ReplicaCache } from './replica-cache.ts';
import { ReplicaImage } from './replica-image.ts';

const BS = 4096;
const BLOCKS = 512;

function blockOf(file: Buffer, lba: number, n: number): Buffer {
  return file.subarray(lba * BS, (lba + n) * BS);
}

describe('ReplicaCache', () => {
  let dir: string;
  let content: Buffer;
  let replica: ReplicaImage;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-cache-'));
    content = Buffer.alloc(BLOCKS * BS);
    for (let i = 0; i < BLOCKS; i++) {
      content.fill(i & 0xff, i * BS, (i + 1) * BS);
      content.writeUInt32LE(i, i * BS);
    }
    const file = path.join(dir, 'replica.img');
    fs.writeFileSync(file, content);
    replica = new ReplicaImage('r1', file, content.length);
  });

  afterEach(async () => {
    replica.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a range once from the device and then from memory, in as few views as it can', () => {
    const cache = new ReplicaCache(1024 * 1024);
    const first: Buffer[] = [];
    cache.read(replica, 10, 40, first);
    expect(Buffer.concat(first).equals(blockOf(content, 10, 40))).toBe(true);
    const second: Buffer[] = [];
    cache.read(replica, 10, 40, second);
    expect(Buffer.concat(second).equals(blockOf(content, 10, 40))).toBe(true);
    const s = cache.getStats();
    expect(s.deviceBytes).toBe(40 * BS);
    expect(s.hits).toBe(40);
    expect(second.length).toBeLessThanOrEqual(2);
  });

  it('stays within its capacity, returns the right bytes under eviction and never changes a view it handed out', () => {
    const cache = new ReplicaCache(32 * BS);
    const kept: Array<{ lba: number; n: number; views: Buffer[] }> = [];
    let seed = 1;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x80000000;
    };
    for (let i = 0; i < 3000; i++) {
      const n = 1 + Math.floor(rand() * 12);
      const lba = Math.floor(rand() * (BLOCKS - n));
      const views: Buffer[] = [];
      cache.read(replica, lba, n, views);
      expect(Buffer.concat(views).equals(blockOf(content, lba, n))).toBe(true);
      if (i % 50 === 0) kept.push({ lba, n, views });
      expect(cache.getStats().cachedBytes).toBeLessThanOrEqual(32 * BS);
    }
    for (const k of kept) expect(Buffer.concat(k.views).equals(blockOf(content, k.lba, k.n))).toBe(true);
  });

  it('gives blocks hit since they were stored a second chance when their segment is reused', () => {
    const cache = new ReplicaCache(64 * BS); // 4 segments of 16 blocks
    const sink: Buffer[] = [];
    cache.read(replica, 0, 1, sink); // block 0 in segment 0
    cache.read(replica, 0, 1, sink); // hit: referenced
    for (let lba = 100; lba < 100 + 70; lba++) cache.read(replica, lba, 1, sink); // a full ring turn and more
    const before = cache.getStats().deviceReads;
    cache.read(replica, 0, 1, sink);
    expect(cache.getStats().deviceReads).toBe(before);
  });

  it('forgets a dropped replica', () => {
    const cache = new ReplicaCache(1024 * 1024);
    const sink: Buffer[] = [];
    cache.read(replica, 0, 8, sink);
    cache.dropReplica(replica);
    expect(cache.getStats().cachedBytes).toBe(0);
    cache.read(replica, 0, 8, sink);
    expect(cache.getStats().deviceBytes).toBe(16 * BS);
  });

  it('reads straight from the device when its capacity is zero', () => {
    const cache = new ReplicaCache(0);
    const out: Buffer[] = [];
    cache.read(replica, 3, 5, out);
    cache.read(replica, 3, 5, out);
    expect(Buffer.concat(out).equals(Buffer.concat([blockOf(content, 3, 5), blockOf(content, 3, 5)]))).toBe(true);
    expect(cache.getStats().deviceReads).toBe(2);
  });

  describe('while thrashing (random reads over more blocks than it holds)', () => {
    // 64 KiB of cache (16 blocks) over a 512-block replica: uniform random reads hit about 3 % of the time.
    const thrash = (cache: ReplicaCache, reads: number, seed = 7): void => {
      let x = seed;
      const dest = Buffer.alloc(BS);
      for (let i = 0; i < reads; i++) {
        x = (Math.imul(x, 1103515245) + 12345) >>> 0;
        const lba = x % BLOCKS;
        cache.copyTo(replica, lba, 1, dest);
        expect(dest.readUInt32LE(0)).toBe(lba);
      }
    };

    it('reads one-off misses straight into the caller without storing them, and returns the right bytes', () => {
      const cache = new ReplicaCache(64 * 1024);
      thrash(cache, 40_000);
      const s = cache.getStats();
      // With so few distinct blocks a block often misses again soon and is admitted; many still are not.
      expect(s.bypassed).toBeGreaterThan(s.misses / 4);
      // Views too: bypassed blocks come back in the caller's spare buffer.
      const spare = Buffer.alloc(4 * BS);
      const out: Buffer[] = [];
      cache.read(replica, 300, 4, out, spare);
      expect(Buffer.concat(out).equals(blockOf(content, 300, 4))).toBe(true);
    });

    it('still admits a block that misses again soon (hot) and then serves it from memory', () => {
      const cache = new ReplicaCache(64 * 1024);
      thrash(cache, 40_000);
      const dest = Buffer.alloc(BS);
      const before = cache.getStats();
      cache.copyTo(replica, 77, 1, dest);
      cache.copyTo(replica, 77, 1, dest);
      cache.copyTo(replica, 77, 1, dest);
      const after = cache.getStats();
      expect(dest.readUInt32LE(0)).toBe(77);
      // At most the first two reads go to the device (doorkeeper, then admission); the third is a hit.
      expect(after.deviceReads - before.deviceReads).toBeLessThanOrEqual(2);
      expect(after.hits - before.hits).toBeGreaterThanOrEqual(1);
    });

    it('never bypasses before the cache has filled once, so a boot storm reads each block from the device once', () => {
      const cache = new ReplicaCache(4 * 1024 * 1024);
      // 200 readers of the same 256 blocks, in lockstep.
      const dest = Buffer.alloc(BS);
      for (let lba = 0; lba < 256; lba++) for (let r = 0; r < 200; r++) cache.copyTo(replica, lba, 1, dest);
      const s = cache.getStats();
      expect(s.bypassed).toBe(0);
      expect(s.deviceBytes).toBe(256 * BS);
    });
  });
});

