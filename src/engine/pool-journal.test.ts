// The pool journal on its own: group commit, direct commits padded to the device's block size, the
// page-cache path, and what a reopen gives back.
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { allocateDirectBuffer, openDirect } from './direct-io.ts';
import { decodeRecord, encodeRecord, RECORD_TYPE_MAP, RECORD_TYPE_PAD, type DecodedRecord } from './journal-record.ts';
import { JOURNAL_HEADER_BYTES, PoolJournal } from './pool-journal.ts';

const BS = 4096;
const MiB = 1024 * 1024;

function cloneId(i: number): string {
  return `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
}

/** A map record of clone i with one 4 KiB payload filled with `fill`. */
function payloadRecord(i: number, lsn: number, fill: number): { buffers: Buffer[]; length: number } {
  return encodeRecord(RECORD_TYPE_MAP, lsn, cloneId(i), [{ lba: lsn, n: 1, value: lsn }], [Buffer.alloc(BS, fill)]);
}

/** Every record of the file's current epoch, pads included, with the offset it starts at. */
function scan(file: string): Array<DecodedRecord & { offset: number }> {
  const buf = fs.readFileSync(file);
  const epoch = buf.readDoubleLE(8);
  const out: Array<DecodedRecord & { offset: number }> = [];
  let off = JOURNAL_HEADER_BYTES;
  for (let i = 0; i < 1_000_000 && off < buf.length; i++) {
    const rec = decodeRecord(buf, off, epoch);
    if (!rec) break;
    out.push({ ...rec, offset: off });
    off += rec.length;
  }
  return out;
}

describe('pool journal', () => {
  let dir: string;
  let journal: PoolJournal | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-journal-'));
  });

  afterEach(async () => {
    journal?.close();
    journal = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function open(options: { directIo?: boolean; bytes?: number } = {}): Promise<{ journal: PoolJournal; records: DecodedRecord[] }> {
    journal?.close();
    journal = new PoolJournal(path.join(dir, 'journal'), options.bytes ?? 8 * MiB, { directIo: options.directIo });
    const records = await journal.open();
    await journal.start();
    return { journal, records };
  }

  it('finds an aligned start in a new buffer and the granularity of direct writes', () => {
    const staging = allocateDirectBuffer(dir, 64 * 1024);
    expect(staging).toBeDefined();
    expect([512, 4096]).toContain(staging!.granularity);
    const file = path.join(dir, 'probe-check');
    fs.writeFileSync(file, Buffer.alloc(64 * 1024));
    const fd = openDirect(file)!;
    try {
      staging!.buffer.fill(0x5a, 0, 8192);
      expect(fs.writeSync(fd, staging!.buffer, 0, 8192, 8192)).toBe(8192);
      expect(fs.writeSync(fd, staging!.buffer, 0, staging!.granularity, staging!.granularity)).toBe(staging!.granularity);
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.readFileSync(file).subarray(8192, 16384).equals(Buffer.alloc(8192, 0x5a))).toBe(true);
    // The probe leaves nothing behind.
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('.direct-probe'))).toEqual([]);
  });

  it('writes each commit as one direct write that ends on a device block boundary', async () => {
    const { journal } = await open();
    expect(journal.direct).toBe(true);
    // Three bursts of different sizes: each is one commit, padded to the boundary.
    for (const [burst, n] of [
      [0, 3],
      [1, 1],
      [2, 17],
    ]) {
      await Promise.all(
        Array.from({ length: n }, (_, k) => {
          const r = payloadRecord(k, burst * 100 + k + 1, burst * 16 + k);
          return journal.append(r.buffers, r.length);
        }),
      );
    }
    expect(journal.commits).toBe(3);
    const records = scan(path.join(dir, 'journal', '0.jnl'));
    const pads = records.filter((r) => r.type === RECORD_TYPE_PAD);
    expect(records.length - pads.length).toBe(21);
    // Every commit ends with a pad (4,200-byte records never fill a block exactly) on a boundary.
    expect(pads.length).toBe(3);
    for (const p of pads) expect((p.offset + p.length) % 512).toBe(0);
    expect(journal.bytesWritten % 512).toBe(0);
  });

  it('gives back every committed record, in order and without pads, after a reopen', async () => {
    const { journal } = await open();
    const first = Array.from({ length: 40 }, (_, k) => payloadRecord(k % 5, k + 1, k));
    await Promise.all(first.slice(0, 25).map((r) => journal.append(r.buffers, r.length)));
    await Promise.all(first.slice(25).map((r) => journal.append(r.buffers, r.length)));
    journal.close();
    const again = new PoolJournal(path.join(dir, 'journal'), 8 * MiB);
    const records = await again.open();
    again.close();
    expect(records.map((r) => r.lsn)).toEqual(first.map((_, k) => k + 1));
    expect(records.every((r) => r.type === RECORD_TYPE_MAP)).toBe(true);
    expect(records[7].payloads[0].equals(Buffer.alloc(BS, 7))).toBe(true);
    expect(records[39].cloneId).toBe(cloneId(39 % 5));
  });

  it('stops a replay at a torn direct commit and keeps the commits before it', async () => {
    const { journal } = await open();
    for (let c = 0; c < 3; c++) {
      await Promise.all([0, 1].map((k) => {
        const r = payloadRecord(k, c * 2 + k + 1, c);
        return journal.append(r.buffers, r.length);
      }));
    }
    journal.close();
    const file = path.join(dir, 'journal', '0.jnl');
    const onDisk = scan(file).filter((r) => r.type !== RECORD_TYPE_PAD);
    // Tear the second record of the last commit (a byte of its payload).
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([0xee]), 0, 1, onDisk[5].offset + 200);
    fs.closeSync(fd);
    const again = new PoolJournal(path.join(dir, 'journal'), 8 * MiB);
    const records = await again.open();
    again.close();
    expect(records.map((r) => r.lsn)).toEqual([1, 2, 3, 4, 5]);
  });

  it('commits through the page cache with fdatasync when direct I/O is off, without pads', async () => {
    const { journal } = await open({ directIo: false });
    expect(journal.direct).toBe(false);
    const recs = Array.from({ length: 9 }, (_, k) => payloadRecord(k, k + 1, k));
    await Promise.all(recs.map((r) => journal.append(r.buffers, r.length)));
    expect(journal.commits).toBe(1);
    expect(journal.bytesWritten).toBe(recs.reduce((n, r) => n + r.length, 0));
    const records = scan(path.join(dir, 'journal', '0.jnl'));
    expect(records.map((r) => r.type)).toEqual(Array(9).fill(RECORD_TYPE_MAP));
    journal.close();
    // A journal written without direct I/O opens with it, and the other way round.
    const { records: replayed } = await open();
    expect(replayed.map((r) => r.lsn)).toEqual(recs.map((_, k) => k + 1));
  });

  it('stops accepting records after a failed commit and keeps what was committed before it', async () => {
    for (const directIo of [true, false]) {
      const sub = path.join(dir, `stop-${directIo}`);
      const j = new PoolJournal(sub, 8 * MiB, { directIo });
      await j.open();
      await j.start();
      const first = payloadRecord(1, 1, 0x11);
      await j.append(first.buffers, first.length);
      // The device fails: every descriptor of the journal's files is closed under it (EBADF).
      for (const fd of fs.readdirSync('/proc/self/fd')) {
        let target = '';
        try {
          target = fs.readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          continue;
        }
        if (target.startsWith(path.join(sub, ''))) fs.closeSync(Number(fd));
      }
      const second = payloadRecord(1, 2, 0x22);
      const third = payloadRecord(2, 3, 0x33);
      const results = await Promise.allSettled([j.append(second.buffers, second.length), j.append(third.buffers, third.length)]);
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
      expect(j.failed).toBe(true);
      // Later appends are refused at once, naming the first failure; nothing more is written.
      const later = payloadRecord(3, 4, 0x44);
      await expect(j.append(later.buffers, later.length)).rejects.toThrow(/stopped after a failed write \(EBADF.*restart Thicket/);
      // (Its descriptors are gone: it is not closed again.) A new open replays what was committed.
      const again = new PoolJournal(sub, 8 * MiB, { directIo });
      const records = await again.open();
      again.close();
      expect(records.map((r) => r.lsn)).toEqual([1]);
    }
  });

  it('writes a record larger than the staging buffer through the page cache, padded for the direct writes after it', async () => {
    const { journal } = await open({ bytes: 48 * MiB });
    expect(journal.direct).toBe(true);
    // 9 MiB: more than the 8 MiB staging buffer, less than a quarter of the file.
    const n = (9 * MiB) / BS;
    const big = encodeRecord(
      RECORD_TYPE_MAP,
      1,
      cloneId(1),
      Array.from({ length: n }, (_, k) => ({ lba: k, n: 1, value: k })),
      Array.from({ length: n }, (_, k) => Buffer.alloc(BS, k & 0xff)),
    );
    await journal.append(big.buffers, big.length);
    const small = payloadRecord(2, 2, 0x42);
    await journal.append(small.buffers, small.length);
    expect(journal.commits).toBe(2);
    const onDisk = scan(path.join(dir, 'journal', '0.jnl'));
    expect(onDisk.map((r) => r.type)).toEqual([RECORD_TYPE_MAP, RECORD_TYPE_PAD, RECORD_TYPE_MAP, RECORD_TYPE_PAD]);
    expect(onDisk[2].offset % 512).toBe(0);
    expect(onDisk[2].payloads[0].equals(Buffer.alloc(BS, 0x42))).toBe(true);
  });
});
