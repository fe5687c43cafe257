// A controller: created by an admin-queue Connect, owns its queues, properties (CC/CSTS), features,
// parked Asynchronous Event Requests and keep-alive. Commands are parsed and executed here; the TCP
// queue only moves bytes. Statuses are values, never exceptions.
import { ADMIN_OPC, AEC_MASK, AEN, CNS, FCTYPE, FID, IO_OPC, LID, OPC_FABRICS, PROPERTY, SGL } from '../protocol/constants.ts';
import {
  activeNamespaceList,
  IDENTIFY_BYTES,
  identifyController,
  identifyNamespace,
  namespaceDescriptors,
} from '../protocol/identify.ts';
import { changedNamespaceLog, commandEffectsLog, discoveryLog, smartLog, type DiscoveryEntry, type SmartCounters } from '../protocol/log-pages.ts';
import type { Sqe } from '../protocol/sqe.ts';
import { STATUS, SUCCESS, type NvmeStatus } from '../protocol/status.ts';
import { toNvmeStatus } from './engine-backend.ts';
import type { Namespace, NamespaceIo, Subsystem } from './subsystem.ts';

export const BLOCK_BYTES = 4096;
export const MQES = 127; // 0's based: 128 entries per queue
export const MAX_IO_QUEUES = 16;
export const MDTS = 8; // 2^8 × 4 KiB = 1 MiB
export const MAX_TRANSFER_BYTES = (1 << MDTS) * 4096;
export const IO_IN_CAPSULE_BYTES = 8192;
export const AERL = 3;
export const KAS_100MS = 10;
const DISCOVERY_DEFAULT_KATO_MS = 120_000;
/** Discovery controllers report MDTS 0; this still bounds one discovery log read (about 4000 entries). */
export const MAX_DISCOVERY_TRANSFER_BYTES = 4 * 1024 * 1024;
const ADMIN_OPCODES: readonly number[] = [
  ADMIN_OPC.GetLogPage,
  ADMIN_OPC.Identify,
  ADMIN_OPC.Abort,
  ADMIN_OPC.SetFeatures,
  ADMIN_OPC.GetFeatures,
  ADMIN_OPC.AsyncEventRequest,
  ADMIN_OPC.KeepAlive,
];
const DISCOVERY_ADMIN_OPCODES: readonly number[] = [ADMIN_OPC.Identify, ADMIN_OPC.GetLogPage, ADMIN_OPC.SetFeatures, ADMIN_OPC.GetFeatures, ADMIN_OPC.AsyncEventRequest, ADMIN_OPC.KeepAlive];

export interface Completion {
  status: NvmeStatus;
  dw0?: number;
  dw1?: number;
  /** Controller-to-host data. */
  data?: Buffer[];
}

/** What a controller needs from one of its queues. */
export interface ControllerQueue {
  readonly qid: number;
  /** Completes a parked command (an AER) outside the normal request/response flow. */
  completeLater(cid: number, completion: Completion): void;
  close(reason: string): void;
}

/** What a controller needs from the target around it. */
export interface ControllerHost {
  discoveryEntries(hostnqn: string, localAddress: string): DiscoveryEntry[];
  discoveryGenctr(): number;
  controllerGone(controller: Controller): void;
  firmware: string;
}

const ok = (extra: Omit<Completion, 'status'> = {}): Completion => ({ status: SUCCESS, ...extra });
const fail = (status: NvmeStatus): Completion => ({ status });
const failWith = (err: unknown): Completion => ({ status: toNvmeStatus(err) });
const isPromise = <T>(r: T | Promise<T>): r is Promise<T> => typeof (r as { then?: unknown } | undefined)?.then === 'function';

export class Controller {
  readonly cntlid: number;
  readonly subsystem: Subsystem | undefined; // undefined: the discovery controller
  readonly hostnqn: string;
  readonly hostid: Buffer;
  readonly localAddress: string;
  readonly queues = new Map<number, ControllerQueue>();
  katoMs: number;
  cc = 0;
  csts = 0;
  grantedIoQueues = 0;
  aec = 0;
  #aers: Array<{ queue: ControllerQueue; cid: number }> = [];
  #pendingAen: number[] = [];
  #maskedLids = new Set<number>();
  #changedNs = new Set<number>();
  #lastSeen = Date.now();
  /** A command arrived since the keep-alive timer last looked (cheaper than a clock read per command). */
  #touched = false;
  #timer: NodeJS.Timeout | undefined;
  #host: ControllerHost;
  #closed = false;
  /** Set by #check for the command it passed: its namespace and transfer length. */
  #checkedNs: Namespace | undefined;
  #checkedBytes = 0;

  constructor(args: { cntlid: number; subsystem: Subsystem | undefined; hostnqn: string; hostid: Buffer; katoMs: number; localAddress: string; host: ControllerHost }) {
    this.cntlid = args.cntlid;
    this.subsystem = args.subsystem;
    this.hostnqn = args.hostnqn;
    this.hostid = args.hostid;
    this.katoMs = args.katoMs;
    this.localAddress = args.localAddress;
    this.#host = args.host;
    this.#armKeepAlive();
  }

  get discovery(): boolean {
    return this.subsystem === undefined;
  }

  get subnqn(): string {
    return this.subsystem?.nqn ?? 'nqn.2014-08.org.nvmexpress.discovery';
  }

  get ready(): boolean {
    return (this.csts & 1) === 1;
  }

  /**
   * SMART / health counters of one namespace, or (nsid 0 or FFFFFFFFh) summed over every namespace this
   * host sees, like nvmet. They live with the namespaces, so a reconnecting host never sees them go
   * back. Data units are thousands of 512-byte units, rounded up. Undefined: no such visible namespace.
   */
  counters(nsid = 0xffffffff): (SmartCounters & { bytesRead: number; bytesWritten: number }) | undefined {
    const sub = this.subsystem;
    let list: Namespace[] = [];
    if (nsid === 0 || nsid === 0xffffffff) {
      if (sub) for (const id of sub.visibleNsids(this.hostnqn)) list.push(sub.namespaces.get(id)!);
    } else {
      const ns = sub?.namespaceFor(nsid, this.hostnqn);
      if (!ns) return undefined;
      list = [ns];
    }
    let readCommands = 0;
    let writeCommands = 0;
    let bytesRead = 0;
    let bytesWritten = 0;
    for (const ns of list) {
      if (!ns.io) continue;
      readCommands += ns.io.readCommands;
      writeCommands += ns.io.writeCommands;
      bytesRead += ns.io.bytesRead;
      bytesWritten += ns.io.bytesWritten;
    }
    return {
      dataUnitsRead: BigInt(Math.ceil(bytesRead / 512_000)),
      dataUnitsWritten: BigInt(Math.ceil(bytesWritten / 512_000)),
      hostReadCommands: BigInt(readCommands),
      hostWriteCommands: BigInt(writeCommands),
      bytesRead,
      bytesWritten,
    };
  }

  // ---- keep-alive ----

  #armKeepAlive(): void {
    const kato = this.katoMs === 0 && this.discovery ? DISCOVERY_DEFAULT_KATO_MS : this.katoMs;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (kato === 0) return;
    // Slack: the host sends at KATO/2 (or KATO/4 with TBKAS) but its scheduling jitters.
    const limit = kato + 2000;
    // Commands are noted as seen at the next tick, so the limit can run over by one tick period.
    this.#timer = setInterval(() => {
      const now = Date.now();
      if (this.#touched) {
        this.#touched = false;
        this.#lastSeen = now;
      } else if (now - this.#lastSeen > limit) {
        this.fatal('keep-alive timeout');
      }
    }, Math.min(1000, Math.max(100, kato / 4)));
  }

  /** Any command restarts the keep-alive timer (CTRATT.TBKAS). */
  touch(): void {
    this.#touched = true;
  }

  /** Tears the controller down: every queue is closed, parked AERs dropped. */
  fatal(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.csts |= 2; // CFS
    if (this.#timer) clearInterval(this.#timer);
    this.#aers = [];
    for (const q of [...this.queues.values()]) q.close(reason);
    this.queues.clear();
    this.#host.controllerGone(this);
  }

  queueClosed(qid: number): void {
    this.queues.delete(qid);
    if (qid === 0) this.fatal('admin queue closed');
  }

  // ---- async events ----

  notifyNamespaceChanged(nsid: number): void {
    this.#changedNs.add(nsid);
    if (this.aec & AEC_MASK.NamespaceAttribute) this.#raise(AEN.NamespaceAttributeChanged, LID.ChangedNamespaces);
  }

  notifyDiscoveryChanged(): void {
    if (this.aec & AEC_MASK.DiscoveryLogChange) this.#raise(AEN.DiscoveryLogChanged, LID.Discovery);
  }

  #raise(dw0: number, lid: number): void {
    if (this.#maskedLids.has(lid)) return;
    this.#maskedLids.add(lid);
    this.#pendingAen.push(dw0);
    this.#deliverAens();
  }

  #deliverAens(): void {
    while (this.#pendingAen.length > 0 && this.#aers.length > 0) {
      const dw0 = this.#pendingAen.shift()!;
      const aer = this.#aers.shift()!;
      aer.queue.completeLater(aer.cid, ok({ dw0 }));
    }
  }

  // ---- fabrics: Property Get/Set ----

  capValue(): bigint {
    // MQES, TO = 15 (7.5 s), CSS bit 37 (NVM command set), MPSMIN = 0.
    return BigInt(MQES) | (15n << 24n) | (1n << 37n);
  }

  fabrics(sqe: Sqe): Completion {
    switch (sqe.fctype) {
      case FCTYPE.PropertyGet: {
        const size8 = (sqe.buf[40] & 0x7) === 1;
        const ofst = sqe.buf.readUInt32LE(44);
        let value: bigint;
        if (ofst === PROPERTY.CAP) value = this.capValue();
        else if (ofst === PROPERTY.VS) value = 0x00010400n;
        else if (ofst === PROPERTY.CC) value = BigInt(this.cc);
        else if (ofst === PROPERTY.CSTS) value = BigInt(this.csts);
        else return fail(STATUS.InvalidField);
        if (!size8 && ofst === PROPERTY.CAP) return ok({ dw0: Number(value & 0xffffffffn), dw1: Number(value >> 32n) });
        return ok({ dw0: Number(value & 0xffffffffn), dw1: size8 ? Number(value >> 32n) : 0 });
      }
      case FCTYPE.PropertySet: {
        const ofst = sqe.buf.readUInt32LE(44);
        const value = sqe.buf.readUInt32LE(48);
        if (ofst !== PROPERTY.CC) return fail(STATUS.InvalidField);
        return this.#setCc(value);
      }
      case FCTYPE.Disconnect:
        return ok();
      default:
        return fail(STATUS.InvalidOpcode);
    }
  }

  #setCc(value: number): Completion {
    const prev = this.cc;
    this.cc = value >>> 0;
    const en = value & 1;
    const shn = (value >> 14) & 0x3;
    if (en && !(prev & 1)) {
      const iosqes = (value >> 16) & 0xf;
      const iocqes = (value >> 20) & 0xf;
      const mps = (value >> 7) & 0xf;
      const ams = (value >> 11) & 0x7;
      const css = (value >> 4) & 0x7;
      const valid = mps === 0 && ams === 0 && css === 0 && (this.discovery || (iosqes === 6 && iocqes === 4));
      this.csts = valid ? (this.csts & ~2) | 1 : this.csts | 2;
      this.touch();
    } else if (!en && prev & 1) {
      this.csts &= ~1;
    }
    if (shn) {
      this.csts = (this.csts & ~1 & ~0xc) | (2 << 2); // SHST = shutdown complete
    } else {
      this.csts &= ~0xc;
    }
    return ok();
  }

  // ---- admin commands ----

  async admin(sqe: Sqe, queue: ControllerQueue, data: Buffer[] | undefined): Promise<Completion | undefined> {
    const opc = sqe.opc;
    if (opc === OPC_FABRICS) return this.fabrics(sqe);
    if (!this.ready) return fail(STATUS.CommandSequenceError);
    const supported = this.discovery ? DISCOVERY_ADMIN_OPCODES : ADMIN_OPCODES;
    if (!supported.includes(opc)) return fail(STATUS.InvalidOpcode);
    if (sqe.sglType === SGL.TransportDataBlock && sqe.sglLength > 0) {
      // Hosts send admin data in-capsule; none of these commands takes data by R2T. (Checked here,
      // after the opcode, so an unsupported opcode that carries data still gets Invalid Opcode.)
      if ((opc & 3) === 1) return fail(STATUS.InvalidField);
      // Admin data is built in memory and padded to the SGL length: bound it before anything is
      // allocated, or one Identify with a 2 GiB SGL would make the queue allocate and send 2 GiB.
      if (sqe.sglLength > (this.discovery ? MAX_DISCOVERY_TRANSFER_BYTES : MAX_TRANSFER_BYTES)) return fail(STATUS.DataSglLengthInvalid);
    }
    switch (opc) {
      case ADMIN_OPC.Identify:
        return this.#identify(sqe);
      case ADMIN_OPC.GetLogPage:
        return this.#getLogPage(sqe);
      case ADMIN_OPC.SetFeatures:
        return this.#setFeatures(sqe);
      case ADMIN_OPC.GetFeatures:
        return this.#getFeatures(sqe);
      case ADMIN_OPC.AsyncEventRequest:
        if (this.#aers.length >= AERL + 1) return fail(STATUS.AsyncEventLimitExceeded);
        this.#aers.push({ queue, cid: sqe.cid });
        this.#deliverAens();
        return undefined; // parked: completed later
      case ADMIN_OPC.KeepAlive:
        if (this.katoMs === 0 && !this.discovery) return fail(STATUS.KeepAliveTimeoutInvalid);
        return ok();
      case ADMIN_OPC.Abort:
        return ok({ dw0: 1 }); // not aborted
      default:
        void data;
        return fail(STATUS.InvalidOpcode);
    }
  }

  #identify(sqe: Sqe): Completion {
    const cns = sqe.cdw(10) & 0xff;
    const csi = (sqe.cdw(11) >>> 24) & 0xff;
    const nsid = sqe.nsid;
    if (cns === CNS.Controller) {
      return ok({
        data: [
          identifyController({
            cntlid: this.cntlid,
            serial: this.subsystem?.serial ?? 'thicket-discovery',
            model: 'Thicket',
            firmware: this.#host.firmware,
            subnqn: this.subnqn,
            discovery: this.discovery,
            mdts: this.discovery ? 0 : MDTS,
            maxcmd: MQES + 1,
            nn: this.discovery ? 0 : 1024,
            ioInCapsuleBytes: IO_IN_CAPSULE_BYTES,
            kasUnits100ms: KAS_100MS,
            aerl: AERL,
          }),
        ],
      });
    }
    if (this.discovery) return fail(STATUS.InvalidField);
    const sub = this.subsystem!;
    switch (cns) {
      case CNS.Namespace: {
        if (nsid === 0 || nsid === 0xffffffff) return fail(STATUS.InvalidNamespace);
        const ns = sub.namespaceFor(nsid, this.hostnqn);
        // An inactive NSID inside NN reads as zeroes: the host drops it.
        if (!ns) return nsid <= 1024 ? ok({ data: [Buffer.alloc(IDENTIFY_BYTES)] }) : fail(STATUS.InvalidNamespace);
        return ok({ data: [identifyNamespace({ blocks: ns.backend.blocks, nguid: ns.nguid, usedBlocks: ns.backend.usedBlocks() })] });
      }
      case CNS.ActiveNamespaces:
      case CNS.CsiActiveNamespaces:
        if (nsid >= 0xfffffffe) return fail(STATUS.InvalidNamespace);
        if (cns === CNS.CsiActiveNamespaces && csi !== 0) return ok({ data: [Buffer.alloc(IDENTIFY_BYTES)] });
        return ok({ data: [activeNamespaceList(sub.visibleNsids(this.hostnqn), nsid)] });
      case CNS.NamespaceDescriptors: {
        const ns = sub.namespaceFor(nsid, this.hostnqn);
        if (!ns) return fail(STATUS.InvalidNamespace);
        return ok({ data: [namespaceDescriptors(ns.nguid, ns.uuid)] });
      }
      case CNS.CsiNamespace:
      case CNS.CsiController:
        if (csi !== 0) return fail(STATUS.InvalidField);
        return ok({ data: [Buffer.alloc(IDENTIFY_BYTES)] });
      default:
        return fail(STATUS.InvalidField);
    }
  }

  #getLogPage(sqe: Sqe): Completion {
    const cdw10 = sqe.cdw(10);
    const lid = cdw10 & 0xff;
    const rae = (cdw10 >>> 15) & 1;
    const numd = ((((sqe.cdw(11) & 0xffff) << 16) | (cdw10 >>> 16)) >>> 0) + 1;
    const length = numd * 4;
    // NUMD and the SGL must agree (nvmet checks the same): NUMD alone could ask for 16 GiB.
    if (length !== sqe.sglLength) return fail(STATUS.DataSglLengthInvalid);
    const lpo = sqe.cdw(12) + sqe.cdw(13) * 0x1_0000_0000;
    if (lpo % 4 !== 0) return fail(STATUS.InvalidField);
    let log: Buffer;
    if (this.discovery) {
      if (lid !== LID.Discovery) return fail(STATUS.InvalidField);
      log = discoveryLog(this.#host.discoveryGenctr(), this.#host.discoveryEntries(this.hostnqn, this.localAddress));
      if (!rae) this.#maskedLids.delete(LID.Discovery);
    } else {
      switch (lid) {
        case LID.ErrorInformation:
          log = Buffer.alloc(64 * 64);
          break;
        case LID.Smart: {
          const counters = this.counters(sqe.nsid);
          if (!counters) return fail(STATUS.InvalidNamespace);
          log = smartLog(counters);
          break;
        }
        case LID.FirmwareSlot: {
          log = Buffer.alloc(512);
          log[0] = 1;
          log.write(this.#host.firmware.padEnd(8, ' ').slice(0, 8), 8, 'latin1');
          break;
        }
        case LID.ChangedNamespaces:
          log = changedNamespaceLog([...this.#changedNs]);
          if (!rae) {
            this.#changedNs.clear();
            this.#maskedLids.delete(LID.ChangedNamespaces);
          }
          break;
        case LID.CommandEffects:
          log = commandEffectsLog();
          break;
        default:
          return fail(STATUS.InvalidField);
      }
    }
    if (lpo > log.length) return fail(STATUS.InvalidField);
    const out = Buffer.alloc(length);
    log.copy(out, 0, lpo, Math.min(log.length, lpo + length));
    return ok({ data: [out] });
  }

  #setFeatures(sqe: Sqe): Completion {
    const cdw10 = sqe.cdw(10);
    const fid = cdw10 & 0xff;
    const sv = cdw10 >>> 31;
    if (sv) return fail(STATUS.FeatureNotSaveable);
    const cdw11 = sqe.cdw(11);
    switch (fid) {
      case FID.NumberOfQueues: {
        if (this.discovery) return fail(STATUS.InvalidField);
        const nsqr = cdw11 & 0xffff;
        const ncqr = cdw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return fail(STATUS.InvalidField);
        // Like nvmet, the controller allocates its maximum whatever was asked, reports that, and lets the
        // host connect that many I/O queues (Linux uses the smaller of its request and this).
        this.grantedIoQueues = MAX_IO_QUEUES;
        const n = MAX_IO_QUEUES - 1;
        return ok({ dw0: ((n << 16) | n) >>> 0 });
      }
      case FID.AsyncEventConfiguration: {
        const supported = this.discovery ? AEC_MASK.DiscoveryLogChange : AEC_MASK.NamespaceAttribute;
        if ((cdw11 & ~supported) !== 0 && (cdw11 & ~supported & ~0xff) !== 0) return fail(STATUS.InvalidField);
        // Kept as set (Get Features returns it); only the supported notices are ever raised.
        this.aec = cdw11 & (supported | 0xff);
        return ok({ dw0: this.aec >>> 0 });
      }
      case FID.KeepAliveTimer:
        this.katoMs = Math.ceil(cdw11 / 1000) * 1000;
        this.touch();
        this.#armKeepAlive();
        return ok({ dw0: this.katoMs });
      case FID.VolatileWriteCache:
        // The cache cannot be switched off; reporting it as on keeps Flush and FUA flowing.
        return (cdw11 & 1) === 1 ? ok() : fail(STATUS.InvalidField);
      case FID.HostIdentifier:
        return fail(STATUS.CommandSequenceError);
      default:
        return fail(STATUS.InvalidField);
    }
  }

  #getFeatures(sqe: Sqe): Completion {
    const fid = sqe.cdw(10) & 0xff;
    const sel = (sqe.cdw(10) >>> 8) & 0x7;
    if (sel === 3) {
      // Supported capabilities: nothing is saveable or namespace specific; all but the write cache are
      // changeable.
      switch (fid) {
        case FID.NumberOfQueues:
        case FID.AsyncEventConfiguration:
        case FID.KeepAliveTimer:
        case FID.HostIdentifier:
          return this.discovery && fid === FID.NumberOfQueues ? fail(STATUS.InvalidField) : ok({ dw0: 0x4 });
        case FID.VolatileWriteCache:
          return this.discovery ? fail(STATUS.InvalidField) : ok({ dw0: 0 });
        default:
          return fail(STATUS.InvalidField);
      }
    }
    if (sel === 1 || sel === 2) {
      // Default and saved values (nothing is saveable, so saved = default).
      switch (fid) {
        case FID.AsyncEventConfiguration:
          return ok({ dw0: 0 });
        case FID.KeepAliveTimer:
          return ok({ dw0: 0 });
        default:
          break; // the rest have no other value than the current one
      }
    } else if (sel !== 0) {
      return fail(STATUS.InvalidField);
    }
    switch (fid) {
      case FID.NumberOfQueues: {
        if (this.discovery) return fail(STATUS.InvalidField);
        const n = MAX_IO_QUEUES - 1;
        return ok({ dw0: ((n << 16) | n) >>> 0 });
      }
      case FID.AsyncEventConfiguration:
        return ok({ dw0: this.aec >>> 0 });
      case FID.KeepAliveTimer:
        return ok({ dw0: this.katoMs });
      case FID.VolatileWriteCache:
        return this.discovery ? fail(STATUS.InvalidField) : ok({ dw0: 1 });
      case FID.HostIdentifier: {
        if ((sqe.cdw(11) & 1) !== 1) return fail(STATUS.InvalidField);
        return ok({ data: [Buffer.from(this.hostid)] });
      }
      default:
        return fail(STATUS.InvalidField);
    }
  }

  // ---- I/O commands ----

  /**
   * Checks an I/O command before any data moves, so a write that will fail gets its error at once and
   * no R2T (nvmet behaves the same). Returns the namespace's backend and the transfer length.
   */
  checkIo(sqe: Sqe): { status: NvmeStatus; transferBytes: number } {
    const status = this.#check(sqe);
    return { status, transferBytes: status === SUCCESS ? this.#checkedBytes : 0 };
  }

  /** checkIo without an object per command: on success #checkedNs and #checkedBytes describe it. */
  #check(sqe: Sqe): NvmeStatus {
    this.#checkedNs = undefined;
    this.#checkedBytes = 0;
    if (!this.ready) return STATUS.CommandSequenceError;
    const sub = this.subsystem;
    if (!sub) return STATUS.InvalidOpcode;
    const opc = sqe.opc;
    if (opc === IO_OPC.Flush) {
      if (sqe.nsid === 0xffffffff) return STATUS.InvalidNamespace;
      this.#checkedNs = sub.namespaceFor(sqe.nsid, this.hostnqn);
      return this.#checkedNs ? SUCCESS : STATUS.InvalidNamespace;
    }
    const ns = sub.namespaceFor(sqe.nsid, this.hostnqn);
    if (!ns) return STATUS.InvalidNamespace;
    let bytes = 0;
    switch (opc) {
      case IO_OPC.Read:
      case IO_OPC.Write: {
        const nlb = sqe.nlb;
        bytes = nlb * BLOCK_BYTES;
        if (sqe.sglLength !== bytes) return STATUS.DataSglLengthInvalid;
        if (bytes > MAX_TRANSFER_BYTES) return STATUS.InvalidField;
        if (sqe.slba + nlb > ns.backend.blocks) return STATUS.LbaOutOfRange;
        break;
      }
      case IO_OPC.WriteZeroes:
        if (sqe.slba + sqe.nlb > ns.backend.blocks) return STATUS.LbaOutOfRange;
        break;
      case IO_OPC.DatasetManagement: {
        // The Linux host may describe a range buffer larger than the NR+1 ranges it fills (a whole
        // discard page); take the SGL's length, read only the ranges NR names.
        const needed = ((sqe.cdw(10) & 0xff) + 1) * 16;
        if (sqe.sglLength < needed || sqe.sglLength > 4096) return STATUS.DataSglLengthInvalid;
        bytes = sqe.sglLength;
        break;
      }
      default:
        return STATUS.InvalidOpcode;
    }
    this.#checkedNs = ns;
    this.#checkedBytes = bytes;
    return SUCCESS;
  }

  /**
   * Executes an I/O command. Read and Write complete synchronously (no promise) when the backend serves
   * them at once, which an engine clone does unless QoS or a reset makes it wait. `scratch`: memory a
   * Read may return views of (see NamespaceBackend.read).
   */
  io(sqe: Sqe, data: Buffer[] | undefined, scratch?: Buffer): Completion | Promise<Completion> {
    const status = this.#check(sqe);
    if (status !== SUCCESS) return fail(status);
    const ns = this.#checkedNs!;
    const bytes = this.#checkedBytes;
    const opc = sqe.opc;
    if (opc === IO_OPC.Read) {
      let r: Buffer[] | Promise<Buffer[]>;
      try {
        r = ns.backend.read(sqe.slba, sqe.nlb, scratch);
      } catch (err) {
        return failWith(err);
      }
      if (isPromise(r)) return r.then((views) => this.#readDone(views, bytes, ns), failWith);
      return this.#readDone(r, bytes, ns);
    }
    if (opc === IO_OPC.Write) {
      let r: void | Promise<void>;
      try {
        r = ns.backend.write(sqe.slba, data ?? [], sqe.fua);
      } catch (err) {
        return failWith(err);
      }
      if (isPromise(r)) return r.then(() => this.#writeDone(bytes, ns), failWith);
      return this.#writeDone(bytes, ns);
    }
    return this.#ioOther(sqe, data, ns);
  }

  #readDone(views: Buffer[], bytes: number, ns: Namespace): Completion {
    const io = nsIo(ns);
    io.readCommands++;
    io.bytesRead += bytes;
    return { status: SUCCESS, data: views };
  }

  #writeDone(bytes: number, ns: Namespace): Completion {
    const io = nsIo(ns);
    io.writeCommands++;
    io.bytesWritten += bytes;
    return { status: SUCCESS };
  }

  /** Flush, Write Zeroes, Dataset Management. */
  async #ioOther(sqe: Sqe, data: Buffer[] | undefined, ns: Namespace): Promise<Completion> {
    try {
      switch (sqe.opc) {
        case IO_OPC.Flush:
          await ns.backend.flush();
          return ok();
        case IO_OPC.WriteZeroes:
          await ns.backend.writeZeroes(sqe.slba, sqe.nlb);
          if (sqe.fua) await ns.backend.flush();
          return ok();
        case IO_OPC.DatasetManagement: {
          const deallocate = (sqe.cdw(11) & 0x4) !== 0;
          if (!deallocate) return ok();
          const ranges = Buffer.concat(data ?? []);
          const n = (sqe.cdw(10) & 0xff) + 1;
          for (let i = 0; i < n; i++) {
            const nlb = ranges.readUInt32LE(i * 16 + 4);
            const slba = ranges.readUInt32LE(i * 16 + 8) + ranges.readUInt32LE(i * 16 + 12) * 0x1_0000_0000;
            if (nlb === 0) continue;
            if (slba + nlb > ns.backend.blocks) return fail(STATUS.LbaOutOfRange);
          }
          for (let i = 0; i < n; i++) {
            const nlb = ranges.readUInt32LE(i * 16 + 4);
            const slba = ranges.readUInt32LE(i * 16 + 8) + ranges.readUInt32LE(i * 16 + 12) * 0x1_0000_0000;
            if (nlb > 0) await ns.backend.deallocate(slba, nlb);
          }
          return ok();
        }
        default:
          return fail(STATUS.InvalidOpcode);
      }
    } catch (err) {
      return failWith(err);
    }
  }
}

/** A namespace's SMART counters, made on its first I/O. */
function nsIo(ns: Namespace): NamespaceIo {
  return (ns.io ??= { readCommands: 0, writeCommands: 0, bytesRead: 0, bytesWritten: 0 });
}
