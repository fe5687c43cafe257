// The shared replica block cache: bounded RAM shared by all clones of all replicas. A boot storm
// (hundreds of clones reading the same replica blocks) reads each block from the device once.
//
// Layout: the capacity is split into segments of up to 1 MiB, filled in order and reused in a ring (FIFO
// with a second chance: when a segment comes round again, the blocks hit since they were stored are
// copied forward into it, up to half of it, the others are dropped). A miss of a run of blocks is one
// device read straight into the current segment. Blocks are found through an open-addressing hash table
// in typed arrays (no per-block objects, no Map churn).
//
// Two ways to read: read() hands out views of segment memory that the caller may keep as long as it likes
// (an NVMe response in flight), so a segment that ever had a view taken gets a fresh buffer when the ring
// comes back to it, and the old one is freed by the GC once nobody holds a view: stored bytes are never
// overwritten under a view. copyTo() copies into the caller's buffer instead, and a segment nobody took a
// view of is reused in place: no allocation, no page faults, no garbage (a fresh 1 MiB buffer costs about
// 150 µs to allocate and as much again to fault in on this box).
import { BLOCK_SIZE_BYTES } from './block-size.ts';
import type { ReplicaImage } from './replica-image.ts';

export const DEFAULT_REPLICA_CACHE_BYTES = 256 * 1024 * 1024;

const MAX_SEGMENT_BLOCKS = 256;
/** Accesses per hit-ratio sample. */
const WINDOW_BLOCKS = 8192;
/**
 * Below this hit ratio, once the ring has wrapped, the cache is thrashing (random reads over more than it
 * holds): a miss is then stored only if the same block missed recently (a doorkeeper), so one-off reads go
 * straight to the caller instead of costing an insert and an eviction each. A boot storm (hundreds of
 * clones reading the same blocks) hits far more often and is admitted as before.
 */
const THRASH_HIT_RATIO = 0.75;
/** Entries of the doorkeeper: fingerprints of recently missed, not admitted blocks (direct-mapped; small,
 * so only a block missed again soon, i.e. hot, gets in while thrashing). */
const GHOST_ENTRIES = 1 << 12;
/** Longest run of missing blocks read in one device read. */
const MAX_RUN_BLOCKS = 32;

export interface ReplicaCacheStats {
  hits: number;
  misses: number;
  deviceReads: number;
  deviceBytes: number;
  /** Missed blocks read past the cache while it was thrashing. */
  bypassed: number;
  cachedBytes: number;
  capacityBytes: number;
}

export class ReplicaCache {
  readonly capacityBytes: number;
  readonly #segBlocks: number;
  readonly #segCount: number;
  /** Segment memory; undefined until first used. */
  readonly #segBuf: Array<Buffer | undefined>;
  /** 1 when a view of the segment's current buffer was handed out. */
  readonly #segExported: Uint8Array;
  /** Per slot (segment * segBlocks + index): the replica's cache slot (0: empty), its LBA, hit since stored. */
  readonly #slotReplica: Int32Array;
  readonly #slotLba: Float64Array;
  readonly #slotRef: Uint8Array;
  /** Open addressing with linear probing, four int32 per bucket (see #bucket). Load factor at most 1/2. */
  readonly #table: Int32Array;
  readonly #mask: number;
  #current = 0;
  #fill = 0;
  #blocks = 0;
  /** Set once a segment was reused: from then on every insert evicts. */
  #wrapped = false;
  #windowAccesses = 0;
  #windowHits = 0;
  #thrashing = false;
  readonly #ghost = new Int32Array(GHOST_ENTRIES);
  stats = { hits: 0, misses: 0, deviceReads: 0, deviceBytes: 0, bypassed: 0 };

  constructor(capacityBytes = DEFAULT_REPLICA_CACHE_BYTES) {
    this.capacityBytes = capacityBytes;
    const capacityBlocks = Math.floor(capacityBytes / BLOCK_SIZE_BYTES);
    // At least four segments when the cache is small, so a ring turn never drops everything at once.
    this.#segBlocks = Math.max(1, Math.min(MAX_SEGMENT_BLOCKS, Math.floor(capacityBlocks / 4)));
    this.#segCount = capacityBlocks > 0 ? Math.max(1, Math.floor(capacityBlocks / this.#segBlocks)) : 0;
    const slots = this.#segCount * this.#segBlocks;
    this.#segBuf = new Array<Buffer | undefined>(this.#segCount).fill(undefined);
    this.#segExported = new Uint8Array(this.#segCount);
    this.#slotReplica = new Int32Array(slots);
    this.#slotLba = new Float64Array(slots);
    this.#slotRef = new Uint8Array(slots);
    let buckets = 4;
    while (buckets < 2 * slots) buckets *= 2;
    this.#table = new Int32Array(buckets * 4);
    this.#mask = buckets - 1;
    // Start as if the last segment were full so the first miss opens segment 0.
    this.#current = this.#segCount - 1;
    this.#fill = this.#segBlocks;
  }

  getStats(): ReplicaCacheStats {
    return { ...this.stats, cachedBytes: this.#blocks * BLOCK_SIZE_BYTES, capacityBytes: this.capacityBytes };
  }

  /**
   * Pushes views of blocks [lba, lba+n) of the replica (all below replica.blocks) to `out`: cached blocks
   * that sit next to each other in memory as one view, missing runs read with one device read each.
   * Callers must never write into the views.
   */
  read(replica: ReplicaImage, lba: number, n: number, out: Buffer[], spare?: Buffer): void {
    this.#access(replica, lba, n, out, undefined, spare);
  }

  /** Copies blocks [lba, lba+n) of the replica into dest (at least n blocks long), through the cache. */
  copyTo(replica: ReplicaImage, lba: number, n: number, dest: Buffer): void {
    this.#access(replica, lba, n, undefined, dest);
  }

  /**
   * `spare` (views only): memory of at least n blocks the caller lends for blocks read past the cache
   * (see THRASH_HIT_RATIO); without it such blocks get new memory.
   */
  #access(replica: ReplicaImage, lba: number, n: number, out: Buffer[] | undefined, dest: Buffer | undefined, spare?: Buffer): void {
    if (this.#segCount === 0) {
      const buf = dest ? dest.subarray(0, n * BLOCK_SIZE_BYTES) : Buffer.allocUnsafe(n * BLOCK_SIZE_BYTES);
      replica.readInto(lba, n, buf);
      this.stats.deviceReads++;
      this.stats.deviceBytes += buf.length;
      out?.push(buf);
      return;
    }
    const rslot = replica.slot;
    const segBlocks = this.#segBlocks;
    let i = 0;
    while (i < n) {
      const slot = this.#find(rslot, lba + i);
      if (slot >= 0) {
        // A run of hits stored next to each other in one segment is one view (or one copy).
        let m = 1;
        this.#slotRef[slot] = 1;
        const segEnd = slot - (slot % segBlocks) + segBlocks;
        while (i + m < n && slot + m < segEnd && this.#slotReplica[slot + m] === rslot && this.#slotLba[slot + m] === lba + i + m) {
          this.#slotRef[slot + m] = 1;
          m++;
        }
        const segIndex = (slot - (slot % segBlocks)) / segBlocks;
        const seg = this.#segBuf[segIndex]!;
        const off = (slot % segBlocks) * BLOCK_SIZE_BYTES;
        if (dest) {
          seg.copy(dest, i * BLOCK_SIZE_BYTES, off, off + m * BLOCK_SIZE_BYTES);
        } else {
          this.#segExported[segIndex] = 1;
          out!.push(seg.subarray(off, off + m * BLOCK_SIZE_BYTES));
        }
        this.stats.hits += m;
        this.#count(m, m);
        i += m;
        continue;
      }
      let m = 1;
      while (i + m < n && m < MAX_RUN_BLOCKS && this.#find(rslot, lba + i + m) < 0) m++;
      if (this.#thrashing && !this.#admit(rslot, lba + i)) {
        this.#count(m, 0);
        const bytes = m * BLOCK_SIZE_BYTES;
        const at = i * BLOCK_SIZE_BYTES;
        const into = dest ? dest.subarray(at, at + bytes) : spare && spare.length >= at + bytes ? spare.subarray(at, at + bytes) : Buffer.allocUnsafe(bytes);
        replica.readInto(lba + i, m, into);
        this.stats.misses += m;
        this.stats.bypassed += m;
        this.stats.deviceReads++;
        this.stats.deviceBytes += bytes;
        if (!dest) out!.push(into);
        i += m;
        continue;
      }
      if (this.#fill >= segBlocks) this.#advance();
      // The run is cut at the end of the segment; the rest is read (and counted) on the next turn.
      m = Math.min(m, segBlocks - this.#fill);
      this.#count(m, 0);
      const first = this.#current * segBlocks + this.#fill;
      const seg = this.#segBuf[this.#current]!;
      const view = seg.subarray(this.#fill * BLOCK_SIZE_BYTES, (this.#fill + m) * BLOCK_SIZE_BYTES);
      replica.readInto(lba + i, m, view);
      this.stats.misses += m;
      this.stats.deviceReads++;
      this.stats.deviceBytes += view.length;
      for (let j = 0; j < m; j++) {
        const s = first + j;
        this.#slotReplica[s] = rslot;
        this.#slotLba[s] = lba + i + j;
        this.#slotRef[s] = 0;
        this.#insert(rslot, lba + i + j, s);
      }
      this.#fill += m;
      this.#blocks += m;
      if (dest) {
        view.copy(dest, i * BLOCK_SIZE_BYTES);
      } else {
        this.#segExported[this.#current] = 1;
        out!.push(view);
      }
      i += m;
    }
  }

  /** Opens the next segment of the ring, dropping or copying forward its old blocks. */
  #advance(): void {
    const segBlocks = this.#segBlocks;
    const next = (this.#current + 1) % this.#segCount;
    const old = this.#segBuf[next];
    // A buffer a view was taken of is never written again: such a segment gets new memory.
    const buf = old && this.#segExported[next] === 0 ? old : Buffer.allocUnsafe(segBlocks * BLOCK_SIZE_BYTES);
    this.#current = next;
    this.#fill = 0;
    this.#segBuf[next] = buf;
    this.#segExported[next] = 0;
    if (!old) return;
    this.#wrapped = true;
    const base = next * segBlocks;
    // Second chance for blocks hit since they were stored, up to half the segment so a miss always
    // finds room. Copies move towards the segment's start, never over a slot not yet visited.
    const maxCopies = segBlocks >> 1;
    for (let j = 0; j < segBlocks; j++) {
      const s = base + j;
      const rslot = this.#slotReplica[s];
      if (rslot === 0) continue;
      const pos = this.#position(rslot, this.#slotLba[s]);
      if (this.#slotRef[s] === 1 && this.#fill < maxCopies) {
        const d = base + this.#fill;
        if (d !== s) {
          old.copy(buf, this.#fill * BLOCK_SIZE_BYTES, j * BLOCK_SIZE_BYTES, (j + 1) * BLOCK_SIZE_BYTES);
          this.#slotReplica[d] = rslot;
          this.#slotLba[d] = this.#slotLba[s];
          this.#slotReplica[s] = 0;
        } else if (buf !== old) {
          old.copy(buf, j * BLOCK_SIZE_BYTES, j * BLOCK_SIZE_BYTES, (j + 1) * BLOCK_SIZE_BYTES);
        }
        this.#slotRef[d] = 0;
        this.#table[(pos << 2) + 3] = d + 1;
        this.#fill++;
      } else {
        this.#removeAt(pos);
        this.#slotReplica[s] = 0;
        this.#blocks--;
      }
    }
  }

  /** Counts accesses and hits; every WINDOW_BLOCKS decides whether the cache is thrashing. */
  #count(blocks: number, hits: number): void {
    this.#windowAccesses += blocks;
    this.#windowHits += hits;
    if (this.#windowAccesses < WINDOW_BLOCKS) return;
    this.#thrashing = this.#wrapped && this.#windowHits < THRASH_HIT_RATIO * this.#windowAccesses;
    this.#windowAccesses = 0;
    this.#windowHits = 0;
  }

  /** While thrashing: admit a missed block only on its second miss in a while (the doorkeeper). */
  #admit(rslot: number, lba: number): boolean {
    const lo = lba | 0;
    const hi = (lba / 4294967296) | 0;
    const h = Math.imul(lo ^ Math.imul(rslot, 0x9e3779b1) ^ Math.imul(hi, 0x27d4eb2f), 0x85ebca6b);
    const fp = (h ^ (h >>> 15)) | 1;
    const g = (h >>> 16) & (GHOST_ENTRIES - 1);
    if (this.#ghost[g] === fp) {
      this.#ghost[g] = 0;
      return true;
    }
    this.#ghost[g] = fp;
    return false;
  }

  /** Drops a replica's blocks (it was closed or its bytes may differ). */
  dropReplica(replica: ReplicaImage): void {
    const rslot = replica.slot;
    for (let s = 0; s < this.#slotReplica.length; s++) {
      if (this.#slotReplica[s] !== rslot) continue;
      this.#removeAt(this.#position(rslot, this.#slotLba[s]));
      this.#slotReplica[s] = 0;
      this.#blocks--;
    }
  }

  // ---- hash table ----
  // Bucket b is table[4b..4b+3]: LBA low 32 bits, LBA high bits, replica slot, cache slot + 1 (0: empty).
  // The key lives in the bucket, so a lookup touches one cache line, not the slot arrays.

  #hash(lo: number, hi: number, rslot: number): number {
    let h = Math.imul(lo ^ Math.imul(rslot, 0x9e3779b1) ^ Math.imul(hi, 0x27d4eb2f), 0x85ebca6b);
    h ^= h >>> 15;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 13;
    return h & this.#mask;
  }

  /** The bucket holding (rslot, lba), or -1. */
  #bucket(rslot: number, lba: number): number {
    const table = this.#table;
    const mask = this.#mask;
    const lo = lba | 0;
    const hi = (lba / 4294967296) | 0;
    for (let i = this.#hash(lo, hi, rslot); ; i = (i + 1) & mask) {
      const b = i << 2;
      if (table[b + 3] === 0) return -1;
      if (table[b] === lo && table[b + 2] === rslot && table[b + 1] === hi) return i;
    }
  }

  /** The slot holding (rslot, lba), or -1. */
  #find(rslot: number, lba: number): number {
    const i = this.#bucket(rslot, lba);
    return i < 0 ? -1 : this.#table[(i << 2) + 3] - 1;
  }

  /** The bucket of (rslot, lba), which must be present. */
  #position(rslot: number, lba: number): number {
    const i = this.#bucket(rslot, lba);
    if (i < 0) throw new Error('replica cache index is inconsistent');
    return i;
  }

  #insert(rslot: number, lba: number, s: number): void {
    const table = this.#table;
    const mask = this.#mask;
    const lo = lba | 0;
    const hi = (lba / 4294967296) | 0;
    let i = this.#hash(lo, hi, rslot);
    while (table[(i << 2) + 3] !== 0) i = (i + 1) & mask;
    const b = i << 2;
    table[b] = lo;
    table[b + 1] = hi;
    table[b + 2] = rslot;
    table[b + 3] = s + 1;
  }

  /** Empties bucket i and shifts later entries of its probe sequence back (no tombstones). */
  #removeAt(i: number): void {
    const table = this.#table;
    const mask = this.#mask;
    table[(i << 2) + 3] = 0;
    for (let j = (i + 1) & mask; table[(j << 2) + 3] !== 0; j = (j + 1) & mask) {
      const b = j << 2;
      const home = this.#hash(table[b], table[b + 1], table[b + 2]);
      // The entry at j may move to i unless its home lies cyclically in (i, j].
      const stays = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!stays) {
        const d = i << 2;
        table[d] = table[b];
        table[d + 1] = table[b + 1];
        table[d + 2] = table[b + 2];
        table[d + 3] = table[b + 3];
        table[b + 3] = 0;
        i = j;
      }
    }
  }
}
