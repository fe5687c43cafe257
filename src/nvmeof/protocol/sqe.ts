// A lazily decoded view of a 64-byte submission queue entry (little-endian).

export class Sqe {
  readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
  get opc(): number {
    return this.buf[0];
  }
  get fuse(): number {
    return this.buf[1] & 0x3;
  }
  get psdt(): number {
    return (this.buf[1] >> 6) & 0x3;
  }
  get cid(): number {
    return this.buf.readUInt16LE(2);
  }
  get nsid(): number {
    return this.buf.readUInt32LE(4);
  }
  /** Fabrics commands: FCTYPE in byte 4. */
  get fctype(): number {
    return this.buf[4];
  }
  get sglAddress(): bigint {
    return this.buf.readBigUInt64LE(24);
  }
  get sglLength(): number {
    return this.buf.readUInt32LE(32);
  }
  get sglType(): number {
    return this.buf[39];
  }
  cdw(n: 10 | 11 | 12 | 13 | 14 | 15): number {
    return this.buf.readUInt32LE(40 + (n - 10) * 4);
  }
  /** SLBA of Read/Write/Write Zeroes (CDW10-11), exact below 2^53. */
  get slba(): number {
    return this.buf.readUInt32LE(40) + this.buf.readUInt32LE(44) * 0x1_0000_0000;
  }
  /** NLB, 1-based (the wire value is 0's based). */
  get nlb(): number {
    return (this.buf.readUInt16LE(48) & 0xffff) + 1;
  }
  get fua(): boolean {
    return (this.buf.readUInt32LE(48) & (1 << 30)) !== 0;
  }
}
