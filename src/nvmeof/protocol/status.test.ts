import { describe, expect, it } from 'vitest';
import { nvmeStatus, STATUS, statusSc, statusSct, SUCCESS } from './status.ts';

describe('NVMe status encoding', () => {
  it('puts DNR at bit 15, SCT at bits 11:9, SC at bits 8:1 and leaves the phase bit 0', () => {
    const s = nvmeStatus(1, 0x84, true);
    expect(s).toBe((1 << 15) | (1 << 9) | (0x84 << 1));
    expect(s & 1).toBe(0);
    expect(statusSct(s)).toBe(1);
    expect(statusSc(s)).toBe(0x84);
    expect(nvmeStatus(0, 0x22, false) & 0x8000).toBe(0);
  });

  it('is never shifted one bit too far (Linux reports "status 16384" then)', () => {
    expect(STATUS.ConnectInvalidHost).toBe(0x8000 | 0x0200 | 0x0108);
    expect(STATUS.ConnectInvalidHost).not.toBe(0x4000);
  });

  it('masks out-of-range SCT and SC', () => {
    expect(nvmeStatus(9, 0x1ff, false)).toBe(((9 & 7) << 9) | (0xff << 1));
  });

  it('matches the table of status codes', () => {
    expect(SUCCESS).toBe(0);
    const table: Array<[keyof typeof STATUS, number, number, boolean]> = [
      ['InvalidOpcode', 0, 0x01, true],
      ['InvalidField', 0, 0x02, true],
      ['CommandIdConflict', 0, 0x03, true],
      ['InternalError', 0, 0x06, false],
      ['InvalidNamespace', 0, 0x0b, true],
      ['CommandSequenceError', 0, 0x0c, true],
      ['DataSglLengthInvalid', 0, 0x0f, true],
      ['SglDescriptorTypeInvalid', 0, 0x11, true],
      ['SglOffsetInvalid', 0, 0x16, true],
      ['KeepAliveTimeoutInvalid', 0, 0x1a, true],
      ['TransientTransportError', 0, 0x22, false],
      ['LbaOutOfRange', 0, 0x80, true],
      ['CapacityExceeded', 0, 0x81, true],
      ['NamespaceNotReady', 0, 0x82, false],
      ['AsyncEventLimitExceeded', 1, 0x05, true],
      ['ConnectIncompatibleFormat', 1, 0x80, true],
      ['ConnectInvalidParameters', 1, 0x82, true],
      ['ConnectInvalidHost', 1, 0x84, true],
      ['UnrecoveredReadError', 2, 0x81, true],
    ];
    for (const [name, sct, sc, dnr] of table) {
      const s = STATUS[name];
      expect({ name, sct: statusSct(s), sc: statusSc(s), dnr: (s & 0x8000) !== 0, p: s & 1 }).toEqual({ name, sct, sc, dnr, p: 0 });
    }
  });
});
