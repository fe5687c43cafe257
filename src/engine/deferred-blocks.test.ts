// Deferred blocks: data that is in memory only until a later write to the clone's data file.
// Reads must see it, flushes and checkpoints must put it in the file in time, frees and resets must
// forget it, and the pool's space accounting must count it exactly.
import fs from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Engine } from './engine.ts';

const BS = 4096;
const BLOCKS = 256;
const ID = '00000000-0000-4000-8000-0000000000d1';

function block(fill: number): Buffer {
  return Buffer.alloc(BS, fill);
}

/** Replica block i is filled with 0x80 + (i % 64). */
function replicaBlock(i: number): Buffer {
  return block(0x80 + (i % 64));
}

describe('deferred and staged blocks', () => {
  let dir: string;
  let engine: Engine;
  const replica = () => ({ id: 'r1', path: path.join(dir, 'replica.img'), sizeBytes: BLOCKS * BS });

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-deferred-'));
    await writeFile(path.join(dir, 'replica.img'), Buffer.concat(Array.from({ length: BLOCKS }, (_, i) => replicaBlock(i))));
    engine = new Engine({ replicaCacheBytes: 1024 * 1024, journalBytes: 1024 * 1024 });
    await engine.openPool({ id: 'p', path: path.join(dir, 'pool') }, [{ id: ID, replica: replica() }]);
  });

  afterEach(async () => {
    await engine?.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  const fileBytes = (dataPath: string) => (fs.existsSync(dataPath) ? fs.readFileSync(dataPath) : Buffer.alloc(0));

  it('serves flushed small writes from memory and puts them in the data file at the checkpoint', async () => {
    const c = engine.clone(ID);
    const pool = engine.pool('p');
    await c.write(1, block(0x11));
    await c.write(3, [block(0x33).subarray(0, 100), block(0x33).subarray(100)]);
    await c.flush();
    expect(c.deferredBlocks).toBe(2);
    expect(pool.deferredBlocks).toBe(2);
    expect(fileBytes(c.dataPath).length).toBe(0); // journalled, not yet in the data file
    const want = Buffer.concat([replicaBlock(0), block(0x11), replicaBlock(2), block(0x33), replicaBlock(4)]);
    expect(Buffer.concat(await c.read(0, 5)).equals(want)).toBe(true);
    const into = Buffer.alloc(5 * BS);
    await c.read(0, 5, into);
    expect(into.equals(want)).toBe(true);
    expect(Buffer.concat(await c.read(3, 1)).equals(block(0x33))).toBe(true);

    await pool.checkpointClone(c);
    expect(c.deferredBlocks).toBe(0);
    expect(pool.deferredBlocks).toBe(0);
    // The clone's first two data blocks, in allocation order.
    expect(fileBytes(c.dataPath).equals(Buffer.concat([block(0x11), block(0x33)]))).toBe(true);
    expect(Buffer.concat(await c.read(0, 5)).equals(want)).toBe(true);
  });

  it('keeps a later write to a deferred block and never lets the older copy reach the file', async () => {
    const c = engine.clone(ID);
    await c.write(7, block(0x01));
    await c.flush();
    await c.write(7, block(0x02)); // same block, new copy; the first one stays with the journal
    expect(Buffer.concat(await c.read(7, 1)).equals(block(0x02))).toBe(true);
    await c.flush();
    await engine.pool('p').checkpointClone(c);
    expect(fileBytes(c.dataPath).equals(block(0x02))).toBe(true);
  });

  it('writes deferred blocks out before a large flush syncs the data file', async () => {
    const c = engine.clone(ID);
    for (let lba = 0; lba < 10; lba++) await c.write(lba, block(lba + 1));
    expect(c.deferredBlocks).toBe(10);
    // Past the small-flush limit: every earlier deferred block goes to the file first.
    for (let lba = 10; lba < 40; lba++) await c.write(lba, block(lba + 1));
    await c.flush();
    expect(c.deferredBlocks).toBe(0);
    expect(engine.pool('p').deferredBlocks).toBe(0);
    const want = Buffer.concat(Array.from({ length: 40 }, (_, i) => block(i + 1)));
    expect(fileBytes(c.dataPath).equals(want)).toBe(true);
    expect(Buffer.concat(await c.read(0, 40)).equals(want)).toBe(true);
  });

  it('writes past the small-flush limit straight to the data file and reads them back after a reopen', async () => {
    const c = engine.clone(ID);
    for (let lba = 0; lba < 33; lba++) await c.write(200 - lba, block(lba)); // 33 dirty blocks: past the limit
    expect(c.deferredBlocks).toBe(0);
    expect(fileBytes(c.dataPath).length).toBe(33 * BS);
    await c.write(50, block(0x50));
    await c.write(50, block(0x51));
    expect(Buffer.concat(await c.read(49, 3)).equals(Buffer.concat([replicaBlock(49), block(0x51), replicaBlock(51)]))).toBe(true);
    await c.flush();
    await engine.close();
    engine = new Engine({ replicaCacheBytes: 1024 * 1024, journalBytes: 1024 * 1024 });
    await engine.openPool({ id: 'p', path: path.join(dir, 'pool') }, [{ id: ID, replica: replica() }]);
    const d = engine.clone(ID);
    expect(Buffer.concat(await d.read(50, 1)).equals(block(0x51))).toBe(true);
    expect(Buffer.concat(await d.read(200 - 32, 1)).equals(block(32))).toBe(true);
  });

  it('forgets deferred blocks that are deallocated, reset or deleted', async () => {
    const c = engine.clone(ID);
    const pool = engine.pool('p');
    await c.write(5, block(0x55));
    await c.flush();
    await c.writeZeroes(5, 1);
    expect(c.deferredBlocks).toBe(0);
    expect(Buffer.concat(await c.read(5, 1)).equals(block(0))).toBe(true);
    await c.flush();

    for (let lba = 0; lba < 20; lba++) await c.write(100 + lba, block(lba));
    await c.flush();
    expect(c.deferredBlocks).toBe(20);
    await c.writeZeroes(105, 10);
    expect(c.deferredBlocks).toBe(10);
    expect(Buffer.concat(await c.read(104, 2)).equals(Buffer.concat([block(4), block(0)]))).toBe(true);
    await c.flush();

    await c.write(9, block(0x99));
    await c.flush();
    expect(pool.deferredBlocks).toBe(c.deferredBlocks);
    await c.reset();
    expect(c.deferredBlocks).toBe(0);
    expect(pool.deferredBlocks).toBe(0);
    expect(Buffer.concat(await c.read(9, 1)).equals(replicaBlock(9))).toBe(true);

    await c.write(9, block(0x98));
    await c.flush();
    expect(pool.deferredBlocks).toBe(1);
    await engine.deleteClone(ID);
    expect(pool.deferredBlocks).toBe(0);
  });

  it('keeps multi-block writes within the small-flush limit in memory too', async () => {
    const c = engine.clone(ID);
    const data = Buffer.concat(Array.from({ length: 8 }, (_, i) => block(0xa0 + i)));
    await c.write(20, data);
    await c.flush();
    expect(c.deferredBlocks).toBe(8);
    expect(Buffer.concat(await c.read(18, 12)).equals(Buffer.concat([replicaBlock(18), replicaBlock(19), data, replicaBlock(28), replicaBlock(29)]))).toBe(true);
    for (let i = 0; i < 8; i++) expect(Buffer.concat(await c.read(20 + i, 1)).equals(block(0xa0 + i))).toBe(true);
  });
});
