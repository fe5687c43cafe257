// A set of block numbers kept as sorted, disjoint, non-adjacent half-open intervals [start, end).
// Used for ZERO ranges of a clone map, so deallocating a whole 64 GiB volume costs one interval.

export class IntervalSet {
  // starts[i] < ends[i] <= starts[i+1] - 1 (adjacent intervals are merged)
  #starts: number[] = [];
  #ends: number[] = [];

  get size(): number {
    return this.#starts.length;
  }

  /** Total number of blocks covered. */
  get count(): number {
    let n = 0;
    for (let i = 0; i < this.#starts.length; i++) n += this.#ends[i] - this.#starts[i];
    return n;
  }

  /** Index of the last interval whose start <= x, or -1. */
  #floor(x: number): number {
    let lo = 0;
    let hi = this.#starts.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.#starts[mid] <= x) {
        ans = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return ans;
  }

  has(x: number): boolean {
    const i = this.#floor(x);
    return i >= 0 && x < this.#ends[i];
  }

  /** If x is inside an interval, returns its end; otherwise the start of the next interval (or Infinity) negated minus one. */
  runAt(x: number): { inside: boolean; until: number } {
    const i = this.#floor(x);
    if (i >= 0 && x < this.#ends[i]) return { inside: true, until: this.#ends[i] };
    const next = i + 1 < this.#starts.length ? this.#starts[i + 1] : Infinity;
    return { inside: false, until: next };
  }

  add(start: number, end: number): void {
    if (end <= start) return;
    // Find intervals that overlap or touch [start, end) and merge them.
    let i = this.#floor(start);
    if (i < 0 || this.#ends[i] < start) i++;
    let j = i;
    let newStart = start;
    let newEnd = end;
    while (j < this.#starts.length && this.#starts[j] <= end) {
      newStart = Math.min(newStart, this.#starts[j]);
      newEnd = Math.max(newEnd, this.#ends[j]);
      j++;
    }
    this.#starts.splice(i, j - i, newStart);
    this.#ends.splice(i, j - i, newEnd);
  }

  remove(start: number, end: number): void {
    if (end <= start || this.#starts.length === 0) return;
    let i = this.#floor(start);
    if (i < 0 || this.#ends[i] <= start) i++;
    const newStarts: number[] = [];
    const newEnds: number[] = [];
    let j = i;
    while (j < this.#starts.length && this.#starts[j] < end) {
      if (this.#starts[j] < start) {
        newStarts.push(this.#starts[j]);
        newEnds.push(start);
      }
      if (this.#ends[j] > end) {
        newStarts.push(end);
        newEnds.push(this.#ends[j]);
      }
      j++;
    }
    if (j === i) return;
    this.#starts.splice(i, j - i, ...newStarts);
    this.#ends.splice(i, j - i, ...newEnds);
  }

  clear(): void {
    this.#starts = [];
    this.#ends = [];
  }

  *intervals(): Generator<[number, number]> {
    for (let i = 0; i < this.#starts.length; i++) yield [this.#starts[i], this.#ends[i]];
  }
}
