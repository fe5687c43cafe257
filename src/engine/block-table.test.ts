import { describe, expect, it } from 'vitest';
import { BlockTable, MAX_BLOCK } from './block-table.ts';

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

describe('BlockTable', () => {
  it('matches a Map under random sets, overwrites and deletes, including LBAs above 2^32', () => {
    const rnd = prng(7);
    const t = new BlockTable();
    const m = new Map<number, number>();
    for (let i = 0; i < 200_000; i++) {
      // Keys from a small range collide and get deleted often; some keys are far above 2^32.
      const lba = rnd() < 0.1 ? 2 ** 37 + Math.floor(rnd() * 5000) : Math.floor(rnd() * 20_000);
      const r = rnd();
      if (r < 0.55) {
        const p = Math.floor(rnd() * 1_000_000);
        t.set(lba, p);
        m.set(lba, p);
      } else if (r < 0.9) {
        expect(t.delete(lba)).toBe(m.delete(lba));
      } else {
        expect(t.get(lba)).toBe(m.get(lba));
        expect(t.has(lba)).toBe(m.has(lba));
      }
      if (i % 20_000 === 0) expect(t.size).toBe(m.size);
    }
    expect(t.size).toBe(m.size);
    for (const [lba, p] of m) expect(t.get(lba)).toBe(p);
    const seen = new Map(t.entries());
    expect(seen).toEqual(m);
    const viaForEach = new Map<number, number>();
    t.forEach((p, lba) => viaForEach.set(lba, p));
    expect(viaForEach).toEqual(m);
    expect([...t.keys()].sort((a, b) => a - b)).toEqual([...m.keys()].sort((a, b) => a - b));
    expect([...t.values()].sort((a, b) => a - b)).toEqual([...m.values()].sort((a, b) => a - b));
  });

  it('finds every remaining key after deleting runs of colliding keys (backward shift wraps the table end)', () => {
    const t = new BlockTable();
    for (let lba = 0; lba < 5000; lba++) t.set(lba, lba + 1);
    for (let lba = 0; lba < 5000; lba += 3) t.delete(lba);
    for (let lba = 0; lba < 5000; lba++) expect(t.get(lba)).toBe(lba % 3 === 0 ? undefined : lba + 1);
    expect(t.size).toBe(5000 - 1667);
  });

  it('gives its memory back when emptied and keeps working', () => {
    const t = new BlockTable();
    for (let lba = 0; lba < 1000; lba++) t.set(lba, lba);
    for (let lba = 0; lba < 1000; lba++) t.delete(lba);
    expect(t.size).toBe(0);
    expect(t.get(5)).toBeUndefined();
    t.set(5, 9);
    expect(t.get(5)).toBe(9);
    t.clear();
    expect(t.size).toBe(0);
    expect(t.has(5)).toBe(false);
  });

  it('refuses block numbers and LBAs it cannot store', () => {
    const t = new BlockTable();
    expect(() => t.set(1, MAX_BLOCK + 1)).toThrow(RangeError);
    expect(() => t.set(1, -1)).toThrow(RangeError);
    expect(() => t.set(-1, 0)).toThrow(RangeError);
    expect(() => t.set(2 ** 53, 0)).toThrow(RangeError);
    t.set(2 ** 40 + 3, MAX_BLOCK);
    expect(t.get(2 ** 40 + 3)).toBe(MAX_BLOCK);
    expect(t.get(3)).toBeUndefined();
  });
});
