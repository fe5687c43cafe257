import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Engine } from './engine.ts';
import { LbaOutOfRangeError, OutOfSpaceError } from './errors.ts';

const BS = 4096;
const REPLICA_BLOCKS = 64;

function concat(views: Buffer[]): Buffer {
  return Buffer.concat(views);
}

function block(fill: number): Buffer {
  return Buffer.alloc(BS, fill);
}

describe('Engine', () => {
  let dir: string;
  let replicaPath: string;
  let replicaBytes: Buffer;
  let engine: Engine;
  const poolId = 'pool-a';

  const replica = () => ({ id: 'r1', path: replicaPath, sizeBytes: REPLICA_BLOCKS * BS });

  async function open(clones: Array<{ id: string; sizeBytes?: number }> = [], options: { journalBytes?: number } = {}) {
    engine = new Engine({ replicaCacheBytes: 1024 * 1024, journalBytes: options.journalBytes ?? 1024 * 1024 });
    return engine.openPool({ id: poolId, path: path.join(dir, 'pool') }, clones.map((c) => ({ ...c, replica: replica() })));
  }

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-engine-'));
    replicaBytes = Buffer.alloc(REPLICA_BLOCKS * BS);
    for (let i = 0; i < REPLICA_BLOCKS; i++) replicaBytes.fill(0x80 + (i % 64), i * BS, (i + 1) * BS);
    replicaPath = path.join(dir, 'replica.img');
    await writeFile(replicaPath, replicaBytes);
    fs.chmodSync(replicaPath, 0o444);
  });

  afterEach(async () => {
    await engine?.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the replica through a new clone and writes nothing when creating it', async () => {
    await open();
    const c = engine.createClone({ id: '00000000-0000-0000-0000-000000000001', poolId, replica: replica() });
    expect(fs.existsSync(c.dir)).toBe(false);
    expect(concat(await c.read(0, REPLICA_BLOCKS))).toEqual(replicaBytes);
  });

  it('reads a span of owned, inherited and zero blocks in order', async () => {
    await open();
    const c = engine.createClone({ id: '00000000-0000-0000-0000-000000000001', poolId, replica: replica(), sizeBytes: (REPLICA_BLOCKS + 8) * BS });
    await c.write(2, [block(1), block(2)]);
    await c.writeZeroes(5, 2);
    const got = concat(await c.read(0, REPLICA_BLOCKS + 4));
    const want = Buffer.concat([
      replicaBytes.subarray(0, 2 * BS),
      block(1),
      block(2),
      replicaBytes.subarray(4 * BS, 5 * BS),
      Buffer.alloc(2 * BS),
      replicaBytes.subarray(7 * BS),
      Buffer.alloc(4 * BS),
    ]);
    expect(got.equals(want)).toBe(true);
  });

  it('returns LBA Out of Range when slba+nlb exceeds capacity', async () => {
    await open();
    const c = engine.createClone({ id: '00000000-0000-0000-0000-000000000001', poolId, replica: replica() });
    await expect(c.read(REPLICA_BLOCKS - 1, 2)).rejects.toBeInstanceOf(LbaOutOfRangeError);
    await expect(c.write(REPLICA_BLOCKS, block(1))).rejects.toBeInstanceOf(LbaOutOfRangeError);
  });

  it('never changes the replica file', async () => {
    await open();
    const before = createHash('sha256').update(fs.readFileSync(replicaPath)).digest('hex');
    const c = engine.createClone({ id: '00000000-0000-0000-0000-000000000001', poolId, replica: replica() });
    for (let i = 0; i < REPLICA_BLOCKS; i += 3) await c.write(i, block(7));
    await c.flush();
    await c.writeZeroes(0, REPLICA_BLOCKS);
    await c.reset();
    expect(createHash('sha256').update(fs.readFileSync(replicaPath)).digest('hex')).toBe(before);
  });

  it('keeps flushed writes, deallocations and resets across a reopen', async () => {
    const id = '00000000-0000-0000-0000-000000000001';
    await open([{ id }]);
    const c = engine.clone(id);
    await c.write(1, block(0x11));
    await c.write(10, [block(0x22), block(0x23)], { fua: true });
    await c.writeZeroes(20, 4);
    await c.flush();
    // Not flushed: may or may not survive; here we close cleanly, which flushes.
    engine.clone(id).close();
    engine = new Engine({ journalBytes: 1024 * 1024 });
    await engine.openPool({ id: poolId, path: path.join(dir, 'pool') }, [{ id, replica: replica() }]);
    const d = engine.clone(id);
    expect(concat(await d.read(1, 1)).equals(block(0x11))).toBe(true);
    expect(concat(await d.read(10, 2)).equals(Buffer.concat([block(0x22), block(0x23)]))).toBe(true);
    expect(concat(await d.read(20, 4)).equals(Buffer.alloc(4 * BS))).toBe(true);
    expect(concat(await d.read(0, 1)).equals(replicaBytes.subarray(0, BS))).toBe(true);
    await d.reset();
    await engine.close();
    engine = new Engine({ journalBytes: 1024 * 1024 });
    await engine.openPool({ id: poolId, path: path.join(dir, 'pool') }, [{ id, replica: replica() }]);
    expect(concat(await engine.clone(id).read(0, REPLICA_BLOCKS)).equals(replicaBytes)).toBe(true);
  });

  it('survives many journal switches with checkpoints', async () => {
    const ids = Array.from({ length: 4 }, (_, i) => `00000000-0000-0000-0000-00000000000${i}`);
    await open(ids.map((id) => ({ id })), { journalBytes: 256 * 1024 });
    const model = new Map<string, Buffer>();
    for (let round = 0; round < 200; round++) {
      const id = ids[round % ids.length];
      const lba = (round * 7) % REPLICA_BLOCKS;
      const data = randomBytes(BS);
      await engine.clone(id).write(lba, data, { fua: true });
      model.set(`${id}:${lba}`, data);
    }
    for (const p of engine.pools.values()) await p.settle();
    for (const [key, data] of model) {
      const [id, lba] = key.split(':');
      expect(concat(await engine.clone(id).read(Number(lba), 1)).equals(data)).toBe(true);
    }
    await engine.close();
    engine = new Engine({ journalBytes: 256 * 1024 });
    await engine.openPool({ id: poolId, path: path.join(dir, 'pool') }, ids.map((id) => ({ id, replica: replica() })));
    for (const [key, data] of model) {
      const [id, lba] = key.split(':');
      expect(concat(await engine.clone(id).read(Number(lba), 1)).equals(data)).toBe(true);
    }
  });

  it('fails only writes that need new blocks when the pool is full', async () => {
    const id = '00000000-0000-0000-0000-000000000001';
    await open([{ id }]);
    const pool = engine.pool(poolId);
    const c = engine.clone(id);
    await c.write(0, [block(1), block(2)]);
    pool.capacityBytes = 2 * pool.journal.capacityBytes + 2 * BS;
    await expect(c.write(5, block(3))).rejects.toBeInstanceOf(OutOfSpaceError);
    await c.write(1, block(9));
    expect(concat(await c.read(0, 2)).equals(Buffer.concat([block(1), block(9)]))).toBe(true);
    expect(concat(await c.read(5, 1)).equals(replicaBytes.subarray(5 * BS, 6 * BS))).toBe(true);
  });

  it('creates 10,000 clones without touching the disk', async () => {
    await open();
    const before = fs.readdirSync(path.join(dir, 'pool', 'clones')).length;
    const inputs = Array.from({ length: 10_000 }, (_, i) => ({
      id: `00000000-0000-0000-0000-${String(i).padStart(12, '0')}`,
      poolId,
      replica: replica(),
    }));
    engine.createClones(inputs);
    expect(engine.cloneCount).toBe(10_000);
    expect(fs.readdirSync(path.join(dir, 'pool', 'clones')).length).toBe(before);
  });

  it('frees a deleted clone at once and removes its files', async () => {
    const id = '00000000-0000-0000-0000-000000000001';
    await open([{ id }]);
    const c = engine.clone(id);
    await c.write(0, block(1), { fua: true });
    expect(fs.existsSync(c.dir)).toBe(true);
    await engine.deleteClone(id);
    expect(fs.existsSync(c.dir)).toBe(false);
    expect(engine.pool(poolId).usage().cloneDataBytes).toBe(0);
  });
});
