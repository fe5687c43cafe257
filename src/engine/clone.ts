// A linked clone: redirect-on-write over one replica at 4 KiB granularity. The first write to a block
// the clone shares with its replica goes to a new block in the clone's own data file; later writes to
// it overwrite in place. The replica is never written.
//
// Durability: writes land in the page cache; a flush (or a FUA write) makes the data and the map entries
// pointing to it durable before it resolves — small flushes by putting the 4 KiB payloads into the pool
// journal with the map entries (one shared fdatasync for every clone flushing at the time), larger ones
// by fdatasync of the data file and then the map entries.
//
// Deferred blocks: a write that the next flush will journal anyway (at most PAYLOAD_FLUSH_LIMIT_BLOCKS
// dirty blocks) is not written to the data file at once; its copy is kept in memory, served to reads,
// and written to the data file later, in block order and 4 KiB at a time: when the clone leaves the small-flush
// mode, or at the checkpoint that makes its journal record obsolete. Ceph BlueStore's deferred writes do
// the same through its WAL. The first write to a block extends the data file, which cost about 18 µs
// per 4 KiB write when 500 clones wrote and flushed at once (a new page-cache page in each of 500 files),
// several times the engine's own work; written back later, that cost is out of the flush's way.
//
// A block freed by an overwrite-free operation (write zeroes, deallocate, reset) is reused only after the
// change that freed it is durable.
import fs from 'node:fs';
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { BLOCK_SIZE_BYTES } from './block-size.ts';
import { BlockMap, MAP_ZERO } from './block-map.ts';
import { MAX_BLOCK } from './block-table.ts';
import { pushZeroes, sliceChunks, takeBlockCopy, takeBuffer, totalLength } from './buffers.ts';
import { CloneClosedError, CloneFailedError, IoError, LbaOutOfRangeError, OutOfSpaceError } from './errors.ts';
import { fdatasync, fsyncDir } from './fs-callbacks.ts';
import { encodeRecord, encodeRecordInto, RECORD_FLAG_DATA_SYNCED, RECORD_TYPE_MAP, RECORD_TYPE_RESET, uuidBytes, type MapEntry } from './journal-record.ts';
import type { ReplicaCache } from './replica-cache.ts';
import type { ReplicaImage } from './replica-image.ts';
import { QosLimiter, type QosLimits } from './token-bucket.ts';

/** Flushes with at most this many dirty blocks journal their payloads instead of syncing the data file. */
export const PAYLOAD_FLUSH_LIMIT_BLOCKS = 32;

const EMPTY = Buffer.alloc(0);

/** What a clone needs from its storage pool. */
export interface CloneHost {
  readonly clonesDir: string;
  readonly cache: ReplicaCache;
  /** Reserves room for n new data blocks or throws OutOfSpaceError. */
  reserveBlocks(n: number): void;
  releaseBlocks(n: number): void;
  appendRecord(buffers: Buffer[], length: number): Promise<0 | 1>;
  /** The number of blocks held in memory for a later write to a data file (deferred blocks) changed by delta. */
  adjustDeferredBlocks(delta: number): void;
}

export interface CloneStats {
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
  flushes: number;
}

export class Clone {
  readonly id: string;
  sizeBytes: number;
  capacityBlocks: number;
  replica: ReplicaImage;
  map = new BlockMap();
  qos: QosLimiter;
  /** Last assigned log sequence number; records at or below checkpointLsn are obsolete. */
  lsn = 0;
  checkpointLsn = 0;
  /** Journal files holding records of this clone newer than its checkpoint. */
  readonly journalRefs = new Set<0 | 1>();
  failed: string | undefined;
  closed = false;
  readonly stats: CloneStats = { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0, flushes: 0 };

  #host: CloneHost;
  #dataFd = -1;
  /** High-water mark of the data file, in blocks. */
  dataBlocks = 0;
  #free: number[] = [];
  #pendingFree: number[] = [];
  #mapOps: MapEntry[] = [];
  #dirtyWrites = new Map<number, number>();
  /**
   * While at most PAYLOAD_FLUSH_LIMIT_BLOCKS blocks are dirty, a copy of each one's latest data: the
   * journal payload of the small flush to come, so the flush need not read it back from the data file
   * (a read-back measured several µs per block in a flush storm). A copy exists only while it equals the
   * latest data written to its LBA: every write updates it or, past the limit, drops all copies; write
   * zeroes and reset drop them; a flush without a copy reads the block back as before.
   */
  #payloadCopies = new Map<number, Buffer>();
  /**
   * More than PAYLOAD_FLUSH_LIMIT_BLOCKS blocks were written since the last flush: the next flush syncs the
   * data file whatever else happens, so the dirty blocks are no longer tracked one by one (no Map entry
   * per write on the random-write path). #dirtyWrites and #payloadCopies stay empty while it is set.
   */
  #dirtyOverflow = false;
  #spareWrites: Map<number, number> | undefined;
  #spareCopies: Map<number, Buffer> | undefined;
  /** The clone id as the journal stores it (16 bytes). */
  #idBytes: Buffer;
  /**
   * Deferred blocks (see the top of this file): block number -> its latest data, not yet in the data
   * file. Copies are never changed after they are made (a journal write may still be sending one).
   * Empty whenever a write goes to the data file directly, so the file never has newer data than these.
   */
  #deferred = new Map<number, Buffer>();
  #dirNeedsSync = false;
  #flushTail: Promise<void> = Promise.resolve();
  #gate: Promise<void> | undefined;
  /** LSN of a RESET record appended but not yet applied to the map (0: none). */
  #resetLsn = 0;
  /** Counts applied resets: block numbers from before one mean nothing after it. */
  #resetGeneration = 0;

  constructor(host: CloneHost, id: string, replica: ReplicaImage, sizeBytes: number, qos: QosLimits = {}) {
    this.#host = host;
    this.id = id;
    this.replica = replica;
    this.sizeBytes = sizeBytes;
    this.capacityBlocks = Math.floor(sizeBytes / BLOCK_SIZE_BYTES);
    this.qos = new QosLimiter(qos);
    this.#idBytes = uuidBytes(id);
  }

  get dir(): string {
    return path.join(this.#host.clonesDir, this.id);
  }

  get dataPath(): string {
    return path.join(this.dir, 'data');
  }

  get mapPath(): string {
    return path.join(this.dir, 'map');
  }

  /** Blocks this clone owns (its unique data). */
  get ownedBlocks(): number {
    return this.map.owned.size;
  }

  get uniqueBytes(): number {
    return this.map.owned.size * BLOCK_SIZE_BYTES;
  }

  /** Bytes of the replica this clone still reads instead of owning. */
  get sharedBytes(): number {
    let ownedInReplica = 0;
    const limit = this.replica.blocks;
    if (this.map.owned.size > 0) for (const lba of this.map.owned.keys()) if (lba < limit) ownedInReplica++;
    let zeroInReplica = 0;
    for (const [s, e] of this.map.zero.intervals()) if (s < limit) zeroInReplica += Math.min(e, limit) - s;
    return Math.max(0, limit - ownedInReplica - zeroInReplica) * BLOCK_SIZE_BYTES;
  }

  setQos(limits: QosLimits): void {
    this.qos = new QosLimiter(limits);
  }

  #checkRange(slba: number, nlb: number): void {
    if (!Number.isInteger(slba) || !Number.isInteger(nlb) || slba < 0 || nlb < 1 || slba + nlb > this.capacityBlocks) {
      throw new LbaOutOfRangeError(slba, nlb, this.capacityBlocks);
    }
  }

  #assertUsable(): void {
    if (this.closed) throw new CloneClosedError(this.id);
    if (this.failed) throw new CloneFailedError(this.id, this.failed);
  }

  /** Waits for a reset in progress and for QoS; undefined when the call may go on at once. */
  #admit(bytes: number): Promise<void> | undefined {
    this.#assertUsable();
    if (this.#gate) return this.#gate.then(() => this.#admit(bytes));
    return this.qos.admit(bytes);
  }

  // ---- reads ----

  /**
   * Reads blocks [slba, slba+nlb). Without `into`: a list of views, owned blocks in new memory, inherited
   * ones views of the shared replica cache, zero blocks views of a shared zero buffer (never write into
   * those). With `into` (a buffer of at least nlb blocks the caller owns and reuses, e.g. one per command
   * slot): every block is read or copied into it and the result is the one view of it; no allocation, and
   * no fresh memory for the GC to reclaim, which is what makes small random reads cheap.
   */
  async read(slba: number, nlb: number, into?: Buffer): Promise<Buffer[]> {
    return this.readNowOrLater(slba, nlb, into);
  }

  /**
   * read() without a promise when nothing has to wait (no reset in progress, QoS admits it at once):
   * returns the views (or throws) at once, else a promise of them. The NVMe target's fast path.
   * `scratch` (without `into`): a buffer of at least nlb blocks the caller reuses once it is done with the
   * views; owned blocks are read into it at their offset instead of new memory, inherited and zero
   * blocks still come as views of the cache and the zero buffer (no copy).
   */
  readNowOrLater(slba: number, nlb: number, into?: Buffer, scratch?: Buffer): Buffer[] | Promise<Buffer[]> {
    this.#checkRange(slba, nlb);
    const wait = this.#admit(nlb * BLOCK_SIZE_BYTES);
    if (wait) {
      return wait.then(() => {
        this.#assertUsable();
        return this.readNow(slba, nlb, into, scratch);
      });
    }
    this.#assertUsable();
    return this.readNow(slba, nlb, into, scratch);
  }

  /** The synchronous part of a read: one device read per run of owned blocks (see read(), readNowOrLater()). */
  readNow(slba: number, nlb: number, into?: Buffer, scratch?: Buffer): Buffer[] {
    const bytes = nlb * BLOCK_SIZE_BYTES;
    if (into !== undefined && into.length < bytes) throw new RangeError(`read buffer of ${into.length} bytes is smaller than ${bytes}`);
    this.stats.readOps++;
    this.stats.readBytes += bytes;
    const map = this.map;
    const cache = this.#host.cache;
    if (into !== undefined) {
      const dest = into.length === bytes ? into : into.subarray(0, bytes);
      if (nlb === 1) {
        // The commonest request: no run list.
        const p = map.owned.size > 0 ? map.owned.get(slba) : undefined;
        if (p !== undefined) this.#readData(dest, p);
        else if (slba < this.replica.blocks && (map.zero.size === 0 || !map.zero.has(slba))) cache.copyTo(this.replica, slba, 1, dest);
        else dest.fill(0);
        return [dest];
      }
      for (const run of map.runs(slba, nlb, this.replica.blocks)) {
        const at = (run.lba - slba) * BLOCK_SIZE_BYTES;
        const part = dest.subarray(at, at + run.n * BLOCK_SIZE_BYTES);
        if (run.kind === 'owned') this.#readData(part, run.pblock);
        else if (run.kind === 'inherit') cache.copyTo(this.replica, run.lba, run.n, part);
        else part.fill(0);
      }
      return [dest];
    }
    const out: Buffer[] = [];
    if (scratch !== undefined && scratch.length < bytes) scratch = undefined;
    if (nlb === 1) {
      // The commonest request: no run list.
      const p = map.owned.size > 0 ? map.owned.get(slba) : undefined;
      if (p !== undefined) {
        const buf = scratch === undefined ? takeBuffer(BLOCK_SIZE_BYTES) : scratch.length === BLOCK_SIZE_BYTES ? scratch : scratch.subarray(0, BLOCK_SIZE_BYTES);
        this.#readData(buf, p);
        out.push(buf);
      } else if (slba < this.replica.blocks && (map.zero.size === 0 || !map.zero.has(slba))) {
        cache.read(this.replica, slba, 1, out, scratch);
      } else {
        pushZeroes(out, BLOCK_SIZE_BYTES);
      }
      return out;
    }
    for (const run of map.runs(slba, nlb, this.replica.blocks)) {
      if (run.kind === 'owned') {
        const at = (run.lba - slba) * BLOCK_SIZE_BYTES;
        const buf = scratch === undefined ? takeBuffer(run.n * BLOCK_SIZE_BYTES) : scratch.subarray(at, at + run.n * BLOCK_SIZE_BYTES);
        this.#readData(buf, run.pblock);
        out.push(buf);
      } else if (run.kind === 'inherit') {
        const at = (run.lba - slba) * BLOCK_SIZE_BYTES;
        cache.read(this.replica, run.lba, run.n, out, scratch?.subarray(at, at + run.n * BLOCK_SIZE_BYTES));
      } else {
        pushZeroes(out, run.n * BLOCK_SIZE_BYTES);
      }
    }
    return out;
  }

  #readData(buf: Buffer, pblock: number): void {
    if (this.#deferred.size > 0) {
      if (buf.length === BLOCK_SIZE_BYTES) {
        const copy = this.#deferred.get(pblock);
        if (copy !== undefined) {
          copy.copy(buf);
          return;
        }
      } else {
        this.#readFile(buf, pblock);
        const n = buf.length / BLOCK_SIZE_BYTES;
        for (let k = 0; k < n; k++) this.#deferred.get(pblock + k)?.copy(buf, k * BLOCK_SIZE_BYTES);
        return;
      }
    }
    this.#readFile(buf, pblock);
  }

  #readFile(buf: Buffer, pblock: number): void {
    let got = 0;
    const position = pblock * BLOCK_SIZE_BYTES;
    for (let i = 0; i < 64 && got < buf.length; i++) {
      const n = fs.readSync(this.#dataFd, buf, got, buf.length - got, position + got);
      if (n === 0) break;
      got += n;
    }
    // A block past the end of the data file was allocated but its write never reached the file.
    if (got < buf.length) buf.fill(0, got);
  }

  // ---- writes ----

  /** Writes whole blocks starting at slba from a gather list; `fua` makes it durable before resolving. */
  async write(slba: number, chunks: Buffer | readonly Buffer[], options: { fua?: boolean } = {}): Promise<void> {
    return this.writeNowOrLater(slba, chunks, options);
  }

  /** write() without a promise when nothing has to wait and no FUA flush is asked for (see readNowOrLater). */
  writeNowOrLater(slba: number, chunks: Buffer | readonly Buffer[], options: { fua?: boolean } = {}): void | Promise<void> {
    const list = Buffer.isBuffer(chunks) ? [chunks] : chunks;
    const bytes = totalLength(list);
    if (bytes === 0 || bytes % BLOCK_SIZE_BYTES !== 0) throw new LbaOutOfRangeError(slba, bytes / BLOCK_SIZE_BYTES, this.capacityBlocks);
    const nlb = bytes / BLOCK_SIZE_BYTES;
    this.#checkRange(slba, nlb);
    const wait = this.#admit(bytes);
    if (wait) {
      return wait.then(() => {
        this.#assertUsable();
        this.writeNow(slba, nlb, list);
        if (options.fua) return this.flush();
      });
    }
    this.#assertUsable();
    this.writeNow(slba, nlb, list);
    if (options.fua) return this.flush();
  }

  writeNow(slba: number, nlb: number, list: readonly Buffer[]): void {
    if (nlb === 1) {
      this.#writeOne(slba, list);
      return;
    }
    const defer = this.#defers(nlb);
    if (!defer) this.writeBackDeferred();
    const owned = this.map.owned;
    const end = slba + nlb;
    let needed = 0;
    for (let lba = slba; lba < end; lba++) if (!owned.has(lba)) needed++;
    const fromFree = Math.min(needed, this.#free.length);
    // Reserve first: a write that cannot get all its new blocks changes nothing.
    if (needed > fromFree) {
      if (this.dataBlocks + needed - fromFree > MAX_BLOCK + 1) throw new OutOfSpaceError();
      this.#host.reserveBlocks(needed - fromFree);
    }
    if (this.#dataFd < 0) this.#openData(true);

    const pblocks = new Array<number>(nlb);
    const newlyMapped: number[] = [];
    for (let i = 0; i < nlb; i++) {
      const lba = slba + i;
      let p = owned.get(lba);
      if (p === undefined) {
        p = this.#free.length > 0 ? this.#free.pop()! : this.dataBlocks++;
        owned.set(lba, p);
        newlyMapped.push(i);
      }
      pblocks[i] = p;
    }
    try {
      let i = 0;
      while (!defer && i < nlb) {
        let n = 1;
        while (i + n < nlb && pblocks[i + n] === pblocks[i] + n) n++;
        const views = sliceChunks(list, i * BLOCK_SIZE_BYTES, n * BLOCK_SIZE_BYTES);
        this.#writeData(views, pblocks[i]);
        i += n;
      }
    } catch (err) {
      // Undo the new mappings: their blocks never held acknowledged data.
      for (const k of newlyMapped) {
        owned.delete(slba + k);
        this.#free.push(pblocks[k]);
      }
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new OutOfSpaceError();
      throw new IoError(`write to clone ${this.id} failed: ${(err as Error).message}`, { cause: err });
    }
    if (this.map.zero.size > 0) this.map.zero.remove(slba, end);
    // Map changes for the journal, as runs of consecutive LBAs with consecutive blocks.
    let k = 0;
    while (k < newlyMapped.length) {
      let n = 1;
      const i0 = newlyMapped[k];
      while (k + n < newlyMapped.length && newlyMapped[k + n] === i0 + n && pblocks[i0 + n] === pblocks[i0] + n) n++;
      this.#mapOps.push({ lba: slba + i0, n, value: pblocks[i0] });
      k += n;
    }
    for (let i = 0; i < nlb; i++) {
      const copy = this.#markDirty(slba + i, pblocks[i], list, i * BLOCK_SIZE_BYTES);
      if (defer) this.#defer(pblocks[i], copy!);
    }
    this.stats.writeOps++;
    this.stats.writeBytes += nlb * BLOCK_SIZE_BYTES;
  }

  /** writeNow of one block (the commonest request): no run lists, no per-call arrays. */
  #writeOne(lba: number, list: readonly Buffer[]): void {
    const defer = this.#defers(1, lba);
    if (!defer) this.writeBackDeferred();
    const owned = this.map.owned;
    let p = owned.get(lba);
    const fresh = p === undefined;
    if (fresh) {
      // Reserve first: a write that cannot get its new block changes nothing.
      if (this.#free.length === 0) {
        if (this.dataBlocks > MAX_BLOCK) throw new OutOfSpaceError();
        this.#host.reserveBlocks(1);
      }
      if (this.#dataFd < 0) this.#openData(true);
      p = this.#free.length > 0 ? this.#free.pop()! : this.dataBlocks++;
      owned.set(lba, p);
    } else if (this.#dataFd < 0) {
      this.#openData(true);
    }
    try {
      if (!defer) this.#writeData(list.length === 1 && list[0].length === BLOCK_SIZE_BYTES ? (list as Buffer[]) : sliceChunks(list, 0, BLOCK_SIZE_BYTES), p!);
    } catch (err) {
      // Undo the new mapping: its block never held acknowledged data.
      if (fresh) {
        owned.delete(lba);
        this.#free.push(p!);
      }
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new OutOfSpaceError();
      throw new IoError(`write to clone ${this.id} failed: ${(err as Error).message}`, { cause: err });
    }
    if (this.map.zero.size > 0) this.map.zero.remove(lba, lba + 1);
    if (fresh) this.#mapOps.push({ lba, n: 1, value: p! });
    const copy = this.#markDirty(lba, p!, list, 0);
    if (defer) this.#defer(p!, copy!);
    this.stats.writeOps++;
    this.stats.writeBytes += BLOCK_SIZE_BYTES;
  }

  /**
   * Records a written block for the next flush, with a copy of its data while the flush would journal it.
   * Returns the copy (undefined past the small-flush limit).
   */
  #markDirty(lba: number, p: number, list: readonly Buffer[], offset: number): Buffer | undefined {
    if (this.#dirtyOverflow) return undefined;
    this.#dirtyWrites.set(lba, p);
    if (this.#dirtyWrites.size > PAYLOAD_FLUSH_LIMIT_BLOCKS) {
      this.#dirtyOverflow = true;
      this.#dirtyWrites.clear();
      this.#payloadCopies.clear();
      return undefined;
    }
    const copy = takeBlockCopy(BLOCK_SIZE_BYTES);
    if (offset === 0 && list[0].length === BLOCK_SIZE_BYTES) {
      copy.set(list[0]);
    } else {
      let at = 0;
      for (const v of sliceChunks(list, offset, BLOCK_SIZE_BYTES)) at += v.copy(copy, at);
    }
    this.#payloadCopies.set(lba, copy);
    return copy;
  }

  /**
   * Whether a write of nlb blocks (lba: the block of a one-block write) stays within the small-flush
   * limit, so that #markDirty keeps a copy of every block and the data file can wait (deferred blocks).
   */
  #defers(nlb: number, lba = -1): boolean {
    if (this.#dirtyOverflow) return false;
    const dirty = this.#dirtyWrites;
    return dirty.size + nlb <= PAYLOAD_FLUSH_LIMIT_BLOCKS || (nlb === 1 && dirty.has(lba));
  }

  // The pool counts every deferred block as space the file system may not have allocated yet
  // (overwrites of allocated blocks too: simpler to keep exact, and it errs on the safe side).
  #defer(p: number, copy: Buffer): void {
    const size = this.#deferred.size;
    this.#deferred.set(p, copy);
    if (this.#deferred.size > size) this.#host.adjustDeferredBlocks(1);
  }

  /** Drops deferred blocks that no longer hold data (freed, or the clone reset or deleted). */
  #dropDeferred(blocks?: readonly number[]): void {
    const before = this.#deferred.size;
    if (before === 0) return;
    if (blocks === undefined) this.#deferred = new Map();
    else for (const p of blocks) this.#deferred.delete(p);
    if (this.#deferred.size !== before) this.#host.adjustDeferredBlocks(this.#deferred.size - before);
  }

  /**
   * Writes every deferred block to the data file (not synced), in block order, one 4 KiB write each:
   * a multi-block write would put large folios in the page cache, and later 4 KiB overwrites of those
   * blocks then cost 4-6 µs instead of 2.2 (measured; perf-limits.md §2b). Throws like a write
   * (OutOfSpaceError, IoError); what was not written stays deferred.
   */
  writeBackDeferred(): void {
    if (this.#deferred.size === 0) return;
    const blocks = [...this.#deferred.keys()].sort((a, b) => a - b);
    if (this.#dataFd < 0) this.#openData(true);
    const before = this.#deferred.size;
    try {
      const one: Buffer[] = [EMPTY];
      for (const p of blocks) {
        one[0] = this.#deferred.get(p)!;
        this.#writeData(one, p);
        this.#deferred.delete(p);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new OutOfSpaceError();
      throw new IoError(`write-back to clone ${this.id} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      if (this.#deferred.size !== before) this.#host.adjustDeferredBlocks(this.#deferred.size - before);
    }
  }

  /** Blocks whose latest data is in memory only, not yet in the data file. */
  get deferredBlocks(): number {
    return this.#deferred.size;
  }

  #writeData(views: Buffer[], pblock: number): void {
    let position = pblock * BLOCK_SIZE_BYTES;
    let list = views;
    for (let attempt = 0; attempt < 64 && list.length > 0; attempt++) {
      // One buffer (the common 4 KiB write) goes through pwrite: cheaper than pwritev's array marshalling.
      const n = list.length === 1 ? fs.writeSync(this.#dataFd, list[0], 0, list[0].length, position) : fs.writevSync(this.#dataFd, list, position);
      const total = totalLength(list);
      if (n >= total) return;
      list = sliceChunks(list, n, total - n);
      position += n;
    }
    if (list.length > 0) throw new Error('short write to the data file');
  }

  #openData(create: boolean): void {
    if (this.#dataFd >= 0) return;
    if (create) {
      mkdirSync(this.dir, { recursive: true });
      this.#dirNeedsSync = true;
    }
    this.#dataFd = fs.openSync(this.dataPath, create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDWR, 0o600);
  }

  /** Write Zeroes and Deallocate: the blocks read as zeroes afterwards and owned ones are freed. */
  async writeZeroes(slba: number, nlb: number): Promise<void> {
    this.#checkRange(slba, nlb);
    if (this.#gate) await this.#gate;
    this.#assertUsable();
    this.zeroNow(slba, nlb);
  }

  zeroNow(slba: number, nlb: number): void {
    const end = slba + nlb;
    const freed = this.map.dropOwned(slba, end);
    for (const p of freed) this.#pendingFree.push(p);
    this.#dropDeferred(freed);
    if (!this.#dirtyOverflow && this.#dirtyWrites.size > 0) {
      if (nlb < this.#dirtyWrites.size) for (let lba = slba; lba < end; lba++) this.#dirtyWrites.delete(lba);
      else for (const lba of this.#dirtyWrites.keys()) if (lba >= slba && lba < end) this.#dirtyWrites.delete(lba);
    }
    if (this.#payloadCopies.size > 0) for (const lba of this.#payloadCopies.keys()) if (lba >= slba && lba < end) this.#payloadCopies.delete(lba);
    // Past the replica's end blocks already read as zero; only the part over the replica needs a ZERO.
    this.map.zero.add(slba, end);
    this.#mapOps.push({ lba: slba, n: nlb, value: MAP_ZERO });
  }

  deallocate(slba: number, nlb: number): Promise<void> {
    return this.writeZeroes(slba, nlb);
  }

  // ---- durability ----

  /** Resolves when every write completed before the call is durable. */
  flush(): Promise<void> {
    return this.#inFlushOrder(this.#flushOnce);
  }

  /**
   * Runs `step` after every flush and reset issued before it. With none pending it starts at once: a
   * flush storm calls this once per clone, and each promise and closure less is less work for the GC.
   */
  #inFlushOrder(step: () => Promise<void>): Promise<void> {
    const p = this.#flushChainLength === 0 ? step() : this.#flushTail.then(step);
    this.#flushChainLength++;
    this.#flushTail = p.then(this.#flushStepSettled, this.#flushStepSettled);
    return p;
  }

  #flushChainLength = 0;
  #flushStepSettled = (): void => {
    this.#flushChainLength--;
  };

  get dirty(): boolean {
    return this.#mapOps.length > 0 || this.#dirtyWrites.size > 0 || this.#dirtyOverflow;
  }

  #flushOnce = async (): Promise<void> => {
    if (this.closed || !this.dirty) return;
    const ops = this.#mapOps;
    const opsLength = ops.length;
    const writes = this.#dirtyWrites;
    const copies = this.#payloadCopies;
    const overflow = this.#dirtyOverflow;
    const freed = this.#pendingFree;
    this.#mapOps = [];
    // The maps of the last successful flush, emptied, are reused (fewer allocations per flush).
    this.#dirtyWrites = this.#spareWrites ?? new Map();
    this.#spareWrites = undefined;
    const copiesTaken = copies.size > 0;
    if (copiesTaken) {
      this.#payloadCopies = this.#spareCopies ?? new Map();
      this.#spareCopies = undefined;
    }
    this.#dirtyOverflow = false;
    this.#pendingFree = [];
    const lsn = ++this.lsn;
    // buffers[0] is the record's header (filled in by encodeRecord); payloads follow. The payload
    // entries follow the map operations in `ops`.
    const buffers: Buffer[] = [EMPTY];
    let flags = 0;
    try {
      if (!overflow && writes.size <= PAYLOAD_FLUSH_LIMIT_BLOCKS) {
        for (const [lba, p] of writes) {
          if (this.map.owned.get(lba) !== p) continue;
          let buf = copies.get(lba);
          if (buf === undefined) {
            buf = takeBuffer(BLOCK_SIZE_BYTES);
            this.#readData(buf, p);
          }
          ops.push({ lba, n: 1, value: p });
          buffers.push(buf);
        }
      } else {
        // A data-synced record promises recovery that the data file holds every block at least as new
        // as any earlier payload: deferred blocks go to the file before the sync.
        this.writeBackDeferred();
        await this.syncData();
        // Recovery must not redo older journalled payloads over the blocks this sync made durable
        // (an in-place overwrite, or a block freed and reused, would go back to stale data).
        flags = RECORD_FLAG_DATA_SYNCED;
      }
      const length = encodeRecordInto(buffers, RECORD_TYPE_MAP, lsn, this.#idBytes, ops, buffers.length - 1, flags);
      const journal = await this.#host.appendRecord(buffers, length);
      this.journalRefs.add(journal);
    } catch (err) {
      // Nothing of this flush is known durable: keep its changes dirty so the next flush retries them.
      ops.length = opsLength;
      this.#mapOps = ops.concat(this.#mapOps);
      if (overflow || this.#dirtyOverflow) {
        this.#dirtyOverflow = true;
        this.#dirtyWrites.clear();
        this.#payloadCopies.clear();
      } else {
        for (const [lba, p] of writes) {
          if (this.#dirtyWrites.has(lba)) continue;
          this.#dirtyWrites.set(lba, p);
          // Not written since: its copy still holds its latest data.
          const copy = copies.get(lba);
          if (copy) this.#payloadCopies.set(lba, copy);
        }
      }
      this.#pendingFree = freed.concat(this.#pendingFree);
      throw new IoError(`flush of clone ${this.id} failed: ${(err as Error).message}`, { cause: err });
    }
    for (const p of freed) this.#free.push(p);
    writes.clear();
    this.#spareWrites = writes;
    if (copiesTaken) {
      copies.clear();
      this.#spareCopies = copies;
    }
    this.stats.flushes++;
  };

  /** fdatasync of the data file, and of the directories the first time. */
  async syncData(): Promise<void> {
    if (this.#dataFd < 0) return;
    await fdatasync(this.#dataFd);
    if (this.#dirNeedsSync) {
      await fsyncDir(this.dir);
      await fsyncDir(this.#host.clonesDir);
      this.#dirNeedsSync = false;
    }
  }

  // ---- reset and delete ----

  /** Drops every change (refresh to the replica) in O(1): a durable RESET record, then the data is cut. */
  reset(): Promise<void> {
    // A failed clone may be reset: that is its repair (nothing of its damaged map or data is needed).
    if (this.closed) throw new CloneClosedError(this.id);
    // The reset runs in the flush chain: flushes issued after it wait for it. Otherwise such a flush could
    // journal the pre-reset map changes after the RESET record (replay would resurrect dropped blocks, or
    // map blocks the reset truncated away) and hand pre-reset block numbers to the free list.
    const run = this.#inFlushOrder(async () => {
      const lsn = ++this.lsn;
      const { buffers, length } = encodeRecord(RECORD_TYPE_RESET, lsn, this.id, [], []);
      // Until the map is cleared, a checkpoint must not claim this LSN (see snapshotForCheckpoint).
      this.#resetLsn = lsn;
      let journal: 0 | 1;
      try {
        journal = await this.#host.appendRecord(buffers, length);
      } finally {
        this.#resetLsn = 0;
      }
      this.journalRefs.add(journal);
      this.#resetGeneration++;
      this.map = new BlockMap();
      this.#mapOps = [];
      this.#dirtyWrites = new Map();
      this.#payloadCopies = new Map();
      this.#dirtyOverflow = false;
      this.#dropDeferred();
      this.#pendingFree = [];
      this.#free = [];
      if (this.#dataFd >= 0) fs.ftruncateSync(this.#dataFd, 0);
      else if (this.failed) fs.rmSync(this.dataPath, { force: true }); // never opened: a damaged clone's file
      this.failed = undefined;
      this.#host.releaseBlocks(this.dataBlocks);
      this.dataBlocks = 0;
    });
    this.#gate = run.finally(() => {
      if (this.#gate === gate) this.#gate = undefined;
    });
    const gate = this.#gate;
    return run;
  }

  /** Closes the clone and removes its files; its space is free when this resolves. */
  async destroy(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.#flushTail.catch(() => {});
    this.#dropDeferred();
    this.#closeFd();
    await rm(this.dir, { recursive: true, force: true });
    this.#host.releaseBlocks(this.dataBlocks);
    this.dataBlocks = 0;
  }

  /** Closes the files. Deferred blocks are dropped: what of them was flushed is in the journal. */
  close(): void {
    this.closed = true;
    this.#dropDeferred();
    this.#closeFd();
  }

  #closeFd(): void {
    if (this.#dataFd >= 0) {
      fs.closeSync(this.#dataFd);
      this.#dataFd = -1;
    }
  }

  // ---- checkpoint and recovery (used by the pool) ----

  /** Serialises the map for a checkpoint; see checkpoint-file.ts. */
  snapshotForCheckpoint(): { lsn: number; map: BlockMap; dataBlocks: number; pendingFree: number[]; generation: number } {
    // Blocks freed so far are not referenced by this snapshot; once it is durable they may be reused.
    const pendingFree = this.#pendingFree;
    this.#pendingFree = [];
    // While a RESET record is being appended, this.lsn is already the reset's but the map is still the
    // old one: a checkpoint claiming that LSN would make recovery skip the RESET and bring the dropped
    // map back (over a truncated data file). Nothing else takes an LSN meanwhile (flushes queue behind
    // the reset), so the map is exactly the state before it.
    const lsn = this.#resetLsn > 0 ? this.#resetLsn - 1 : this.lsn;
    return { lsn, map: this.map, dataBlocks: this.dataBlocks, pendingFree, generation: this.#resetGeneration };
  }

  checkpointDone(lsn: number, pendingFree: number[], journalIndex: 0 | 1 | undefined, generation = this.#resetGeneration): void {
    this.checkpointLsn = Math.max(this.checkpointLsn, lsn);
    // A reset since the snapshot emptied the free list and truncated the data file: the snapshot's freed
    // block numbers are gone, and pushing them would later put two LBAs on one block.
    if (generation === this.#resetGeneration) for (const p of pendingFree) this.#free.push(p);
    if (journalIndex !== undefined) this.journalRefs.delete(journalIndex);
  }

  checkpointFailed(pendingFree: number[], generation = this.#resetGeneration): void {
    if (generation === this.#resetGeneration) this.#pendingFree = pendingFree.concat(this.#pendingFree);
  }

  /** Recovery: opens the existing data file, if any. */
  openExistingData(): boolean {
    try {
      this.#openData(false);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Recovery: writes a journalled payload back into the data file. */
  redoPayload(pblock: number, payload: Buffer): void {
    if (this.#dataFd < 0) this.#openData(true);
    this.#writeData([payload], pblock);
  }

  // (No truncateData for a replayed RESET: the data file may hold blocks written after the reset and made
  // durable by a data sync; see PoolStore.open. rebuildAllocation trims what the final map leaves unused.)

  /** Recovery: rebuilds the free list from the map and trims the data file. Returns false if the map points past the data. */
  rebuildAllocation(): boolean {
    let max = -1;
    const used = new Set<number>();
    for (const p of this.map.owned.values()) {
      if (used.has(p)) return false; // two LBAs on one block: the map is damaged
      used.add(p);
      if (p > max) max = p;
    }
    let fileBlocks = 0;
    if (this.#dataFd >= 0) fileBlocks = Math.floor(fs.fstatSync(this.#dataFd).size / BLOCK_SIZE_BYTES);
    if (max >= fileBlocks && max >= 0) return false;
    this.dataBlocks = max + 1;
    if (this.#dataFd >= 0 && fileBlocks > this.dataBlocks) fs.ftruncateSync(this.#dataFd, this.dataBlocks * BLOCK_SIZE_BYTES);
    this.#free = [];
    for (let p = this.dataBlocks - 1; p >= 0; p--) if (!used.has(p)) this.#free.push(p);
    return true;
  }
}
