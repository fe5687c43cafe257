// One NVMe/TCP connection (one queue): the receive state machine, R2T for large writes, C2HData for
// reads, digests and backpressure. It moves bytes; controllers (target/) decide what commands mean.
//
// Every length read off the wire is checked against a cap before anything waits for or keeps that many
// bytes, and any protocol violation ends this connection (C2HTermReq, then close) and nothing else.
import type { Socket } from 'node:net';
import {
  CAPSULE_CMD_HLEN,
  DATA_PDU_HLEN,
  DIGEST_BYTES,
  FCTYPE,
  FES,
  IC_PDU_BYTES,
  IO_OPC,
  OPC_FABRICS,
  PDU_COMMON_HEADER_BYTES,
  PDU_FLAG,
  PDU_TYPE,
  SGL,
  SQE_BYTES,
  DISCOVERY_NQN,
} from '../protocol/constants.ts';
import { crc32c, crc32cList } from '../protocol/digest.ts';
import { encodeC2HTermReq, encodeDigest, encodeIcResp, smallPduBytes, writeC2HDataHeader, writeCapsuleResp, writeR2T } from '../protocol/pdu.ts';
import { Sqe } from '../protocol/sqe.ts';
import { STATUS, SUCCESS, type NvmeStatus } from '../protocol/status.ts';
import { IO_IN_CAPSULE_BYTES, type Completion, type Controller, type ControllerQueue } from '../target/controller.ts';
import type { Target } from '../target/target.ts';
import { ByteQueue, contiguous, slice } from './byte-queue.ts';

/** In-capsule data accepted on the admin queue and for any Fabrics command (Linux sends 1 KiB Connect data). */
export const ADMIN_IN_CAPSULE_BYTES = 8192;
export const DEFAULT_MAXH2CDATA = 1024 * 1024;
const MAX_TERMREQ_PLEN = 152;
const OUTPUT_HIGH_WATER_BYTES = 16 * 1024 * 1024;
/** Output arena for the small PDUs (responses, C2HData headers, R2Ts): about 340 of them per 16 KiB. */
const ARENA_BYTES = 16 * 1024;
/** Reads of this size get a pooled buffer their owned blocks are read into (see #execute). */
const SCRATCH_BYTES = 4096;
const SCRATCH_POOL_MAX = 256;
const DEFAULT_SETUP_TIMEOUT_MS = 30_000;

type QueueState = 'icreq' | 'connect' | 'live' | 'closing';

interface PendingWrite {
  sqe: Sqe;
  ttag: number;
  total: number;
  received: number;
  /** End of the current R2T window. */
  windowEnd: number;
  views: Buffer[];
}

export interface TcpQueueOptions {
  maxh2cdata?: number;
  /**
   * A connection that has not sent ICReq and completed a Fabrics Connect within this time is closed: a
   * peer that opens sockets and stays silent would otherwise hold them (and their buffers) forever.
   * Keep Alive only starts once a controller exists. Default 30 s.
   */
  setupTimeoutMs?: number;
  /** Only the discovery NQN may be connected on this port. */
  discoveryOnly?: boolean;
  log?: (msg: string, detail?: Record<string, unknown>) => void;
}

export class TcpQueue implements ControllerQueue {
  readonly socket: Socket;
  #target: Target;
  #options: Required<Omit<TcpQueueOptions, 'log' | 'setupTimeoutMs'>>;
  #setupTimer: NodeJS.Timeout | undefined;
  #log: NonNullable<TcpQueueOptions['log']>;
  #in = new ByteQueue();
  #ch = Buffer.alloc(PDU_COMMON_HEADER_BYTES);
  state: QueueState = 'icreq';
  hdgst = false;
  ddgst = false;
  #c2hPad = 0;
  qid = -1;
  sqsize = 0;
  controller: Controller | undefined;
  #sqhd = 0;
  /** The host disabled SQ flow control at Connect (CATTR bit 2): every completion carries SQHD FFFFh. */
  #sqflowDisabled = false;
  #inflight = new Set<number>();
  #writes = new Map<number, PendingWrite>();
  #nextTtag = 1;
  #out: Buffer[] = [];
  /**
   * Small PDUs are written into this arena instead of a buffer each; bytes [#arenaStart, #arenaPos) are
   * not yet in #out and leave as one chunk. Bytes already handed to the socket are never overwritten:
   * the arena restarts at 0 only when nothing of it is pending (#arenaOut) and the socket has passed
   * everything to the kernel (writableLength 0), else a fresh arena is taken.
   */
  #arena: Buffer | undefined;
  #arenaPos = 0;
  #arenaStart = 0;
  #arenaOut = false;
  /**
   * Pooled 4 KiB read buffers: a Read's backend may read device data into one and return a view of it.
   * Once its response is queued it waits in #scratchSent; it goes back to #scratchFree only when the
   * socket has handed everything written so far to the kernel (writableLength 0), so it is never
   * overwritten while queued.
   */
  #scratchFree: Buffer[] = [];
  #scratchSent: Buffer[] = [];
  #flushScheduled = false;
  /** Inside #onData: output waits for the flush at its end. */
  #inData = false;
  /** Output queued since the last flush. */
  #pendingOutput = false;
  #flush = () => this.#flushOutput();
  #paused = false;
  stats = { pdusIn: 0, pdusOut: 0, commands: 0 };

  constructor(socket: Socket, target: Target, options: TcpQueueOptions = {}) {
    this.socket = socket;
    this.#target = target;
    this.#options = { maxh2cdata: options.maxh2cdata ?? DEFAULT_MAXH2CDATA, discoveryOnly: options.discoveryOnly ?? false };
    this.#log = options.log ?? (() => {});
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => this.#onClose());
    socket.on('drain', () => this.#maybeResume());
    const setupMs = options.setupTimeoutMs ?? DEFAULT_SETUP_TIMEOUT_MS;
    this.#setupTimer = setTimeout(() => {
      if (this.state === 'icreq' || this.state === 'connect') {
        this.#log('closing a connection that did not finish ICReq and Connect in time', { state: this.state, ms: setupMs });
        this.socket.destroy();
      }
    }, setupMs);
    this.#setupTimer.unref();
  }

  // ---- ControllerQueue ----

  completeLater(cid: number, completion: Completion): void {
    this.#complete(cid, completion);
  }

  close(reason: string): void {
    if (this.state === 'closing') return;
    this.#log('closing queue', { reason, qid: this.qid });
    this.state = 'closing';
    this.#flushOutput();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  // ---- receive ----

  #onData(chunk: Buffer): void {
    if (this.state === 'closing') return;
    this.#in.push(chunk);
    // What the PDUs of this chunk produce at once (synchronous completions, R2Ts) leaves in one write
    // right after them; completions that come later are flushed from setImmediate.
    this.#inData = true;
    try {
      this.#process();
    } finally {
      this.#inData = false;
    }
    if (this.#pendingOutput) this.#flushOutput();
  }

  #process(): void {
    for (let guard = 0; guard < 1_000_000 && this.state !== 'closing'; guard++) {
      if (this.#in.length < PDU_COMMON_HEADER_BYTES) return;
      // The common header is read in place when it sits in one chunk (nearly always), else copied.
      let ch = this.#in.headChunk(PDU_COMMON_HEADER_BYTES);
      let o = this.#in.headOffset;
      if (ch === undefined) {
        this.#in.peekInto(this.#ch, PDU_COMMON_HEADER_BYTES);
        ch = this.#ch;
        o = 0;
      }
      const type = ch[o];
      const hlen = ch[o + 2];
      const plen = (ch[o + 4] | (ch[o + 5] << 8) | (ch[o + 6] << 16)) + ch[o + 7] * 0x1000000;
      const problem = this.#checkCommonHeader(type, hlen, plen);
      if (problem) {
        this.#in.peekInto(this.#ch, PDU_COMMON_HEADER_BYTES);
        this.#fatal(problem.fes, problem.fei, this.#ch);
        return;
      }
      if (this.#in.length < plen) return;
      const pdu = this.#in.take(plen);
      this.stats.pdusIn++;
      this.#handlePdu(type, pdu, plen);
    }
  }

  /** Validates type, HLEN and PLEN against the queue state and our limits before waiting for the body. */
  #checkCommonHeader(type: number, hlen: number, plen: number): { fes: number; fei: number } | undefined {
    const hd = this.hdgst ? DIGEST_BYTES : 0;
    const dd = this.ddgst ? DIGEST_BYTES : 0;
    switch (type) {
      case PDU_TYPE.ICReq:
        if (this.state !== 'icreq') return { fes: FES.PduSequenceError, fei: 0 };
        if (hlen !== IC_PDU_BYTES) return { fes: FES.InvalidHeaderField, fei: 2 };
        if (plen !== IC_PDU_BYTES) return { fes: FES.InvalidHeaderField, fei: 4 };
        return undefined;
      case PDU_TYPE.H2CTermReq:
        if (hlen !== DATA_PDU_HLEN) return { fes: FES.InvalidHeaderField, fei: 2 };
        if (plen < DATA_PDU_HLEN || plen > MAX_TERMREQ_PLEN) return { fes: FES.InvalidHeaderField, fei: 4 };
        return undefined;
      case PDU_TYPE.CapsuleCmd: {
        if (this.state === 'icreq') return { fes: FES.PduSequenceError, fei: 0 };
        if (hlen !== CAPSULE_CMD_HLEN) return { fes: FES.InvalidHeaderField, fei: 2 };
        const icd = Math.max(ADMIN_IN_CAPSULE_BYTES, IO_IN_CAPSULE_BYTES);
        if (plen < CAPSULE_CMD_HLEN + hd) return { fes: FES.InvalidHeaderField, fei: 4 };
        // Padding before in-capsule data is bounded by the PDO byte (< 256).
        if (plen > CAPSULE_CMD_HLEN + hd + 255 + icd + dd) return { fes: FES.DataTransferLimitExceeded, fei: 0 };
        return undefined;
      }
      case PDU_TYPE.H2CData:
        if (this.state !== 'live') return { fes: FES.PduSequenceError, fei: 0 };
        if (hlen !== DATA_PDU_HLEN) return { fes: FES.InvalidHeaderField, fei: 2 };
        if (plen < DATA_PDU_HLEN + hd) return { fes: FES.InvalidHeaderField, fei: 4 };
        if (plen > DATA_PDU_HLEN + hd + 255 + this.#options.maxh2cdata + dd) return { fes: FES.DataTransferLimitExceeded, fei: 0 };
        return undefined;
      default:
        return { fes: FES.InvalidHeaderField, fei: 0 };
    }
  }

  #handlePdu(type: number, pdu: Buffer[], plen: number): void {
    switch (type) {
      case PDU_TYPE.ICReq:
        return this.#onIcReq(contiguous(pdu, 0, IC_PDU_BYTES));
      case PDU_TYPE.H2CTermReq: {
        const h = contiguous(pdu, 0, DATA_PDU_HLEN);
        this.#log('host sent H2CTermReq', { fes: h.readUInt16LE(8), fei: h.readUInt32LE(10) });
        this.close('host terminated the connection');
        return;
      }
      case PDU_TYPE.CapsuleCmd:
        return this.#onCapsule(pdu, plen);
      case PDU_TYPE.H2CData:
        return this.#onH2CData(pdu, plen);
    }
  }

  /** Reads the PDU header (with its digest) and checks the digest; returns undefined after a fatal error. */
  #header(pdu: Buffer[], hlen: number): Buffer | undefined {
    const hd = this.hdgst ? DIGEST_BYTES : 0;
    const h = contiguous(pdu, 0, hlen + hd);
    const flags = h[1];
    if (this.hdgst) {
      if (!(flags & PDU_FLAG.HDGSTF)) {
        this.#fatal(FES.InvalidHeaderField, 1, h);
        return undefined;
      }
      if (crc32c(h.subarray(0, hlen)) !== h.readUInt32LE(hlen)) {
        this.#fatal(FES.HeaderDigestError, 0, h);
        return undefined;
      }
    }
    return h;
  }

  /** Data of a PDU (views), with the data digest checked; undefined after a fatal error. */
  #data(pdu: Buffer[], h: Buffer, hlen: number, plen: number): Buffer[] | undefined | null {
    const hd = this.hdgst ? DIGEST_BYTES : 0;
    const pdo = h[3];
    const flags = h[1];
    if (pdo === 0) {
      if (plen !== hlen + hd) {
        this.#fatal(FES.InvalidHeaderField, 3, h);
        return undefined;
      }
      return null;
    }
    const dd = this.ddgst ? DIGEST_BYTES : 0;
    if (pdo < hlen + hd || pdo > plen - dd) {
      this.#fatal(FES.InvalidHeaderField, 3, h);
      return undefined;
    }
    const datal = plen - pdo - dd;
    if (this.ddgst && datal > 0 && !(flags & PDU_FLAG.DDGSTF)) {
      this.#fatal(FES.InvalidHeaderField, 1, h);
      return undefined;
    }
    const data = slice(pdu, pdo, datal);
    if (this.ddgst && datal > 0) {
      const got = contiguous(pdu, plen - DIGEST_BYTES, DIGEST_BYTES).readUInt32LE(0);
      if (crc32cList(data) !== got) {
        // No FES names a data digest error; report the digest field as invalid.
        this.#fatal(FES.InvalidHeaderField, plen - DIGEST_BYTES, h);
        return undefined;
      }
    }
    return data;
  }

  #onIcReq(b: Buffer): void {
    const pfv = b.readUInt16LE(8);
    const hpda = b[10];
    const dgst = b[11];
    if (pfv !== 0) return this.#fatal(FES.UnsupportedParameter, 8, b);
    if (hpda > 31) return this.#fatal(FES.InvalidHeaderField, 10, b);
    this.hdgst = (dgst & 1) !== 0;
    this.ddgst = (dgst & 2) !== 0;
    const align = (hpda + 1) * 4;
    const hl = DATA_PDU_HLEN + (this.hdgst ? DIGEST_BYTES : 0);
    this.#c2hPad = (align - (hl % align)) % align;
    this.state = 'connect';
    // ICResp itself never carries digests.
    this.#send([encodeIcResp({ cpda: 0, hdgst: this.hdgst, ddgst: this.ddgst, maxh2cdata: this.#options.maxh2cdata })]);
  }

  #onCapsule(pdu: Buffer[], plen: number): void {
    const h = this.#header(pdu, CAPSULE_CMD_HLEN);
    if (!h) return;
    const data = this.#data(pdu, h, CAPSULE_CMD_HLEN, plen);
    if (data === undefined) return;
    // I/O commands keep a view (the received chunk is never reused; in-capsule data is kept the same
    // way); admin ones a copy, so a parked AER does not pin a whole socket chunk.
    const sqe = new Sqe(this.qid > 0 ? h.subarray(8, 8 + SQE_BYTES) : Buffer.from(h.subarray(8, 8 + SQE_BYTES)));
    this.stats.commands++;
    if (this.state === 'connect') {
      if (sqe.opc !== OPC_FABRICS || sqe.fctype !== FCTYPE.Connect) {
        this.#respond(sqe.cid, { status: STATUS.InvalidOpcode });
        return;
      }
      this.#onConnect(sqe, data ?? []);
      return;
    }
    this.#dispatch(sqe, data ?? undefined);
  }

  #onConnect(sqe: Sqe, data: Buffer[]): void {
    const cid = sqe.cid;
    const len = data.reduce((n, b) => n + b.length, 0);
    if (sqe.sglType !== SGL.DataBlockOffset || len !== 1024 || sqe.sglLength !== 1024) {
      // IATTR 0: the offset (24, SGL1) is in the command, not in the Connect data.
      this.#respond(cid, { status: STATUS.ConnectInvalidParameters, dw0: 24 });
      return;
    }
    const recfmt = sqe.buf.readUInt16LE(40);
    if (recfmt !== 0) {
      this.#respond(cid, { status: STATUS.ConnectIncompatibleFormat });
      return;
    }
    const d = contiguous(data, 0, 1024);
    const cstr = (off: number) => {
      const end = d.indexOf(0, off);
      return d.toString('utf8', off, end < 0 || end > off + 256 ? off + 256 : end);
    };
    const subnqn = cstr(256);
    const hostnqn = cstr(512);
    const qid = sqe.buf.readUInt16LE(42);
    if (this.#options.discoveryOnly && subnqn !== DISCOVERY_NQN) {
      this.#respond(cid, { status: STATUS.ConnectInvalidParameters, dw0: (1 << 16) | 256 });
      return;
    }
    const result = this.#target.connect(
      {
        qid,
        sqsize: sqe.buf.readUInt16LE(44),
        katoMs: sqe.buf.readUInt32LE(48),
        cntlid: d.readUInt16LE(16),
        subnqn,
        hostnqn,
        hostid: Buffer.from(d.subarray(0, 16)),
        localAddress: this.socket.localAddress ?? '127.0.0.1',
        localPort: this.socket.localPort ?? 0,
      },
      this,
    );
    if (result.status !== SUCCESS || !('controller' in result)) {
      const r = result as { status: NvmeStatus; ipo?: number; iattr?: number };
      this.#log('connect refused', { subnqn, hostnqn, qid, status: r.status });
      this.#respond(cid, { status: r.status, dw0: r.ipo === undefined ? 0 : ((r.iattr ?? 0) << 16) | r.ipo });
      return;
    }
    this.qid = qid;
    this.sqsize = sqe.buf.readUInt16LE(44);
    this.controller = result.controller;
    this.state = 'live';
    clearTimeout(this.#setupTimer);
    this.#sqhd = 0;
    this.#sqflowDisabled = (sqe.buf[46] & 0x04) !== 0;
    this.#respond(cid, { status: SUCCESS, dw0: result.controller.cntlid });
  }

  #dispatch(sqe: Sqe, inCapsule: Buffer[] | undefined): void {
    const controller = this.controller!;
    const cid = sqe.cid;
    controller.touch();
    if (this.#inflight.has(cid)) {
      this.#respond(cid, { status: STATUS.CommandIdConflict }, false);
      return;
    }
    if (sqe.fuse !== 0) {
      this.#respond(cid, { status: STATUS.InvalidField });
      return;
    }
    const inCapsuleBytes = inCapsule ? totalBytes(inCapsule) : 0;
    const sglType = sqe.sglType;
    const isFabrics = sqe.opc === OPC_FABRICS;
    if (isFabrics) {
      if (sqe.fctype === FCTYPE.Connect) return this.#respond(cid, { status: STATUS.CommandSequenceError });
      if (this.qid !== 0) return this.#respond(cid, { status: STATUS.InvalidOpcode });
      return this.#respond(cid, controller.fabrics(sqe));
    }
    if (sglType === SGL.DataBlockOffset) {
      const icd = this.qid === 0 ? ADMIN_IN_CAPSULE_BYTES : IO_IN_CAPSULE_BYTES;
      if (sqe.sglLength > icd || sqe.buf.readUInt32LE(24) !== 0 || sqe.buf.readUInt32LE(28) !== 0) return this.#respond(cid, { status: STATUS.SglOffsetInvalid });
      if (inCapsuleBytes !== sqe.sglLength) return this.#respond(cid, { status: STATUS.DataSglLengthInvalid });
      if ((sqe.opc & 3) !== 1) return this.#respond(cid, { status: STATUS.InvalidField });
    } else if (sglType === SGL.TransportDataBlock) {
      if (inCapsuleBytes > 0) return this.#respond(cid, { status: STATUS.InvalidField });
    } else {
      return this.#respond(cid, { status: STATUS.SglDescriptorTypeInvalid });
    }
    this.#inflight.add(cid);
    this.#checkBackpressure();
    if (this.qid === 0) {
      // Admin commands never get an R2T: the controller refuses host-to-controller transport SGLs
      // (after its opcode check, so unsupported opcodes still get Invalid Opcode).
      controller.admin(sqe, this, inCapsule).then(
        (c) => {
          if (c) this.#finish(cid, c, sqe.sglLength);
        },
        () => this.#finish(cid, { status: STATUS.InternalError }),
      );
      return;
    }
    const hostToController = (sqe.opc & 3) === 1;
    if (hostToController && sglType === SGL.TransportDataBlock && sqe.sglLength > 0) {
      const check = controller.checkIo(sqe);
      if (check.status !== SUCCESS) return this.#finish(cid, { status: check.status });
      this.#startR2T(sqe, check.transferBytes);
      return;
    }
    this.#execute(sqe, inCapsule);
  }

  #execute(sqe: Sqe, data: Buffer[] | undefined): void {
    const cid = sqe.cid;
    const scratch = sqe.opc === IO_OPC.Read && sqe.sglLength === SCRATCH_BYTES ? (this.#scratchFree.pop() ?? Buffer.allocUnsafeSlow(SCRATCH_BYTES)) : undefined;
    let r: Completion | Promise<Completion>;
    try {
      r = this.controller!.io(sqe, data, scratch);
    } catch {
      r = { status: STATUS.InternalError };
    }
    // Reads and writes the backend serves at once complete here, without a promise.
    if (typeof (r as { then?: unknown }).then !== 'function') {
      this.#finish(cid, r as Completion, sqe.sglLength);
      if (scratch !== undefined) this.#scratchSent.push(scratch);
      return;
    }
    (r as Promise<Completion>).then(
      (c) => {
        this.#finish(cid, c, sqe.sglLength);
        if (scratch !== undefined) this.#scratchSent.push(scratch);
      },
      () => {
        this.#finish(cid, { status: STATUS.InternalError });
        if (scratch !== undefined) this.#scratchSent.push(scratch);
      },
    );
  }

  // ---- R2T / H2CData ----

  #startR2T(sqe: Sqe, total: number): void {
    let ttag = this.#nextTtag;
    for (let i = 0; i < 0xffff && this.#writes.has(ttag); i++) ttag = ttag >= 0xfffe ? 1 : ttag + 1;
    this.#nextTtag = ttag >= 0xfffe ? 1 : ttag + 1;
    const w: PendingWrite = { sqe, ttag, total, received: 0, windowEnd: 0, views: [] };
    this.#writes.set(ttag, w);
    this.#sendR2T(w);
  }

  #sendR2T(w: PendingWrite): void {
    const r2tl = Math.min(w.total - w.received, this.#options.maxh2cdata);
    w.windowEnd = w.received + r2tl;
    const a = this.#arenaTake(smallPduBytes(this));
    writeR2T(this.#arena!, a, w.sqe.cid, w.ttag, w.received, r2tl, this);
    this.#sent();
  }

  #onH2CData(pdu: Buffer[], plen: number): void {
    const h = this.#header(pdu, DATA_PDU_HLEN);
    if (!h) return;
    const cccid = h.readUInt16LE(8);
    const ttag = h.readUInt16LE(10);
    const datao = h.readUInt32LE(12);
    const datal = h.readUInt32LE(16);
    const w = this.#writes.get(ttag);
    if (!w || w.sqe.cid !== cccid) return this.#fatal(FES.InvalidHeaderField, 10, h);
    const data = this.#data(pdu, h, DATA_PDU_HLEN, plen);
    if (data === undefined) return;
    const got = data ? totalBytes(data) : 0;
    if (datal === 0 || got !== datal) return this.#fatal(FES.InvalidHeaderField, 16, h);
    if (datal > this.#options.maxh2cdata) return this.#fatal(FES.DataTransferLimitExceeded, 0, h);
    if (datao !== w.received || datao + datal > w.windowEnd) return this.#fatal(FES.DataTransferOutOfRange, 0, h);
    // Write data is traffic too: a long write trickling in must not look like a dead host.
    this.controller?.touch();
    for (const v of data!) w.views.push(v);
    w.received += datal;
    if (w.received < w.windowEnd) return;
    if (w.received < w.total) {
      this.#sendR2T(w);
      return;
    }
    this.#writes.delete(ttag);
    this.#execute(w.sqe, w.views);
  }

  // ---- send ----

  #finish(cid: number, c: Completion, transferBytes = 0): void {
    if (this.state === 'closing') return;
    if (c.data && c.status === SUCCESS) this.#sendData(cid, c.data, transferBytes);
    this.#respond(cid, c);
  }

  #sendData(cid: number, data: Buffer[], length: number): void {
    let views = data;
    const have = totalBytes(data);
    if (have !== length) {
      // Admin data structures have fixed sizes; the host asked for `length` bytes exactly.
      views = have > length ? slice(data, 0, length) : [...data, Buffer.alloc(length - have)];
    }
    if (length === 0) return;
    const a = this.#arenaTake(smallPduBytes(this) + this.#c2hPad);
    writeC2HDataHeader(this.#arena!, a, cid, 0, length, true, false, this, this.#c2hPad);
    this.#cutArena();
    for (const v of views) this.#out.push(v);
    if (this.ddgst) this.#out.push(encodeDigest(crc32cList(views)));
    this.#sent();
  }

  #respond(cid: number, c: Completion, counts = true): void {
    this.#complete(cid, c, counts);
  }

  #complete(cid: number, c: Completion, counts = true): void {
    if (this.state === 'closing') return;
    if (counts) this.#inflight.delete(cid);
    this.#sqhd = (this.#sqhd + 1) % (this.sqsize + 1 || 1);
    const a = this.#arenaTake(smallPduBytes(this));
    writeCapsuleResp(this.#arena!, a, c.dw0 ?? 0, c.dw1 ?? 0, this.#sqflowDisabled ? 0xffff : this.#sqhd, Math.max(0, this.qid), cid, c.status, this);
    this.#sent();
    this.#maybeResume();
  }

  /** Queues whole buffers (after the arena bytes before them). */
  #send(buffers: Buffer[]): void {
    this.#cutArena();
    for (const b of buffers) this.#out.push(b);
    this.#sent();
  }

  /** Counts a PDU queued and makes sure a flush is coming. */
  #sent(): void {
    this.stats.pdusOut++;
    this.#pendingOutput = true;
    if (!this.#flushScheduled && !this.#inData) {
      this.#flushScheduled = true;
      setImmediate(this.#flush);
    }
  }

  /** Room for n bytes in the arena; returns their offset. */
  #arenaTake(n: number): number {
    if (this.#arena === undefined || this.#arenaPos + n > this.#arena.length) {
      this.#cutArena();
      if (this.#arena === undefined || this.#arenaOut || this.socket.writableLength > 0) this.#arena = Buffer.allocUnsafe(Math.max(ARENA_BYTES, n));
      this.#arenaPos = this.#arenaStart = 0;
    }
    const at = this.#arenaPos;
    this.#arenaPos += n;
    return at;
  }

  #recycleScratch(): void {
    const sent = this.#scratchSent;
    const free = this.#scratchFree;
    for (let i = 0; i < sent.length && free.length < SCRATCH_POOL_MAX; i++) free.push(sent[i]);
    sent.length = 0;
  }

  /** Moves the arena bytes written since the last cut to #out. */
  #cutArena(): void {
    if (this.#arenaPos > this.#arenaStart) {
      this.#out.push(this.#arena!.subarray(this.#arenaStart, this.#arenaPos));
      this.#arenaStart = this.#arenaPos;
      this.#arenaOut = true;
    }
  }

  #flushOutput(): void {
    this.#flushScheduled = false;
    this.#pendingOutput = false;
    this.#cutArena();
    if (this.#out.length === 0 || this.socket.destroyed) {
      this.#out = [];
      this.#arenaOut = false;
      return;
    }
    const out = this.#out;
    this.#out = [];
    this.#arenaOut = false;
    if (out.length === 1) {
      this.socket.write(out[0]);
    } else {
      this.socket.cork();
      for (const b of out) this.socket.write(b);
      this.socket.uncork();
    }
    // Everything reached the kernel: the arena can start over and sent read buffers can be reused.
    if (this.socket.writableLength === 0) {
      this.#arenaPos = this.#arenaStart = 0;
      this.#recycleScratch();
    }
    this.#checkBackpressure();
  }

  #checkBackpressure(): void {
    const tooMany = this.#inflight.size > 2 * (this.sqsize + 1);
    if (!this.#paused && (this.socket.writableLength > OUTPUT_HIGH_WATER_BYTES || tooMany)) {
      this.#paused = true;
      this.socket.pause();
    }
  }

  #maybeResume(): void {
    if (this.#paused && this.socket.writableLength <= OUTPUT_HIGH_WATER_BYTES && this.#inflight.size <= 2 * (this.sqsize + 1)) {
      this.#paused = false;
      this.socket.resume();
    }
  }

  // ---- errors and teardown ----

  #fatal(fes: number, fei: number, header: Buffer): void {
    if (this.state === 'closing') return;
    this.#log('protocol error: terminating connection', { fes, fei, qid: this.qid });
    this.#out = [];
    this.#arenaStart = this.#arenaPos;
    this.state = 'closing';
    this.#in.clear();
    this.socket.write(encodeC2HTermReq(fes, fei, Buffer.from(header.subarray(0, Math.min(header.length, 128)))));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    // Only this connection ends (issue 4: "ends that connection ... and nothing else"); nvmet would fail
    // the whole controller. An admin queue is the controller, so losing it fails the controller.
    if (this.controller && this.qid === 0) this.controller.fatal('protocol error on the admin queue');
  }

  #onClose(): void {
    this.state = 'closing';
    clearTimeout(this.#setupTimer);
    this.#in.clear();
    this.#writes.clear();
    if (this.controller) {
      const c = this.controller;
      this.controller = undefined;
      c.queueClosed(this.qid);
    }
  }
}

function totalBytes(views: readonly Buffer[]): number {
  let n = 0;
  for (const v of views) n += v.length;
  return n;
}
