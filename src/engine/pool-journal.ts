// The pool journal: two preallocated files used in turn. Flushes of all clones of a pool append their
// records here and share one fdatasync per batch (group commit). When the active file is half full the
// journal switches to the other one and the pool checkpoints every clone that has records in the old
// file, after which the old file may be overwritten. Records of an older epoch are never replayed.
//
// Where the file system allows it, a commit is one O_DIRECT | O_DSYNC write from an aligned staging
// buffer (direct-io.ts), padded with a padding record to the device's block size; elsewhere it is a
// writev into the page cache and an fdatasync.
import fs from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { allocateDirectBuffer, openDirect, type DirectBuffer } from './direct-io.ts';
import { fdatasync } from './fs-callbacks.ts';
import {
  decodeRecord,
  RECORD_HEADER_BYTES,
  RECORD_TYPE_PAD,
  sealRecord,
  sealRecordAt,
  writePadRecord,
  type DecodedRecord,
} from './journal-record.ts';

export const JOURNAL_HEADER_BYTES = 4096;
export const DEFAULT_JOURNAL_BYTES = 32 * 1024 * 1024;
/** Largest direct commit: a flush storm of 500 clones is about 2 MiB. Larger batches are split. */
const MAX_DIRECT_COMMIT_BYTES = 8 * 1024 * 1024;
const MAGIC = 'THKJNL01';

interface JournalFile {
  index: 0 | 1;
  path: string;
  fd: number;
  /** The same file opened O_DIRECT | O_DSYNC, while the journal commits with direct writes. */
  directFd: number | undefined;
  epoch: number;
  /** Next append position. */
  offset: number;
  /** True while it holds records that checkpoints have not yet made obsolete. */
  inUse: boolean;
  /** Existed before this open: its page cache may hold large folios from reads (see #preallocate). */
  preexisting: boolean;
}

interface Pending {
  buffers: Buffer[];
  length: number;
  resolve: (journal: 0 | 1) => void;
  reject: (err: unknown) => void;
}

function writevAt(fd: number, buffers: Buffer[], position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.writev(fd, buffers, position, (err, n) => (err ? reject(err) : resolve(n))));
}

function writeAt(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buffer, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

function encodeHeader(epoch: number): Buffer {
  const h = Buffer.alloc(JOURNAL_HEADER_BYTES);
  h.write(MAGIC, 0, 'latin1');
  h.writeDoubleLE(epoch, 8);
  h.writeUInt32LE(crc32c(h.subarray(0, 16)) >>> 0, 16);
  return h;
}

function decodeHeader(h: Buffer): number | undefined {
  if (h.length < 20 || h.toString('latin1', 0, 8) !== MAGIC) return undefined;
  if ((crc32c(h.subarray(0, 16)) >>> 0) !== h.readUInt32LE(16)) return undefined;
  return h.readDoubleLE(8);
}

export class PoolJournal {
  readonly capacityBytes: number;
  #dir: string;
  #files: JournalFile[] = [];
  #active!: JournalFile;
  #queue: Pending[] = [];
  #committing = false;
  #waitForFree: Array<() => void> = [];
  /** Called when the active file passes half full and the other file is free: the pool should checkpoint. */
  onSwitch: (oldIndex: 0 | 1) => void = () => {};
  commits = 0;
  bytesWritten = 0;
  #directIo: boolean;
  /**
   * Set by the first failed commit; from then on every append is refused. After a failed write or
   * fdatasync nothing says what reached the file: a batch written half-way can leave intact records
   * where the next commit would end, which recovery would then replay after newer ones, and Linux may
   * report a writeback error only once (a retried fdatasync can succeed without the data). So the
   * journal stops, as PostgreSQL does after a failed fsync; a restart replays what is intact.
   */
  #failure: Error | undefined;
  /** Where commits are assembled for direct writes; undefined: commits go through the page cache. */
  #staging: DirectBuffer | undefined;

  constructor(dir: string, capacityBytes = DEFAULT_JOURNAL_BYTES, options: { directIo?: boolean } = {}) {
    this.#dir = dir;
    this.capacityBytes = capacityBytes;
    this.#directIo = options.directIo ?? true;
  }

  /** Whether commits are direct writes (false where the file system refuses O_DIRECT, or when disabled). */
  get direct(): boolean {
    return this.#staging !== undefined;
  }

  /** Room a commit may need beyond its records: a padding record up to the next direct-write boundary. */
  get #padRoom(): number {
    return this.#staging ? 2 * this.#staging.granularity : 0;
  }

  get activeIndex(): 0 | 1 {
    return this.#active.index;
  }

  /**
   * Opens (creating and preallocating if needed) both files and returns their intact records, oldest
   * epoch first, for replay. Call start() once replay and the recovery checkpoint are done.
   */
  async open(): Promise<DecodedRecord[]> {
    await mkdir(this.#dir, { recursive: true });
    const records: Array<{ epoch: number; list: DecodedRecord[] }> = [];
    for (const index of [0, 1] as const) {
      const file = path.join(this.#dir, `${index}.jnl`);
      let fd: number;
      let created = false;
      try {
        fd = fs.openSync(file, 'r+');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        fd = fs.openSync(file, 'w+', 0o600);
        created = true;
      }
      const size = fs.fstatSync(fd).size;
      if (created || size < this.capacityBytes) await this.#preallocate(fd, size);
      const head = Buffer.alloc(JOURNAL_HEADER_BYTES);
      fs.readSync(fd, head, 0, JOURNAL_HEADER_BYTES, 0);
      const epoch = decodeHeader(head) ?? 0;
      this.#files.push({ index, path: file, fd, directFd: undefined, epoch, offset: JOURNAL_HEADER_BYTES, inUse: false, preexisting: !created });
      if (epoch > 0) {
        const list: DecodedRecord[] = [];
        const buf = Buffer.allocUnsafe(this.capacityBytes);
        const n = fs.readSync(fd, buf, 0, this.capacityBytes, 0);
        let off = JOURNAL_HEADER_BYTES;
        for (let i = 0; i < 10_000_000 && off < n; i++) {
          const rec = decodeRecord(buf.subarray(0, n), off, epoch);
          if (!rec) break;
          if (rec.type !== RECORD_TYPE_PAD) list.push(rec);
          off += rec.length;
        }
        records.push({ epoch, list });
      }
    }
    if (this.#directIo) this.#openDirect();
    records.sort((a, b) => a.epoch - b.epoch);
    return records.flatMap((r) => r.list);
  }

  #openDirect(): void {
    const staging = allocateDirectBuffer(this.#dir, Math.min(this.capacityBytes / 4, MAX_DIRECT_COMMIT_BYTES) + 2 * 4096);
    if (!staging || JOURNAL_HEADER_BYTES % staging.granularity !== 0) return;
    for (const f of this.#files) f.directFd = openDirect(f.path);
    if (this.#files.every((f) => f.directFd !== undefined)) {
      this.#staging = staging;
      return;
    }
    for (const f of this.#files) if (f.directFd !== undefined) fs.closeSync(f.directFd);
    for (const f of this.#files) f.directFd = undefined;
  }

  /**
   * Fills the file with zeroes so appends never need new space: a full pool must still be able to flush.
   * In 4 KiB writes: large writes (or sequential reads) fill the page cache with large folios, and then
   * every small append dirties a whole folio (perf-limits.md §2b): measured here, a 4 KiB record +
   * fdatasync cost about 80 µs of CPU and was charged about 1 MiB of write_bytes after a 1 MiB-chunk
   * preallocation, against about 45 µs and 8 KiB after a 4 KiB-chunk one.
   */
  async #preallocate(fd: number, from: number): Promise<void> {
    const chunk = Buffer.alloc(4096);
    // Start exactly at the current end: a file cut short (a torn tail, or one written with a smaller
    // journalBytes) still holds records before `from`, and rounding down to a chunk boundary used to zero
    // them, header included, losing every acknowledged record in the file. Later chunks are aligned.
    for (let pos = from; pos < this.capacityBytes; pos += chunk.length - (pos % chunk.length)) {
      fs.writeSync(fd, chunk, 0, Math.min(chunk.length - (pos % chunk.length), this.capacityBytes - pos), pos);
    }
    await fdatasync(fd);
  }

  /** Starts a fresh epoch on file 0 after recovery; both files' old records are obsolete. */
  async start(): Promise<void> {
    const epoch = Math.max(this.#files[0].epoch, this.#files[1].epoch) + 1;
    // Files of an earlier run were read sequentially by open() (recovery), which leaves large folios in
    // the page cache and makes every later append slow (see #preallocate). Their records are obsolete
    // now (replayed and checkpointed, or of failed clones, which the new epoch drops either way), so cut
    // them and fill them again in 4 KiB writes: the cut drops their cached folios.
    for (const f of this.#files) {
      if (!f.preexisting) continue;
      fs.ftruncateSync(f.fd, 0);
      await this.#preallocate(f.fd, 0);
      f.preexisting = false;
    }
    await this.#activate(this.#files[0], epoch);
    // The other file's records are older than every checkpoint now; make sure they are never replayed.
    const other = this.#files[1];
    fs.writeSync(other.fd, Buffer.alloc(JOURNAL_HEADER_BYTES), 0, JOURNAL_HEADER_BYTES, 0);
    await fdatasync(other.fd);
    other.epoch = 0;
    other.inUse = false;
  }

  async #activate(file: JournalFile, epoch: number): Promise<void> {
    // Stale records after the header are harmless (their epoch differs), but an all-zero first record
    // slot makes a scan stop at once.
    fs.writeSync(file.fd, encodeHeader(epoch), 0, JOURNAL_HEADER_BYTES, 0);
    fs.writeSync(file.fd, Buffer.alloc(512), 0, 512, JOURNAL_HEADER_BYTES);
    await fdatasync(file.fd);
    file.epoch = epoch;
    file.offset = JOURNAL_HEADER_BYTES;
    file.inUse = true;
    this.#active = file;
  }

  get epoch(): number {
    return this.#active.epoch;
  }

  /** Marks a file's records obsolete (every clone with records in it has been checkpointed). */
  release(index: 0 | 1): void {
    if (this.#active.index === index) return;
    this.#files[index].inUse = false;
    for (const w of this.#waitForFree.splice(0)) w();
  }

  /**
   * Appends a record and resolves, with the file it went to, once it is durable. Records appended by
   * concurrent callers are written together and share one fdatasync.
   */
  append(buffers: Buffer[], length: number): Promise<0 | 1> {
    if (length > this.capacityBytes / 4) return Promise.reject(new Error(`journal record of ${length} bytes is too large`));
    if (this.#failure) return Promise.reject(this.#failedError());
    return new Promise((resolve, reject) => {
      this.#queue.push({ buffers, length, resolve, reject });
      if (!this.#committing) {
        // Start the commit after the current turn of the event loop: every clone that flushes in this
        // turn (a flush storm arrives as one burst of microtasks) joins the first batch and its write.
        // (Starting it early, once 1 MiB is queued, was measured with direct commits too: no gain.)
        this.#committing = true;
        setImmediate(() => void this.#commitLoop());
      }
    });
  }

  async #commitLoop(): Promise<void> {
    this.#committing = true;
    try {
      for (let round = 0; this.#queue.length > 0 && round < 1_000_000; round++) {
        // A batch is capped at a quarter of a file so it always fits after a switch, and to what the
        // staging buffer holds when commits are direct writes (a larger record goes alone, buffered).
        const staging = this.#staging;
        const cap = staging ? Math.min(this.capacityBytes / 4, staging.buffer.length - this.#padRoom) : this.capacityBytes / 4;
        let take = 0;
        let bytes = 0;
        while (take < this.#queue.length && (take === 0 || bytes + this.#queue[take].length <= cap)) {
          bytes += this.#queue[take].length;
          take++;
        }
        const batch = this.#queue.splice(0, take);
        try {
          await this.#ensureRoom(bytes + this.#padRoom);
          const file = this.#active;
          const written = staging && bytes <= cap ? await this.#commitDirect(file, batch, bytes, staging) : await this.#commitBuffered(file, batch, bytes);
          file.offset += written;
          this.commits++;
          this.bytesWritten += written;
          for (const p of batch) p.resolve(file.index);
        } catch (err) {
          this.#failure ??= err instanceof Error ? err : new Error(String(err));
          for (const p of batch) p.reject(err);
          for (const p of this.#queue.splice(0)) p.reject(this.#failedError());
        }
      }
    } finally {
      this.#committing = false;
    }
  }

  #failedError(): Error {
    return new Error(`the pool journal in ${this.#dir} stopped after a failed write (${this.#failure!.message}); restart Thicket to recover from it`, { cause: this.#failure });
  }

  /** Whether a commit has failed (the journal refuses appends until it is opened again). */
  get failed(): boolean {
    return this.#failure !== undefined;
  }

  /** One direct write of the batch's records copied into the staging buffer; durable when it returns. */
  async #commitDirect(file: JournalFile, batch: Pending[], bytes: number, staging: DirectBuffer): Promise<number> {
    const buf = staging.buffer;
    let off = 0;
    for (const p of batch) {
      const start = off;
      for (const b of p.buffers) {
        buf.set(b, off);
        off += b.length;
      }
      sealRecordAt(buf, start, p.length, file.epoch);
    }
    const total = bytes + this.#pad(bytes, buf, file.epoch);
    let done = 0;
    for (let i = 0; i < 100 && done < total; i++) {
      const n = await writeAt(file.directFd!, buf, done, total - done, file.offset + done);
      if (n <= 0) throw new Error('journal write returned 0 bytes');
      done += n;
    }
    return total;
  }

  /** writev into the page cache and fdatasync; padded like a direct commit when those are in use. */
  async #commitBuffered(file: JournalFile, batch: Pending[], bytes: number): Promise<number> {
    for (const p of batch) sealRecord(p.buffers, file.epoch);
    const buffers = batch.flatMap((p) => p.buffers);
    let total = bytes;
    if (this.#staging) {
      const pad = Buffer.alloc(2 * this.#staging.granularity);
      const n = this.#pad(bytes, pad, file.epoch, 0);
      if (n > 0) buffers.push(pad.subarray(0, n));
      total += n;
    }
    let written = 0;
    for (let i = 0; i < 100 && written < total; i++) {
      written += await writevAt(file.fd, written === 0 ? buffers : sliceBuffers(buffers, written), file.offset + written);
    }
    await fdatasync(file.fd);
    return total;
  }

  /**
   * Writes into `buf` (at `at`, by default right after `bytes` of records) the padding record that brings
   * a commit of `bytes` to the next direct-write boundary, and returns its length (0: none needed).
   */
  #pad(bytes: number, buf: Buffer, epoch: number, at = bytes): number {
    const g = this.#staging?.granularity ?? 0;
    if (g === 0 || bytes % g === 0) return 0;
    let n = g - (bytes % g);
    if (n < RECORD_HEADER_BYTES) n += g;
    writePadRecord(buf, at, n, epoch);
    return n;
  }

  async #ensureRoom(bytes: number): Promise<void> {
    const active = this.#active;
    const half = JOURNAL_HEADER_BYTES + (this.capacityBytes - JOURNAL_HEADER_BYTES) / 2;
    if (active.offset + bytes <= half) return;
    const other = this.#files[active.index === 0 ? 1 : 0];
    if (!other.inUse) {
      await this.#switchTo(other, active);
      return;
    }
    if (active.offset + bytes <= this.capacityBytes) return;
    // Both files hold live records: wait for the running checkpoint to release the other one.
    for (let i = 0; i < 10_000 && other.inUse; i++) await new Promise<void>((r) => this.#waitForFree.push(r));
    await this.#switchTo(other, active);
  }

  async #switchTo(next: JournalFile, old: JournalFile): Promise<void> {
    await this.#activate(next, old.epoch + 1);
    this.onSwitch(old.index);
  }

  close(): void {
    for (const f of this.#files) {
      fs.closeSync(f.fd);
      if (f.directFd !== undefined) fs.closeSync(f.directFd);
    }
    this.#files = [];
  }
}

function sliceBuffers(buffers: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}
