// Log pages: discovery (LID 70h), SMART/health, error information, changed namespaces, command effects.
import { ADMIN_OPC, IO_OPC } from './constants.ts';

export interface DiscoveryEntry {
  subnqn: string;
  traddr: string;
  trsvcid: string;
  adrfam: 1 | 2;
  portid: number;
  subtype: 2 | 3;
}

export const DISCOVERY_HEADER_BYTES = 1024;
export const DISCOVERY_ENTRY_BYTES = 1024;

function spacePadded(b: Buffer, offset: number, length: number, text: string): void {
  b.fill(0x20, offset, offset + length);
  b.write(text.slice(0, length), offset, 'latin1');
}

export function discoveryLog(genctr: number, entries: DiscoveryEntry[]): Buffer {
  const b = Buffer.alloc(DISCOVERY_HEADER_BYTES + entries.length * DISCOVERY_ENTRY_BYTES);
  b.writeBigUInt64LE(BigInt(genctr), 0);
  b.writeBigUInt64LE(BigInt(entries.length), 8);
  b.writeUInt16LE(0, 16); // RECFMT
  entries.forEach((e, i) => {
    const o = DISCOVERY_HEADER_BYTES + i * DISCOVERY_ENTRY_BYTES;
    b[o] = 3; // TRTYPE TCP
    b[o + 1] = e.adrfam;
    b[o + 2] = e.subtype;
    b[o + 3] = 0x02 | 0x04; // TREQ: secure channel not required; SQ flow control disable allowed
    b.writeUInt16LE(e.portid, o + 4);
    b.writeUInt16LE(0xffff, o + 6); // CNTLID: dynamic
    b.writeUInt16LE(32, o + 8); // ASQSZ
    b.writeUInt16LE(0, o + 10); // EFLAGS
    spacePadded(b, o + 32, 32, e.trsvcid);
    b.write(e.subnqn.slice(0, 255), o + 256, 'utf8');
    spacePadded(b, o + 512, 256, e.traddr);
    b[o + 768] = 0; // TSAS.SECTYPE none
  });
  return b;
}

export interface SmartCounters {
  dataUnitsRead: bigint;
  dataUnitsWritten: bigint;
  hostReadCommands: bigint;
  hostWriteCommands: bigint;
}

/** SMART / health information (512 bytes); data units are thousands of 512-byte units. */
export function smartLog(c: SmartCounters): Buffer {
  const b = Buffer.alloc(512);
  b[0] = 0; // critical warning
  b.writeUInt16LE(273 + 20, 1); // composite temperature in kelvin (20 °C)
  b[3] = 100; // available spare
  b[4] = 10; // spare threshold
  b[5] = 0; // percentage used
  const write128 = (off: number, v: bigint) => {
    b.writeBigUInt64LE(v & 0xffff_ffff_ffff_ffffn, off);
    b.writeBigUInt64LE(v >> 64n, off + 8);
  };
  write128(32, c.dataUnitsRead);
  write128(48, c.dataUnitsWritten);
  write128(64, c.hostReadCommands);
  write128(80, c.hostWriteCommands);
  return b;
}

/** Changed namespace list (4096 bytes): up to 1024 NSIDs, or 0xFFFFFFFF first when more changed. */
export function changedNamespaceLog(nsids: number[]): Buffer {
  const b = Buffer.alloc(4096);
  if (nsids.length > 1024) {
    b.writeUInt32LE(0xffffffff, 0);
    return b;
  }
  [...nsids].sort((x, y) => x - y).forEach((n, i) => b.writeUInt32LE(n, i * 4));
  return b;
}

/** Commands supported and effects (4096 bytes). */
export function commandEffectsLog(): Buffer {
  const b = Buffer.alloc(4096);
  const CSUPP = 1;
  const LBCC = 2;
  for (const opc of [ADMIN_OPC.GetLogPage, ADMIN_OPC.Identify, ADMIN_OPC.Abort, ADMIN_OPC.SetFeatures, ADMIN_OPC.GetFeatures, ADMIN_OPC.AsyncEventRequest, ADMIN_OPC.KeepAlive]) {
    b.writeUInt32LE(CSUPP, opc * 4);
  }
  b.writeUInt32LE(CSUPP, (256 + IO_OPC.Flush) * 4);
  b.writeUInt32LE(CSUPP | LBCC, (256 + IO_OPC.Write) * 4);
  b.writeUInt32LE(CSUPP, (256 + IO_OPC.Read) * 4);
  b.writeUInt32LE(CSUPP | LBCC, (256 + IO_OPC.WriteZeroes) * 4);
  b.writeUInt32LE(CSUPP | LBCC, (256 + IO_OPC.DatasetManagement) * 4);
  return b;
}
