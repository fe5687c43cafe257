// A TypeScript NVMe/TCP host queue (initiator side), for tests, benchmarks and tooling. It speaks the
// same wire format as the Linux host: ICReq, Connect, in-capsule writes up to the in-capsule size, R2T +
// H2CData above it, C2HData reads (also completed by a C2HData with the SUCCESS flag), optional header
// and data digests.
//
// For benchmarks a queue can avoid per-command allocations and copies: `readInto` (read data copied into
// the caller's buffer), `readViews` (no copy: views of the received socket chunks) and `batchWrites`
// (every PDU submitted in one tick leaves in one socket write, as the Linux host coalesces with MSG_MORE).
import net from 'node:net';
import { CAPSULE_CMD_HLEN, DATA_PDU_HLEN, DIGEST_BYTES, FCTYPE, IC_PDU_BYTES, OPC_FABRICS, PDU_FLAG, PDU_TYPE, SGL } from '../protocol/constants.ts';
import { crc32c, crc32cList } from '../protocol/digest.ts';
import { ByteQueue, contiguous, slice } from '../transport/byte-queue.ts';

export interface HostCompletion {
  status: number;
  dw0: number;
  dw1: number;
  sqhd: number;
  data?: Buffer;
  /** With `readViews`: the read data as views of received chunks (in order, no copy). */
  views?: Buffer[];
}

export interface SubmitOptions {
  write?: Buffer;
  readLength?: number;
  forceInCapsule?: boolean;
  /** Copy read data into this buffer (at least readLength bytes) instead of a fresh one. */
  readInto?: Buffer;
  /** Return read data as views of the received chunks (`views`), without copying. */
  readViews?: boolean;
}

export class TermReqError extends Error {
  readonly fes: number;
  readonly fei: number;
  constructor(fes: number, fei: number) {
    super(`target sent C2HTermReq (FES ${fes}, FEI ${fei})`);
    this.fes = fes;
    this.fei = fei;
  }
}

interface Pending {
  resolve: (c: HostCompletion) => void;
  reject: (e: Error) => void;
  readLength: number;
  readBuf?: Buffer;
  readViews?: Buffer[];
  readGot: number;
  writeData?: Buffer;
}

export interface HostQueueOptions {
  host: string;
  port: number;
  hdgst?: boolean;
  ddgst?: boolean;
  hpda?: number;
  timeoutMs?: number;
}

export class HostQueue {
  readonly socket: net.Socket;
  hdgst = false;
  ddgst = false;
  maxh2cdata = 0;
  cpda = 0;
  /** In-capsule data limit for writes on this queue. */
  inCapsuleBytes = 8192;
  /** Coalesce the PDUs of one tick into one socket write (cork until process.nextTick). */
  batchWrites = false;
  #corked = false;
  #ch = Buffer.alloc(8);
  #in = new ByteQueue();
  #pending = new Map<number, Pending>();
  #nextCid = 1;
  #closedError: Error | undefined;
  #icResolve: ((b: Buffer) => void) | undefined;
  termReq: TermReqError | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.#onData(c));
    socket.on('error', (e) => this.#fail(e));
    socket.on('close', () => this.#fail(this.termReq ?? new Error('connection closed')));
  }

  static async open(options: HostQueueOptions): Promise<HostQueue> {
    const socket = net.connect({ host: options.host, port: options.port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const q = new HostQueue(socket);
    const icreq = Buffer.alloc(IC_PDU_BYTES);
    icreq[0] = PDU_TYPE.ICReq;
    icreq[2] = IC_PDU_BYTES;
    icreq.writeUInt32LE(IC_PDU_BYTES, 4);
    icreq[10] = options.hpda ?? 0;
    icreq[11] = (options.hdgst ? 1 : 0) | (options.ddgst ? 2 : 0);
    const resp = await new Promise<Buffer>((resolve, reject) => {
      q.#icResolve = resolve;
      const t = setTimeout(() => reject(new Error('no ICResp')), options.timeoutMs ?? 5000);
      socket.once('close', () => reject(q.termReq ?? new Error('connection closed before ICResp')));
      socket.write(icreq);
      void t;
    }).finally(() => {});
    q.cpda = resp[10];
    q.hdgst = (resp[11] & 1) !== 0;
    q.ddgst = (resp[11] & 2) !== 0;
    q.maxh2cdata = resp.readUInt32LE(12);
    return q;
  }

  #fail(e: Error): void {
    if (this.#closedError) return;
    this.#closedError = e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  get closed(): boolean {
    return this.#closedError !== undefined;
  }

  #onData(chunk: Buffer): void {
    this.#in.push(chunk);
    const ch = this.#ch;
    for (let guard = 0; guard < 1_000_000; guard++) {
      if (this.#in.length < 8) return;
      this.#in.peekInto(ch, 8);
      const plen = ch.readUInt32LE(4);
      if (this.#in.length < plen) return;
      const pdu = this.#in.take(plen);
      this.#handle(ch[0], pdu, plen);
    }
  }

  #handle(type: number, pdu: Buffer[], plen: number): void {
    const hd = this.hdgst ? DIGEST_BYTES : 0;
    if (type === PDU_TYPE.ICResp) {
      this.#icResolve?.(contiguous(pdu, 0, IC_PDU_BYTES));
      this.#icResolve = undefined;
      return;
    }
    if (type === PDU_TYPE.C2HTermReq) {
      const h = contiguous(pdu, 0, DATA_PDU_HLEN);
      this.termReq = new TermReqError(h.readUInt16LE(8), h.readUInt32LE(10));
      this.#fail(this.termReq);
      return;
    }
    const h = contiguous(pdu, 0, DATA_PDU_HLEN + hd);
    if (this.hdgst) {
      if (!(h[1] & PDU_FLAG.HDGSTF) || crc32c(h.subarray(0, DATA_PDU_HLEN)) !== h.readUInt32LE(DATA_PDU_HLEN)) {
        this.#fail(new Error('bad header digest from target'));
        this.socket.destroy();
        return;
      }
    }
    if (h[2] !== DATA_PDU_HLEN) {
      this.#fail(new Error(`unexpected header length ${h[2]}`));
      return;
    }
    if (type === PDU_TYPE.CapsuleResp) {
      const cid = h.readUInt16LE(20);
      const p = this.#pending.get(cid);
      if (!p) return;
      this.#pending.delete(cid);
      p.resolve({ dw0: h.readUInt32LE(8), dw1: h.readUInt32LE(12), sqhd: h.readUInt16LE(16), status: h.readUInt16LE(22), data: p.readBuf, views: p.readViews });
      return;
    }
    if (type === PDU_TYPE.C2HData) {
      const cid = h.readUInt16LE(8);
      const datao = h.readUInt32LE(12);
      const datal = h.readUInt32LE(16);
      const pdo = h[3];
      const p = this.#pending.get(cid);
      if (!p || p.readLength === 0) {
        this.#fail(new Error(`C2HData for unknown command ${cid}`));
        return;
      }
      const data = slice(pdu, pdo, datal);
      if (this.ddgst) {
        if (!(h[1] & PDU_FLAG.DDGSTF)) return this.#fail(new Error('C2HData without data digest'));
        const dg = contiguous(pdu, plen - DIGEST_BYTES, DIGEST_BYTES).readUInt32LE(0);
        if (crc32cList(data) !== dg) return this.#fail(new Error('bad data digest from target'));
      }
      if (datao + datal > p.readLength) return this.#fail(new Error('C2HData beyond the command length'));
      if (p.readViews) {
        for (const v of data) p.readViews.push(v);
      } else {
        let off = datao;
        for (const v of data) {
          v.copy(p.readBuf!, off);
          off += v.length;
        }
      }
      p.readGot += datal;
      if (h[1] & PDU_FLAG.SUCCESS) {
        // The target completed the command with this PDU: no CapsuleResp follows (SQ flow control off).
        if (!(h[1] & PDU_FLAG.LAST_PDU)) return this.#fail(new Error('C2HData with SUCCESS but not LAST_PDU'));
        if (p.readGot !== p.readLength) return this.#fail(new Error('C2HData SUCCESS before all data arrived'));
        this.#pending.delete(cid);
        p.resolve({ dw0: 0, dw1: 0, sqhd: 0, status: 0, data: p.readBuf, views: p.readViews });
      }
      return;
    }
    if (type === PDU_TYPE.R2T) {
      const cid = h.readUInt16LE(8);
      const ttag = h.readUInt16LE(10);
      const r2to = h.readUInt32LE(12);
      const r2tl = h.readUInt32LE(16);
      const p = this.#pending.get(cid);
      if (!p?.writeData) return this.#fail(new Error(`R2T for unknown command ${cid}`));
      this.#sendH2CData(cid, ttag, p.writeData, r2to, r2tl);
      return;
    }
    this.#fail(new Error(`unexpected PDU type ${type}`));
  }

  #sendH2CData(cid: number, ttag: number, data: Buffer, r2to: number, r2tl: number): void {
    const hd = this.hdgst ? DIGEST_BYTES : 0;
    const dd = this.ddgst ? DIGEST_BYTES : 0;
    this.#cork();
    for (let off = r2to; off < r2to + r2tl; ) {
      const n = Math.min(this.maxh2cdata, r2to + r2tl - off);
      const last = off + n === r2to + r2tl;
      const h = Buffer.alloc(DATA_PDU_HLEN + hd);
      h[0] = PDU_TYPE.H2CData;
      h[1] = (last ? PDU_FLAG.LAST_PDU : 0) | (this.hdgst ? PDU_FLAG.HDGSTF : 0) | (this.ddgst ? PDU_FLAG.DDGSTF : 0);
      h[2] = DATA_PDU_HLEN;
      h[3] = DATA_PDU_HLEN + hd;
      h.writeUInt32LE(DATA_PDU_HLEN + hd + n + dd, 4);
      h.writeUInt16LE(cid, 8);
      h.writeUInt16LE(ttag, 10);
      h.writeUInt32LE(off, 12);
      h.writeUInt32LE(n, 16);
      if (this.hdgst) h.writeUInt32LE(crc32c(h.subarray(0, DATA_PDU_HLEN)), DATA_PDU_HLEN);
      const payload = data.subarray(off, off + n);
      this.socket.write(h);
      this.socket.write(payload);
      if (this.ddgst) {
        const d = Buffer.alloc(4);
        d.writeUInt32LE(crc32c(payload), 0);
        this.socket.write(d);
      }
      off += n;
    }
    this.#uncork();
  }

  #cork(): void {
    if (this.#corked) return;
    this.socket.cork();
    if (this.batchWrites) {
      this.#corked = true;
      process.nextTick(this.#release);
    }
  }

  #uncork(): void {
    if (!this.batchWrites) this.socket.uncork();
  }

  #release = (): void => {
    this.#corked = false;
    this.socket.uncork();
  };

  /** Encodes a CapsuleCmd for a 64-byte SQE (CID filled in) with optional in-capsule data. */
  encodeCapsule(sqe: Buffer, inCapsule?: Buffer): Buffer[] {
    return this.#encodeCapsule(sqe, inCapsule, -1, 0, 0);
  }

  /** encodeCapsule, with CID, PSDT and the SGL descriptor set in the PDU when cid >= 0 (no SQE copy). */
  #encodeCapsule(sqe: Buffer, inCapsule: Buffer | undefined, cid: number, sglType: number, sglLength: number): Buffer[] {
    const hd = this.hdgst ? DIGEST_BYTES : 0;
    const dd = this.ddgst && inCapsule && inCapsule.length > 0 ? DIGEST_BYTES : 0;
    const dataLen = inCapsule?.length ?? 0;
    // Every byte is written below; allocUnsafe takes a slice of Node's pool instead of new memory.
    const h = Buffer.allocUnsafe(CAPSULE_CMD_HLEN + hd);
    h[0] = PDU_TYPE.CapsuleCmd;
    h[1] = (this.hdgst ? PDU_FLAG.HDGSTF : 0) | (dd ? PDU_FLAG.DDGSTF : 0);
    h[2] = CAPSULE_CMD_HLEN;
    h[3] = dataLen > 0 ? CAPSULE_CMD_HLEN + hd : 0;
    h.writeUInt32LE(CAPSULE_CMD_HLEN + hd + dataLen + dd, 4);
    const copied = sqe.copy(h, 8, 0, Math.min(sqe.length, CAPSULE_CMD_HLEN - 8));
    if (copied < CAPSULE_CMD_HLEN - 8) h.fill(0, 8 + copied, CAPSULE_CMD_HLEN);
    if (cid >= 0) {
      h.writeUInt16LE(cid, 8 + 2);
      h[8 + 1] = (h[8 + 1] & 0x3f) | 0x40; // PSDT = SGL
      h[8 + 39] = sglType;
      h.writeBigUInt64LE(0n, 8 + 24);
      h.writeUInt32LE(sglLength, 8 + 32);
    }
    if (this.hdgst) h.writeUInt32LE(crc32c(h.subarray(0, CAPSULE_CMD_HLEN)), CAPSULE_CMD_HLEN);
    const out: Buffer[] = [h];
    if (dataLen > 0) {
      out.push(inCapsule!);
      if (dd) {
        const d = Buffer.alloc(4);
        d.writeUInt32LE(crc32c(inCapsule!), 0);
        out.push(d);
      }
    }
    return out;
  }

  allocCid(): number {
    for (let i = 0; i < 0x10000; i++) {
      const cid = this.#nextCid;
      this.#nextCid = (this.#nextCid + 1) & 0xffff;
      if (!this.#pending.has(cid)) return cid;
    }
    throw new Error('no free command id');
  }

  /**
   * Submits a command. `sqe` is 64 bytes without CID and SGL (filled in here). `write` data goes in-capsule
   * when it fits, else by R2T; `readLength` bytes are expected back by C2HData.
   */
  submit(sqe: Buffer, options: SubmitOptions = {}): Promise<HostCompletion> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const cid = this.allocCid();
    const write = options.write;
    const readLength = options.readLength ?? 0;
    const fabricsConnect = sqe[0] === OPC_FABRICS && sqe[4] === FCTYPE.Connect;
    const inCapsule = write && (options.forceInCapsule || fabricsConnect || write.length <= this.inCapsuleBytes);
    const sglType = write && inCapsule ? SGL.DataBlockOffset : SGL.TransportDataBlock;
    const sglLength = write ? write.length : readLength;
    let readBuf: Buffer | undefined;
    if (readLength > 0 && !options.readViews) {
      readBuf = options.readInto && options.readInto.length >= readLength ? options.readInto.subarray(0, readLength) : Buffer.alloc(readLength);
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(cid, {
        resolve,
        reject,
        readLength,
        readGot: 0,
        readBuf,
        readViews: readLength > 0 && options.readViews ? [] : undefined,
        writeData: write && !inCapsule ? write : undefined,
      });
      const pdus = this.#encodeCapsule(sqe, inCapsule ? write : undefined, cid, sglType, sglLength);
      this.#cork();
      for (const b of pdus) this.socket.write(b);
      this.#uncork();
    });
  }

  /** Sends raw bytes (for protocol tests). */
  writeRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  close(): void {
    this.socket.destroy();
  }
}
