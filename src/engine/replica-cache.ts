// The shared replica block cache: bounded RAM, LRU, shared by all clones of all replicas. A boot storm
// (hundreds of clones reading the same replica blocks) reads each block from the device once.
import { BLOCK_SIZE_BYTES } from './block-size.ts';
import type { ReplicaImage } from './replica-image.ts';

export const DEFAULT_REPLICA_CACHE_BYTES = 256 * 1024 * 1024;

// Keys combine the replica's slot and the LBA; 2^36 blocks is 256 TiB per replica.
const SLOT_SHIFT = 2 ** 36;

export interface ReplicaCacheStats {
  hits: number;
  misses: number;
  deviceReads: number;
  deviceBytes: number;
  cachedBytes: number;
  capacityBytes: number;
}

export class ReplicaCache {
  readonly capacityBytes: number;
  #entries = new Map<number, Buffer>();
  #bytes = 0;
  stats = { hits: 0, misses: 0, deviceReads: 0, deviceBytes: 0 };

  constructor(capacityBytes = DEFAULT_REPLICA_CACHE_BYTES) {
    this.capacityBytes = capacityBytes;
  }

  getStats(): ReplicaCacheStats {
    return { ...this.stats, cachedBytes: this.#bytes, capacityBytes: this.capacityBytes };
  }

  /**
   * Returns views of blocks [lba, lba+n) of the replica (all below replica.blocks). Misses are read in
   * contiguous runs, one device read per run.
   */
  read(replica: ReplicaImage, lba: number, n: number, out: Buffer[]): void {
    const base = replica.slot * SLOT_SHIFT;
    if (this.capacityBytes === 0) {
      const buf = Buffer.allocUnsafe(n * BLOCK_SIZE_BYTES);
      replica.readInto(lba, n, buf);
      this.stats.deviceReads++;
      this.stats.deviceBytes += buf.length;
      out.push(buf);
      return;
    }
    let i = 0;
    while (i < n) {
      const key = base + lba + i;
      const hit = this.#entries.get(key);
      if (hit) {
        // Re-insert to mark as most recently used.
        this.#entries.delete(key);
        this.#entries.set(key, hit);
        this.stats.hits++;
        out.push(hit);
        i++;
        continue;
      }
      let m = 1;
      // Runs are capped so one evicted block cannot pin a large buffer for long.
      while (i + m < n && m < 32 && !this.#entries.has(key + m)) m++;
      const buf = Buffer.allocUnsafe(m * BLOCK_SIZE_BYTES);
      replica.readInto(lba + i, m, buf);
      this.stats.misses += m;
      this.stats.deviceReads++;
      this.stats.deviceBytes += buf.length;
      out.push(buf);
      for (let j = 0; j < m; j++) {
        this.#entries.set(key + j, buf.subarray(j * BLOCK_SIZE_BYTES, (j + 1) * BLOCK_SIZE_BYTES));
      }
      this.#bytes += m * BLOCK_SIZE_BYTES;
      i += m;
    }
    this.#evict();
  }

  #evict(): void {
    if (this.#bytes <= this.capacityBytes) return;
    for (const key of this.#entries.keys()) {
      this.#entries.delete(key);
      this.#bytes -= BLOCK_SIZE_BYTES;
      if (this.#bytes <= this.capacityBytes) break;
    }
  }

  /** Drops a replica's blocks (it was closed or its bytes may differ). */
  dropReplica(replica: ReplicaImage): void {
    const lo = replica.slot * SLOT_SHIFT;
    const hi = lo + SLOT_SHIFT;
    for (const key of this.#entries.keys()) {
      if (key >= lo && key < hi) {
        this.#entries.delete(key);
        this.#bytes -= BLOCK_SIZE_BYTES;
      }
    }
  }
}
