// All clones of one storage pool: their shared journal (group commit), checkpoints, crash recovery and
// space accounting. A full pool fails only writes that need new blocks.
import fs from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { BLOCK_SIZE_BYTES } from './block-size.ts';
import { MAP_INHERIT, MAP_ZERO, BlockMap } from './block-map.ts';
import { encodeCheckpoint, readCheckpoint, writeCheckpoint } from './checkpoint-file.ts';
import { Clone, type CloneHost } from './clone.ts';
import { OutOfSpaceError } from './errors.ts';
import { RECORD_FLAG_DATA_SYNCED, RECORD_TYPE_RESET } from './journal-record.ts';
import { DEFAULT_JOURNAL_BYTES, PoolJournal } from './pool-journal.ts';
import type { ReplicaCache } from './replica-cache.ts';
import type { ReplicaImage } from './replica-image.ts';
import type { QosLimits } from './token-bucket.ts';

export interface PoolOptions {
  id: string;
  path: string;
  /** A configured limit below the device's size; undefined means the device's free space is the limit. */
  capacityBytes?: number;
  journalBytes?: number;
  /** Free space kept back on the device for checkpoints and metadata. */
  reserveBytes?: number;
}

export interface CloneSpec {
  id: string;
  replica: ReplicaImage;
  sizeBytes: number;
  qos?: QosLimits;
}

export interface RecoveryReport {
  replayedRecords: number;
  failed: Array<{ id: string; reason: string }>;
  removedOrphans: string[];
}

const STATFS_REFRESH_MS = 100;
const CHECKPOINT_CONCURRENCY = 8;

export class PoolStore implements CloneHost {
  readonly id: string;
  readonly path: string;
  readonly clonesDir: string;
  readonly cache: ReplicaCache;
  readonly journal: PoolJournal;
  readonly clones = new Map<string, Clone>();
  capacityBytes: number | undefined;
  #reserveBytes: number;
  /** Blocks held by clone data files (allocated or free inside them). */
  #dataBlocks = 0;
  #statfsAt = 0;
  #statfsFree = Infinity;
  #blocksSinceStatfs = 0;
  /** Deferred clone blocks: reserved here, maybe not yet allocated by the file system. */
  #deferredBlocks = 0;
  /** #deferredBlocks when statfs was last read: statfs does not count them yet. */
  #deferredAtStatfs = 0;
  #checkpointing: Promise<void> | undefined;
  onError: (err: unknown) => void = () => {};

  constructor(options: PoolOptions, cache: ReplicaCache) {
    this.id = options.id;
    this.path = options.path;
    this.clonesDir = path.join(options.path, 'clones');
    this.cache = cache;
    this.capacityBytes = options.capacityBytes;
    this.#reserveBytes = options.reserveBytes ?? 16 * 1024 * 1024;
    this.journal = new PoolJournal(path.join(options.path, 'journal'), options.journalBytes ?? DEFAULT_JOURNAL_BYTES);
    this.journal.onSwitch = (old) => {
      this.#checkpointing = this.#checkpointJournal(old).catch((err) => this.onError(err));
    };
  }

  // ---- CloneHost ----

  reserveBlocks(n: number): void {
    const bytes = n * BLOCK_SIZE_BYTES;
    if (this.capacityBytes !== undefined && (this.#dataBlocks + n) * BLOCK_SIZE_BYTES + 2 * this.journal.capacityBytes > this.capacityBytes) {
      throw new OutOfSpaceError(`storage pool ${this.id} has reached its configured capacity`);
    }
    const now = performance.now();
    if (now - this.#statfsAt > STATFS_REFRESH_MS || this.#blocksSinceStatfs * BLOCK_SIZE_BYTES > this.#statfsFree / 64) {
      try {
        const s = fs.statfsSync(this.path);
        this.#statfsFree = s.bavail * s.bsize;
      } catch {
        this.#statfsFree = 0;
      }
      this.#statfsAt = now;
      this.#blocksSinceStatfs = 0;
      this.#deferredAtStatfs = this.#deferredBlocks;
    }
    // Blocks reserved since statfs, and deferred blocks it could not see (some may have been written since:
    // counted twice until the next statfs, which errs on the safe side).
    if (this.#statfsFree - (this.#blocksSinceStatfs + this.#deferredAtStatfs) * BLOCK_SIZE_BYTES - bytes < this.#reserveBytes) {
      throw new OutOfSpaceError(`storage pool ${this.id} is full`);
    }
    this.#blocksSinceStatfs += n;
    this.#dataBlocks += n;
  }

  releaseBlocks(n: number): void {
    this.#dataBlocks = Math.max(0, this.#dataBlocks - n);
    this.#statfsAt = 0;
  }

  adjustDeferredBlocks(delta: number): void {
    this.#deferredBlocks += delta;
  }

  /** Clone blocks held in memory for a later write to their data files (see Clone: deferred blocks). */
  get deferredBlocks(): number {
    return this.#deferredBlocks;
  }

  appendRecord(buffers: Buffer[], length: number): Promise<0 | 1> {
    return this.journal.append(buffers, length);
  }

  // ---- usage ----

  usage(): { cloneDataBytes: number; uniqueBytes: number; journalBytes: number } {
    let unique = 0;
    for (const c of this.clones.values()) unique += c.uniqueBytes;
    return { cloneDataBytes: this.#dataBlocks * BLOCK_SIZE_BYTES, uniqueBytes: unique, journalBytes: 2 * this.journal.capacityBytes };
  }

  // ---- clones ----

  createClone(spec: CloneSpec): Clone {
    const clone = new Clone(this, spec.id, spec.replica, spec.sizeBytes, spec.qos);
    this.clones.set(spec.id, clone);
    return clone;
  }

  async deleteClone(id: string): Promise<void> {
    const clone = this.clones.get(id);
    if (!clone) return;
    this.clones.delete(id);
    await clone.destroy();
  }

  // ---- recovery ----

  /**
   * Opens the pool: loads the checkpoints of the given clones, replays the journal over them (records
   * of clones not listed are ignored: they were deleted), rebuilds free lists, writes fresh checkpoints,
   * starts a new journal epoch and removes clone directories nobody owns.
   */
  async open(specs: CloneSpec[]): Promise<RecoveryReport> {
    const report: RecoveryReport = { replayedRecords: 0, failed: [], removedOrphans: [] };
    fs.mkdirSync(this.clonesDir, { recursive: true });
    const records = await this.journal.open();
    for (const spec of specs) {
      const clone = this.createClone(spec);
      try {
        const ckpt = await readCheckpoint(clone.dir);
        if (ckpt) {
          clone.map = ckpt.map;
          clone.lsn = ckpt.lsn;
          clone.checkpointLsn = ckpt.lsn;
        }
        const hasData = clone.openExistingData();
        if (ckpt && ckpt.map.owned.size > 0 && !hasData) clone.failed = 'its data file is missing';
      } catch (err) {
        clone.failed = (err as Error).message;
      }
    }
    // Journalled payloads are redone only from records after a clone's last RESET or data-synced record:
    // such a record means the data file already held newer contents for every block (or, after a RESET,
    // block numbers from before it mean nothing), and redoing an older payload would overwrite a block
    // that was since overwritten in place or freed and reused for another LBA.
    const redoAfter = new Map<Clone, number>();
    for (let i = 0; i < records.length; i++) {
      const rec = records[i];
      const clone = this.clones.get(rec.cloneId);
      if (!clone || rec.lsn <= clone.checkpointLsn) continue;
      if (rec.type === RECORD_TYPE_RESET || (rec.flags & RECORD_FLAG_DATA_SYNCED) !== 0) redoAfter.set(clone, i);
    }
    const touched = new Set<Clone>();
    for (let r = 0; r < records.length; r++) {
      const rec = records[r];
      const clone = this.clones.get(rec.cloneId);
      if (!clone || clone.failed || rec.lsn <= clone.checkpointLsn) continue;
      touched.add(clone);
      report.replayedRecords++;
      clone.lsn = Math.max(clone.lsn, rec.lsn);
      if (rec.type === RECORD_TYPE_RESET) {
        // The data file is not cut here: blocks written after the reset and made durable by a data sync
        // (no payload in the journal) live in it. rebuildAllocation trims what the final map leaves unused.
        clone.map = new BlockMap();
        continue;
      }
      const redo = r > (redoAfter.get(clone) ?? -1);
      const payloadStart = rec.entries.length - rec.payloads.length;
      for (let i = 0; i < rec.entries.length; i++) {
        const e = rec.entries[i];
        const map = clone.map;
        if (e.value >= 0) {
          for (let k = 0; k < e.n; k++) map.owned.set(e.lba + k, e.value + k);
          map.zero.remove(e.lba, e.lba + e.n);
          if (i >= payloadStart && redo) clone.redoPayload(e.value, rec.payloads[i - payloadStart]);
        } else if (e.value === MAP_ZERO) {
          map.dropOwned(e.lba, e.lba + e.n);
          map.zero.add(e.lba, e.lba + e.n);
        } else if (e.value === MAP_INHERIT) {
          map.dropOwned(e.lba, e.lba + e.n);
          map.zero.remove(e.lba, e.lba + e.n);
        }
      }
    }
    for (const clone of this.clones.values()) {
      if (clone.failed) {
        report.failed.push({ id: clone.id, reason: clone.failed });
        continue;
      }
      if (!clone.rebuildAllocation()) {
        clone.failed = 'its block map points outside its data file';
        report.failed.push({ id: clone.id, reason: clone.failed });
        continue;
      }
      this.#dataBlocks += clone.dataBlocks;
      if (touched.has(clone)) {
        await clone.syncData();
        await writeCheckpoint(clone.dir, encodeCheckpoint(clone.lsn, clone.dataBlocks, clone.map));
        clone.checkpointLsn = clone.lsn;
      }
    }
    await this.journal.start();
    for (const entry of await readdir(this.clonesDir)) {
      if (!this.clones.has(entry)) {
        await rm(path.join(this.clonesDir, entry), { recursive: true, force: true });
        report.removedOrphans.push(entry);
      }
    }
    return report;
  }

  // ---- checkpoints ----

  /** Checkpoints every clone with records in journal file `old`, then lets the journal reuse it. */
  async #checkpointJournal(old: 0 | 1): Promise<void> {
    const todo = [...this.clones.values()].filter((c) => c.journalRefs.has(old) && !c.closed);
    for (let round = 0; round < 100; round++) {
      let failures = 0;
      for (let i = 0; i < todo.length; i += CHECKPOINT_CONCURRENCY) {
        const slice = todo.slice(i, i + CHECKPOINT_CONCURRENCY);
        const results = await Promise.allSettled(slice.map((c) => this.checkpointClone(c, old)));
        failures += results.filter((r) => r.status === 'rejected').length;
      }
      const left = todo.filter((c) => c.journalRefs.has(old) && !c.closed);
      if (failures === 0 || left.length === 0) break;
      todo.splice(0, todo.length, ...left);
      await new Promise((r) => setTimeout(r, 200));
    }
    this.journal.release(old);
  }

  async checkpointClone(clone: Clone, journalIndex?: 0 | 1): Promise<void> {
    const snap = clone.snapshotForCheckpoint();
    // Encode before any await: the snapshot must not see changes made after it.
    const content = encodeCheckpoint(snap.lsn, snap.dataBlocks, snap.map);
    try {
      // The snapshot's records become obsolete: deferred blocks must be in the data file first (now, so
      // the file holds exactly the snapshot's data; later writes are deferred again or journalled).
      clone.writeBackDeferred();
      await clone.syncData();
      await writeCheckpoint(clone.dir, content);
    } catch (err) {
      clone.checkpointFailed(snap.pendingFree, snap.generation);
      throw err;
    }
    clone.checkpointDone(snap.lsn, snap.pendingFree, journalIndex, snap.generation);
  }

  /** Waits for a running checkpoint (tests and shutdown). */
  async settle(): Promise<void> {
    if (this.#checkpointing) await this.#checkpointing;
  }

  /** Flushes and checkpoints every clone, then closes files. */
  async close(): Promise<void> {
    await this.settle();
    for (const c of this.clones.values()) {
      if (c.closed || c.failed) continue;
      await c.flush().catch((err) => this.onError(err));
    }
    for (const c of this.clones.values()) c.close();
    this.clones.clear();
    this.journal.close();
  }
}
