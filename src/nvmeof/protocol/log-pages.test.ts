import { describe, expect, it } from 'vitest';
import { ADMIN_OPC, IO_OPC } from './constants.ts';
import { changedNamespaceLog, commandEffectsLog, DISCOVERY_ENTRY_BYTES, DISCOVERY_HEADER_BYTES, discoveryLog, smartLog } from './log-pages.ts';

describe('discovery log page (LID 70h)', () => {
  const entries = [
    { subnqn: 'nqn.2026-11.io.thicket:a', traddr: '192.0.2.10', trsvcid: '4420', adrfam: 1 as const, portid: 1, subtype: 2 as const },
    { subnqn: 'nqn.2026-11.io.thicket:b', traddr: 'fd00::1', trsvcid: '4420', adrfam: 2 as const, portid: 1, subtype: 2 as const },
  ];
  const b = discoveryLog(42, entries);

  it('has a 1024-byte header with GENCTR, NUMREC and RECFMT 0', () => {
    expect(b.length).toBe(DISCOVERY_HEADER_BYTES + 2 * DISCOVERY_ENTRY_BYTES);
    expect(b.readBigUInt64LE(0)).toBe(42n);
    expect(b.readBigUInt64LE(8)).toBe(2n);
    expect(b.readUInt16LE(16)).toBe(0);
    expect(b.subarray(18, 1024).every((x) => x === 0)).toBe(true);
  });

  it('lays out each 1024-byte entry: TRTYPE 3, ADRFAM, SUBTYPE 2, TREQ, PORTID, CNTLID 0xFFFF, ASQSZ', () => {
    const e = b.subarray(1024, 2048);
    expect(e[0]).toBe(3);
    expect(e[1]).toBe(1);
    expect(e[2]).toBe(2);
    expect(e[3] & 0x3).toBe(2); // secure channel not required
    expect(e.readUInt16LE(4)).toBe(1);
    expect(e.readUInt16LE(6)).toBe(0xffff);
    expect(e.readUInt16LE(8)).toBe(32);
    expect(e.readUInt16LE(10)).toBe(0); // EFLAGS
    expect(e.subarray(12, 32).every((x) => x === 0)).toBe(true);
    expect(b.subarray(2048)[1]).toBe(2); // IPv6 entry
  });

  it('space-pads TRSVCID at 32 and TRADDR at 512, NUL-terminates SUBNQN at 256', () => {
    const e = b.subarray(1024, 2048);
    expect(e.toString('latin1', 32, 64)).toBe('4420'.padEnd(32, ' '));
    expect(e.subarray(64, 256).every((x) => x === 0)).toBe(true);
    expect(e.toString('utf8', 256, 256 + entries[0].subnqn.length)).toBe(entries[0].subnqn);
    expect(e.subarray(256 + entries[0].subnqn.length, 512).every((x) => x === 0)).toBe(true);
    expect(e.toString('latin1', 512, 768)).toBe('192.0.2.10'.padEnd(256, ' '));
    expect(e[768]).toBe(0); // TSAS.SECTYPE none
  });

  it('is just the header when no subsystem is visible', () => {
    const empty = discoveryLog(7, []);
    expect(empty.length).toBe(1024);
    expect(empty.readBigUInt64LE(8)).toBe(0n);
  });
});

describe('other log pages', () => {
  it('SMART: 512 bytes with 128-bit counters at 32/48/64/80', () => {
    const b = smartLog({ dataUnitsRead: 5n, dataUnitsWritten: (1n << 64n) + 3n, hostReadCommands: 7n, hostWriteCommands: 9n });
    expect(b.length).toBe(512);
    expect(b.readBigUInt64LE(32)).toBe(5n);
    expect(b.readBigUInt64LE(48)).toBe(3n);
    expect(b.readBigUInt64LE(56)).toBe(1n);
    expect(b.readBigUInt64LE(64)).toBe(7n);
    expect(b.readBigUInt64LE(80)).toBe(9n);
    expect(b.readUInt16LE(1)).toBeGreaterThan(273); // kelvin
  });

  it('changed namespace list: sorted NSIDs, or 0xFFFFFFFF when more than 1024 changed', () => {
    const b = changedNamespaceLog([9, 2, 5]);
    expect(b.length).toBe(4096);
    expect([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8), b.readUInt32LE(12)]).toEqual([2, 5, 9, 0]);
    const many = changedNamespaceLog(Array.from({ length: 1025 }, (_, i) => i + 1));
    expect(many.readUInt32LE(0)).toBe(0xffffffff);
    expect(many.readUInt32LE(4)).toBe(0);
  });

  it('commands supported and effects: CSUPP for the admin commands, LBCC for writes', () => {
    const b = commandEffectsLog();
    expect(b.readUInt32LE(ADMIN_OPC.Identify * 4) & 1).toBe(1);
    expect(b.readUInt32LE(0x80 * 4)).toBe(0); // Format NVM is not supported
    expect(b.readUInt32LE((256 + IO_OPC.Write) * 4)).toBe(3);
    expect(b.readUInt32LE((256 + IO_OPC.Read) * 4)).toBe(1);
    expect(b.readUInt32LE((256 + 0x05) * 4)).toBe(0); // Compare
  });
});
