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
});
