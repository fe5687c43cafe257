// Small flushes journal the 4 KiB payloads of their blocks (from copies kept at write time). Recovery
// must be able to rebuild the blocks from the journal alone: these tests spoil the data file before
// reopening, so the blocks read back come from journalled payloads.
import fs from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Engine } from './engine.ts';

const BS = 4096;
const ID = '00000000-0000-4000-8000-000000000001';

function block(fill: number): Buffer {
  return Buffer.alloc(BS, fill);
}

describe('small flushes journal the latest data of each block', () => {
  let dir: string;
  let engine: Engine;
  const replica = () => ({ id: 'r1', path: path.join(dir, 'replica.img'), sizeBytes: 64 * BS });

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-payload-'));
    await writeFile(path.join(dir, 'replica.img'), Buffer.alloc(64 * BS, 0xee));
  });

  afterEach(async () => {
    await engine?.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  /** Closes like a crash, lets `damage` spoil the data file, reopens: damaged blocks must come from the journal. */
  async function reopenAfter(damage: (dataPath: string) => void): Promise<void> {
    const c = engine.clone(ID);
    const dataPath = c.dataPath;
    c.close(); // a crash: nothing flushed or checkpointed on the way out
    damage(dataPath);
    engine = new Engine({ journalBytes: 1024 * 1024 });
    await engine.openPool({ id: 'p', path: path.join(dir, 'pool') }, [{ id: ID, replica: replica() }]);
  }

  it('after overwrites, write zeroes and rewrites, and from a caller that reuses its buffer', async () => {
    engine = new Engine({ journalBytes: 1024 * 1024 });
    await engine.openPool({ id: 'p', path: path.join(dir, 'pool') }, [{ id: ID, replica: replica() }]);
    const c = engine.clone(ID);
    const buf = Buffer.alloc(BS);
    await c.write(1, buf.fill(0xa1));
    await c.write(1, buf.fill(0xb1)); // overwrite in place, same buffer object
    await c.write(2, buf.fill(0xc2));
    await c.writeZeroes(2, 1);
    await c.write(2, buf.fill(0xd2));
    await c.write(3, [buf.fill(0xe3).subarray(0, 1000), Buffer.alloc(BS - 1000, 0xe3)]);
    await c.flush();
    buf.fill(0x00); // the caller reuses its buffer after the flush
    await c.write(4, block(0xf4), { fua: true });
    await reopenAfter((dataPath) => fs.truncateSync(dataPath, 0));
    const d = engine.clone(ID);
    expect(Buffer.concat(await d.read(1, 4)).equals(Buffer.concat([block(0xb1), block(0xd2), block(0xe3), block(0xf4)]))).toBe(true);
  });

  it('when more blocks than the payload limit were dirty and some were rewritten after', async () => {
    engine = new Engine({ journalBytes: 1024 * 1024 });
    await engine.openPool({ id: 'p', path: path.join(dir, 'pool') }, [{ id: ID, replica: replica() }]);
    const c = engine.clone(ID);
    // 40 dirty blocks: copies are dropped past 32 and this flush syncs the data file instead.
    for (let lba = 0; lba < 40; lba++) await c.write(lba, block(lba));
    await c.flush();
    await c.write(5, block(0x55));
    await c.write(6, block(0x66));
    await c.flush();
    // Blocks 0..39 went to data blocks 0..39 in order; spoil 5 and 6, whose latest data is journalled.
    await reopenAfter((dataPath) => {
      const fd = fs.openSync(dataPath, 'r+');
      fs.writeSync(fd, Buffer.alloc(2 * BS, 0x99), 0, 2 * BS, 5 * BS);
      fs.closeSync(fd);
    });
    const d = engine.clone(ID);
    const want = Array.from({ length: 40 }, (_, lba) => block(lba === 5 ? 0x55 : lba === 6 ? 0x66 : lba));
    expect(Buffer.concat(await d.read(0, 40)).equals(Buffer.concat(want))).toBe(true);
  });
});
