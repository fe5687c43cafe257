import { describe, expect, it } from 'vitest';
import { crc32c, crc32cList } from './digest.ts';

describe('CRC32C (NVMe/TCP header and data digest)', () => {
  it('has the Castagnoli check value 0xE3069283 for "123456789"', () => {
    expect(crc32c(Buffer.from('123456789', 'ascii'))).toBe(0xe3069283);
  });

  it('is not the IEEE CRC-32 (0xCBF43926)', () => {
    expect(crc32c(Buffer.from('123456789', 'ascii'))).not.toBe(0xcbf43926);
  });

  it('is 0 for no bytes and returns an unsigned value', () => {
    expect(crc32c(Buffer.alloc(0))).toBe(0);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBeGreaterThanOrEqual(0);
  });

  it('gives the same result over a gather list as over the joined bytes', () => {
    const whole = Buffer.from(Array.from({ length: 10_000 }, (_, i) => (i * 7 + 3) & 0xff));
    const parts = [whole.subarray(0, 1), whole.subarray(1, 4097), whole.subarray(4097, 4097), whole.subarray(4097)];
    expect(crc32cList(parts)).toBe(crc32c(whole));
    expect(crc32c(whole.subarray(5), crc32c(whole.subarray(0, 5)))).toBe(crc32c(whole));
  });

  it('matches known vectors (32 zero bytes, 32 0xFF bytes, iSCSI test vectors)', () => {
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
  });
});
