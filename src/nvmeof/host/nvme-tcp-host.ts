// A controller-level NVMe/TCP host: admin queue + I/O queues, the same bring-up sequence as the Linux
// host (Connect, CAP, CC.EN, CSTS.RDY, Identify, Number of Queues, I/O Connects).
import { randomBytes } from 'node:crypto';
import { CNS, DISCOVERY_NQN, FID, LID, PROPERTY } from '../protocol/constants.ts';
import { HostQueue, type HostCompletion } from './host-queue.ts';
import {
  connectData,
  connectSqe,
  dsmRanges,
  dsmSqe,
  flushSqe,
  getLogPageSqe,
  identifySqe,
  keepAliveSqe,
  propertyGetSqe,
  propertySetSqe,
  readSqe,
  setFeaturesSqe,
  writeSqe,
  writeZeroesSqe,
} from './sqe-builders.ts';

export class NvmeError extends Error {
  readonly status: number;
  constructor(what: string, status: number) {
    super(`${what} failed with status 0x${status.toString(16)} (SCT ${(status >> 9) & 7}, SC 0x${((status >> 1) & 0xff).toString(16)})`);
    this.status = status;
  }
}

export interface HostConnectOptions {
  address: string;
  port: number;
  subnqn: string;
  hostnqn: string;
  hostid?: Buffer;
  ioQueues?: number;
  queueSize?: number;
  katoMs?: number;
  hdgst?: boolean;
  ddgst?: boolean;
}

export class NvmeTcpHost {
  admin!: HostQueue;
  io: HostQueue[] = [];
  cntlid = 0;
  options!: HostConnectOptions;
  #rr = 0;
  #keepAlive: NodeJS.Timeout | undefined;

  static async connect(options: HostConnectOptions): Promise<NvmeTcpHost> {
    const h = new NvmeTcpHost();
    h.options = options;
    const hostid = options.hostid ?? randomBytes(16);
    const open = () => HostQueue.open({ host: options.address, port: options.port, hdgst: options.hdgst, ddgst: options.ddgst });
    h.admin = await open();
    const katoMs = options.katoMs ?? 5000;
    const c = await h.admin.submit(connectSqe(0, 31, katoMs), { write: connectData(hostid, 0xffff, options.subnqn, options.hostnqn) });
    if (c.status !== 0) {
      h.admin.close();
      throw new NvmeError('admin Connect', c.status);
    }
    h.cntlid = c.dw0 & 0xffff;
    await h.enable();
    const discovery = options.subnqn === DISCOVERY_NQN;
    if (!discovery) {
      const ctrl = await h.identify(CNS.Controller);
      const ioccsz = ctrl.readUInt32LE(1792);
      const nq = options.ioQueues ?? 1;
      const f = await h.admin.submit(setFeaturesSqe(FID.NumberOfQueues, ((nq - 1) << 16) | (nq - 1)));
      if (f.status !== 0) throw new NvmeError('Set Features Number of Queues', f.status);
      const granted = Math.min(nq, (f.dw0 & 0xffff) + 1);
      for (let qid = 1; qid <= granted; qid++) {
        const q = await open();
        q.inCapsuleBytes = ioccsz * 16 - 64;
        const r = await q.submit(connectSqe(qid, (options.queueSize ?? 128) - 1, 0), { write: connectData(hostid, h.cntlid, options.subnqn, options.hostnqn) });
        if (r.status !== 0) throw new NvmeError(`I/O queue ${qid} Connect`, r.status);
        h.io.push(q);
      }
    }
    if (katoMs > 0) {
      h.#keepAlive = setInterval(() => void h.admin.submit(keepAliveSqe()).catch(() => {}), Math.max(100, katoMs / 2));
      h.#keepAlive.unref();
    }
    return h;
  }

  async property(offset: number, size8 = false): Promise<bigint> {
    const c = await this.admin.submit(propertyGetSqe(offset, size8));
    if (c.status !== 0) throw new NvmeError('Property Get', c.status);
    return BigInt(c.dw0 >>> 0) | (BigInt(c.dw1 >>> 0) << 32n);
  }

  async enable(): Promise<void> {
    await this.property(PROPERTY.CAP, true);
    const cc = 1 | (6 << 16) | (4 << 20);
    const s = await this.admin.submit(propertySetSqe(PROPERTY.CC, cc));
    if (s.status !== 0) throw new NvmeError('Property Set CC', s.status);
    for (let i = 0; i < 50; i++) {
      const csts = await this.property(PROPERTY.CSTS);
      if (csts & 1n) return;
      if (csts & 2n) throw new Error('controller fatal status after enable');
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('controller did not become ready');
  }

  async identify(cns: number, nsid = 0): Promise<Buffer> {
    const c = await this.admin.submit(identifySqe(cns, nsid), { readLength: 4096 });
    if (c.status !== 0) throw new NvmeError(`Identify CNS ${cns}`, c.status);
    return c.data!;
  }

  async activeNamespaces(): Promise<number[]> {
    const b = await this.identify(CNS.ActiveNamespaces, 0);
    const out: number[] = [];
    for (let i = 0; i < 1024; i++) {
      const n = b.readUInt32LE(i * 4);
      if (n === 0) break;
      out.push(n);
    }
    return out;
  }

  async getLogPage(lid: number, bytes: number, offset = 0, rae = false): Promise<Buffer> {
    const c = await this.admin.submit(getLogPageSqe(lid, bytes, offset, 0xffffffff, rae), { readLength: bytes });
    if (c.status !== 0) throw new NvmeError(`Get Log Page ${lid}`, c.status);
    return c.data!;
  }

  /** The discovery log the way libnvme reads it: header, entries, header again. */
  async discoveryLog(): Promise<Array<{ subnqn: string; traddr: string; trsvcid: string; subtype: number }>> {
    const head = await this.getLogPage(LID.Discovery, 1024);
    const numrec = Number(head.readBigUInt64LE(8));
    const out = [];
    if (numrec > 0) {
      const entries = await this.getLogPage(LID.Discovery, numrec * 1024, 1024);
      for (let i = 0; i < numrec; i++) {
        const e = entries.subarray(i * 1024, (i + 1) * 1024);
        const cstr = (off: number, len: number) => e.toString('latin1', off, off + len).replace(/\0.*$/s, '').trim();
        out.push({ subtype: e[2], trsvcid: cstr(32, 32), subnqn: cstr(256, 256), traddr: cstr(512, 256) });
      }
    }
    return out;
  }

  #queue(): HostQueue {
    const q = this.io[this.#rr % this.io.length];
    this.#rr++;
    return q;
  }

  submitIo(sqe: Buffer, options: { write?: Buffer; readLength?: number } = {}, queue?: HostQueue): Promise<HostCompletion> {
    return (queue ?? this.#queue()).submit(sqe, options);
  }

  async read(nsid: number, slba: number, nlb: number, queue?: HostQueue): Promise<Buffer> {
    const c = await this.submitIo(readSqe(nsid, slba, nlb), { readLength: nlb * 4096 }, queue);
    if (c.status !== 0) throw new NvmeError('Read', c.status);
    return c.data!;
  }

  async write(nsid: number, slba: number, data: Buffer, fua = false, queue?: HostQueue): Promise<void> {
    const c = await this.submitIo(writeSqe(nsid, slba, data.length / 4096, fua), { write: data }, queue);
    if (c.status !== 0) throw new NvmeError('Write', c.status);
  }

  async flush(nsid: number): Promise<void> {
    const c = await this.submitIo(flushSqe(nsid));
    if (c.status !== 0) throw new NvmeError('Flush', c.status);
  }

  async writeZeroes(nsid: number, slba: number, nlb: number): Promise<void> {
    const c = await this.submitIo(writeZeroesSqe(nsid, slba, nlb));
    if (c.status !== 0) throw new NvmeError('Write Zeroes', c.status);
  }

  async deallocate(nsid: number, ranges: Array<{ slba: number; nlb: number }>): Promise<void> {
    const c = await this.submitIo(dsmSqe(nsid, ranges.length, true), { write: dsmRanges(ranges) });
    if (c.status !== 0) throw new NvmeError('Dataset Management', c.status);
  }

  async close(): Promise<void> {
    if (this.#keepAlive) clearInterval(this.#keepAlive);
    for (const q of this.io) q.close();
    if (!this.admin.closed) {
      // Normal shutdown notification, as `nvme disconnect` does.
      await this.admin.submit(propertySetSqe(PROPERTY.CC, (1 << 14) | 1 | (6 << 16) | (4 << 20))).catch(() => {});
    }
    this.admin.close();
  }
}
