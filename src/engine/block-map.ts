// A clone's block map: LBA → a block the clone owns (its number in the clone's data file), ZERO, or,
// when absent from both, INHERIT (read the replica, or zeroes past the replica's end). Memory grows with
// the blocks written: owned blocks one hash-table entry each (block-table.ts), ZERO as intervals.
import { BlockTable } from './block-table.ts';
import { IntervalSet } from './interval-set.ts';

export const MAP_ZERO = -1;
export const MAP_INHERIT = -2;

export type Run =
  | { kind: 'owned'; lba: number; n: number; pblock: number }
  | { kind: 'inherit'; lba: number; n: number }
  | { kind: 'zero'; lba: number; n: number };

export class BlockMap {
  readonly owned = new BlockTable();
  readonly zero = new IntervalSet();

  get ownedCount(): number {
    return this.owned.size;
  }

  /**
   * Splits [slba, slba+nlb) into maximal runs of owned blocks with consecutive block numbers, inherited
   * blocks (below `inheritLimit`, the replica's length in blocks) and zero blocks.
   */
  runs(slba: number, nlb: number, inheritLimit: number): Run[] {
    const out: Run[] = [];
    const end = slba + nlb;
    let lba = slba;
    const noOwned = this.owned.size === 0;
    while (lba < end) {
      const p = noOwned ? undefined : this.owned.get(lba);
      if (p !== undefined) {
        let n = 1;
        while (lba + n < end && this.owned.get(lba + n) === p + n) n++;
        out.push({ kind: 'owned', lba, n, pblock: p });
        lba += n;
        continue;
      }
      // Not owned: the stretch up to the next owned block is ZERO or INHERIT, decided by the zero set
      // and the replica's end.
      let stop = noOwned ? end : lba + 1;
      while (stop < end && !this.owned.has(stop)) stop++;
      let x = lba;
      while (x < stop) {
        const z = this.zero.runAt(x);
        if (z.inside) {
          const until = Math.min(z.until, stop);
          pushRun(out, 'zero', x, until - x);
          x = until;
        } else {
          const until = Math.min(z.until, stop);
          if (x < inheritLimit) {
            const inheritUntil = Math.min(until, inheritLimit);
            pushRun(out, 'inherit', x, inheritUntil - x);
            if (inheritUntil < until) pushRun(out, 'zero', inheritUntil, until - inheritUntil);
          } else {
            pushRun(out, 'zero', x, until - x);
          }
          x = until;
        }
      }
      lba = stop;
    }
    return out;
  }

  /** Removes owned entries in [start, end) and returns the freed block numbers. */
  dropOwned(start: number, end: number): number[] {
    const freed: number[] = [];
    if (this.owned.size === 0) return freed;
    if (end - start <= this.owned.size) {
      for (let lba = start; lba < end; lba++) {
        const p = this.owned.get(lba);
        if (p !== undefined) {
          freed.push(p);
          this.owned.delete(lba);
        }
      }
    } else {
      const drop: number[] = [];
      this.owned.forEach((p, lba) => {
        if (lba >= start && lba < end) {
          freed.push(p);
          drop.push(lba);
        }
      });
      for (const lba of drop) this.owned.delete(lba);
    }
    return freed;
  }

  clear(): void {
    this.owned.clear();
    this.zero.clear();
  }
}

function pushRun(out: Run[], kind: 'zero' | 'inherit', lba: number, n: number): void {
  if (n <= 0) return;
  const last = out[out.length - 1];
  if (last && last.kind === kind && last.lba + last.n === lba) last.n += n;
  else out.push({ kind, lba, n });
}
