// LBA → data-file block for the blocks a clone owns: an open-addressing hash table in one Int32Array.
//
// Why not a Map: a clone with half of a 1 GiB disk written owns 131,072 blocks, and a random 4 KiB read
// looks one of them up. V8's ordered hash map spreads an entry over a bucket array and an entry array, so
// a cold lookup costs several cache misses (16 % of a random-read profile, about as much as the kernel's
// page-cache lookup). Here the key and the value share one 16-byte bucket: one cache line per lookup, and
// 16 bytes per bucket at a load factor of at most 1/2 (the Map used about as much per entry).
//
// Bucket b is table[4b..4b+3]: LBA low 32 bits, LBA high bits (LBAs reach 2^38 for a 1 PiB clone),
// block + 1 (0: empty), unused. Blocks are below 2^31 - 1 (a clone owns at most 8 TiB; see MAX_BLOCK).
// Deletion shifts later entries of the probe sequence back (no tombstones), so lookups stay short after
// any mix of writes, discards and resets.

const MIN_BUCKETS = 16;

/** The largest block number a table holds (the data file of one clone stays below 8 TiB). */
export const MAX_BLOCK = 0x7ffffffe;

export class BlockTable {
  #table = new Int32Array(MIN_BUCKETS * 4);
  #mask = MIN_BUCKETS - 1;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  #home(lo: number, hi: number): number {
    let h = Math.imul(lo ^ Math.imul(hi, 0x27d4eb2f), 0x85ebca6b);
    h ^= h >>> 15;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 13;
    return h & this.#mask;
  }

  /** The bucket holding lba, or -1. */
  #find(lba: number): number {
    const table = this.#table;
    const mask = this.#mask;
    const lo = lba | 0;
    const hi = (lba / 4294967296) | 0;
    for (let i = this.#home(lo, hi); ; i = (i + 1) & mask) {
      const b = i << 2;
      if (table[b + 2] === 0) return -1;
      if (table[b] === lo && table[b + 1] === hi) return i;
    }
  }

  get(lba: number): number | undefined {
    if (this.#size === 0) return undefined;
    const i = this.#find(lba);
    return i < 0 ? undefined : this.#table[(i << 2) + 2] - 1;
  }

  has(lba: number): boolean {
    return this.#size > 0 && this.#find(lba) >= 0;
  }

  set(lba: number, block: number): this {
    if (!(block >= 0 && block <= MAX_BLOCK) || !Number.isInteger(block)) throw new RangeError(`block ${block} is out of range`);
    if (!(lba >= 0) || !Number.isSafeInteger(lba)) throw new RangeError(`LBA ${lba} is out of range`);
    const i = this.#find(lba);
    if (i >= 0) {
      this.#table[(i << 2) + 2] = block + 1;
      return this;
    }
    if (2 * (this.#size + 1) > this.#mask + 1) this.#resize(2 * (this.#mask + 1));
    this.#insert(lba | 0, (lba / 4294967296) | 0, block + 1);
    this.#size++;
    return this;
  }

  #insert(lo: number, hi: number, stored: number): void {
    const table = this.#table;
    const mask = this.#mask;
    let i = this.#home(lo, hi);
    while (table[(i << 2) + 2] !== 0) i = (i + 1) & mask;
    const b = i << 2;
    table[b] = lo;
    table[b + 1] = hi;
    table[b + 2] = stored;
  }

  #resize(buckets: number): void {
    const old = this.#table;
    this.#table = new Int32Array(buckets * 4);
    this.#mask = buckets - 1;
    for (let b = 0; b < old.length; b += 4) if (old[b + 2] !== 0) this.#insert(old[b], old[b + 1], old[b + 2]);
  }

  delete(lba: number): boolean {
    if (this.#size === 0) return false;
    let i = this.#find(lba);
    if (i < 0) return false;
    const table = this.#table;
    const mask = this.#mask;
    table[(i << 2) + 2] = 0;
    this.#size--;
    for (let j = (i + 1) & mask; table[(j << 2) + 2] !== 0; j = (j + 1) & mask) {
      const b = j << 2;
      const home = this.#home(table[b], table[b + 1]);
      // The entry at j may move to i unless its home lies cyclically in (i, j].
      const stays = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!stays) {
        const d = i << 2;
        table[d] = table[b];
        table[d + 1] = table[b + 1];
        table[d + 2] = table[b + 2];
        table[b + 2] = 0;
        i = j;
      }
    }
    // A table emptied by discards gives its memory back.
    if (this.#size === 0 && this.#mask + 1 > MIN_BUCKETS) this.clear();
    return true;
  }

  clear(): void {
    this.#table = new Int32Array(MIN_BUCKETS * 4);
    this.#mask = MIN_BUCKETS - 1;
    this.#size = 0;
  }

  /** Calls fn for every entry (in table order). fn must not change the table. */
  forEach(fn: (block: number, lba: number) => void): void {
    const table = this.#table;
    for (let b = 0; b < table.length; b += 4) {
      if (table[b + 2] !== 0) fn(table[b + 2] - 1, lbaOf(table[b], table[b + 1]));
    }
  }

  /** Entries in table order. The table must not change while iterating (a delete shifts entries back). */
  *entries(): IterableIterator<[number, number]> {
    const table = this.#table;
    for (let b = 0; b < table.length; b += 4) if (table[b + 2] !== 0) yield [lbaOf(table[b], table[b + 1]), table[b + 2] - 1];
  }

  *keys(): IterableIterator<number> {
    for (const [lba] of this.entries()) yield lba;
  }

  *values(): IterableIterator<number> {
    for (const [, block] of this.entries()) yield block;
  }

  [Symbol.iterator](): IterableIterator<[number, number]> {
    return this.entries();
  }
}

function lbaOf(lo: number, hi: number): number {
  return hi * 4294967296 + (lo >>> 0);
}
