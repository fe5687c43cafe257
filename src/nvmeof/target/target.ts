// The target: subsystems, host access, controllers, discovery. Connect is decided here; everything a
// controller does after that lives in controller.ts.
import { createHash } from 'node:crypto';
import { DISCOVERY_NQN } from '../protocol/constants.ts';
import type { DiscoveryEntry } from '../protocol/log-pages.ts';
import { STATUS, SUCCESS, type NvmeStatus } from '../protocol/status.ts';
import { Controller, MAX_IO_QUEUES, MQES, type ControllerHost, type ControllerQueue } from './controller.ts';
import type { NamespaceBackend } from './namespace-backend.ts';
import { Subsystem, type Namespace } from './subsystem.ts';

export interface ConnectRequest {
  qid: number;
  sqsize: number; // 0's based
  katoMs: number;
  cntlid: number;
  subnqn: string;
  hostnqn: string;
  hostid: Buffer;
  localAddress: string;
  localPort: number;
}

export type ConnectResult =
  | { status: typeof SUCCESS; controller: Controller }
  | { status: NvmeStatus; ipo?: number; iattr?: number };

export interface TargetOptions {
  /** Address written into discovery log entries; undefined means the connection's local address. */
  advertiseAddress?: string;
  ioPort: number;
  firmware?: string;
}

export class Target implements ControllerHost {
  readonly subsystems = new Map<string, Subsystem>();
  readonly controllers = new Map<number, Controller>();
  #nextCntlid = 1;
  #genctr = 1;
  #options: TargetOptions;
  readonly firmware: string;

  constructor(options: TargetOptions) {
    this.#options = options;
    this.firmware = options.firmware ?? '0.1.0';
  }

  get ioPort(): number {
    return this.#options.ioPort;
  }

  setIoPort(port: number): void {
    this.#options.ioPort = port;
  }

  // ---- configuration ----

  addSubsystem(nqn: string): Subsystem {
    let sub = this.subsystems.get(nqn);
    if (!sub) {
      const serial = createHash('sha256').update(nqn).digest('hex').slice(0, 20);
      sub = new Subsystem(nqn, serial);
      this.subsystems.set(nqn, sub);
      this.#discoveryChanged();
    }
    return sub;
  }

  /**
   * Removes a subsystem. Its namespaces go first, with a Namespace Attribute Changed event, and its
   * controllers are torn down a moment later: a connected Linux host removes the block devices on the
   * event, whereas a dropped connection alone leaves them in place while it retries for ctrl-loss-tmo.
   */
  removeSubsystem(nqn: string, graceMs = 1500): void {
    const sub = this.subsystems.get(nqn);
    if (!sub) return;
    this.subsystems.delete(nqn);
    const controllers = this.#controllersOf(sub);
    const nsids = [...sub.namespaces.keys()];
    for (const c of controllers) for (const nsid of nsids) if (sub.namespaces.get(nsid) && sub.visible(sub.namespaces.get(nsid)!, c.hostnqn)) c.notifyNamespaceChanged(nsid);
    sub.namespaces.clear();
    sub.allowedHosts.clear();
    this.#discoveryChanged();
    if (controllers.length === 0) return;
    const teardown = () => {
      for (const c of controllers) c.fatal('subsystem removed');
    };
    if (graceMs > 0 && nsids.length > 0) setTimeout(teardown, graceMs).unref();
    else teardown();
  }

  setHosts(nqn: string, hosts: string[]): void {
    const sub = this.#subsystem(nqn);
    const next = new Set(hosts);
    const removed = [...sub.allowedHosts].filter((h) => !next.has(h));
    sub.allowedHosts.clear();
    for (const h of next) sub.allowedHosts.add(h);
    for (const c of this.#controllersOf(sub)) if (removed.includes(c.hostnqn)) c.fatal('host no longer allowed');
    this.#discoveryChanged();
  }

  addNamespace(nqn: string, ns: { nsid: number; uuid: string; nguid: Buffer; backend: NamespaceBackend; visibleTo: string[] | null }): void {
    const sub = this.#subsystem(nqn);
    const entry: Namespace = { ...ns, visibleTo: ns.visibleTo ? new Set(ns.visibleTo) : null };
    sub.namespaces.set(ns.nsid, entry);
    for (const c of this.#controllersOf(sub)) if (sub.visible(entry, c.hostnqn)) c.notifyNamespaceChanged(ns.nsid);
  }

  /** Adds many namespaces and raises one event per controller. */
  addNamespaces(nqn: string, list: Array<{ nsid: number; uuid: string; nguid: Buffer; backend: NamespaceBackend; visibleTo: string[] | null }>): void {
    const sub = this.#subsystem(nqn);
    const touched = new Map<Controller, number[]>();
    for (const ns of list) {
      const entry: Namespace = { ...ns, visibleTo: ns.visibleTo ? new Set(ns.visibleTo) : null };
      sub.namespaces.set(ns.nsid, entry);
      for (const c of this.#controllersOf(sub)) {
        if (!sub.visible(entry, c.hostnqn)) continue;
        touched.set(c, [...(touched.get(c) ?? []), ns.nsid]);
      }
    }
    for (const [c, nsids] of touched) for (const n of nsids) c.notifyNamespaceChanged(n);
  }

  removeNamespace(nqn: string, nsid: number): void {
    this.removeNamespaces(nqn, [nsid]);
  }

  /** Removes namespaces; each controller that saw any of them gets one event. */
  removeNamespaces(nqn: string, nsids: number[]): void {
    const sub = this.subsystems.get(nqn);
    if (!sub) return;
    const controllers = this.#controllersOf(sub);
    for (const nsid of nsids) {
      const ns = sub.namespaces.get(nsid);
      if (!ns) continue;
      const viewers = controllers.filter((c) => sub.visible(ns, c.hostnqn));
      sub.namespaces.delete(nsid);
      for (const c of viewers) c.notifyNamespaceChanged(nsid);
    }
  }

  /** Points a namespace at another backend (same NSID, UUID and NGUID), e.g. to undo a refresh. */
  replaceNamespaceBackend(nqn: string, nsid: number, backend: NamespaceBackend): void {
    const sub = this.#subsystem(nqn);
    const ns = sub.namespaces.get(nsid);
    if (!ns) throw new Error(`subsystem ${nqn} has no namespace ${nsid}`);
    ns.backend = backend;
    for (const c of this.#controllersOf(sub)) if (sub.visible(ns, c.hostnqn)) c.notifyNamespaceChanged(nsid);
  }

  #subsystem(nqn: string): Subsystem {
    const sub = this.subsystems.get(nqn);
    if (!sub) throw new Error(`subsystem ${nqn} does not exist`);
    return sub;
  }

  #controllersOf(sub: Subsystem): Controller[] {
    return [...this.controllers.values()].filter((c) => c.subsystem === sub);
  }

  #discoveryChanged(): void {
    this.#genctr++;
    for (const c of this.controllers.values()) if (c.discovery) c.notifyDiscoveryChanged();
  }

  // ---- ControllerHost ----

  discoveryGenctr(): number {
    return this.#genctr;
  }

  discoveryEntries(hostnqn: string, localAddress: string): DiscoveryEntry[] {
    // A host that reached a dual-stack (::) listener over IPv4 is told the IPv4 address, not its
    // IPv4-mapped IPv6 form: the entry must not send an IPv4 host to an IPv6 transport.
    const local = /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(localAddress) ? localAddress.slice(7) : localAddress;
    const addr = this.#options.advertiseAddress ?? local;
    const entries: DiscoveryEntry[] = [];
    for (const sub of [...this.subsystems.values()].sort((a, b) => a.nqn.localeCompare(b.nqn))) {
      if (!sub.hostAllowed(hostnqn)) continue;
      entries.push({ subnqn: sub.nqn, traddr: addr, trsvcid: String(this.#options.ioPort), adrfam: addr.includes(':') ? 2 : 1, portid: 1, subtype: 2 });
    }
    return entries;
  }

  controllerGone(controller: Controller): void {
    this.controllers.delete(controller.cntlid);
  }

  // ---- Connect ----

  connect(req: ConnectRequest, queue: ControllerQueue): ConnectResult {
    const isDiscovery = req.subnqn === DISCOVERY_NQN;
    if (req.hostid.every((b) => b === 0)) return { status: STATUS.ConnectInvalidParameters, ipo: 0, iattr: 1 };
    if (req.qid === 0) {
      if (req.sqsize < 1 || req.sqsize > MQES) return { status: STATUS.ConnectInvalidParameters, ipo: 44, iattr: 0 };
      if (req.cntlid !== 0xffff) return { status: STATUS.ConnectInvalidParameters, ipo: 16, iattr: 1 };
      let sub: Subsystem | undefined;
      if (!isDiscovery) {
        sub = this.subsystems.get(req.subnqn);
        if (!sub) return { status: STATUS.ConnectInvalidParameters, ipo: 256, iattr: 1 };
        if (!sub.hostAllowed(req.hostnqn)) return { status: STATUS.ConnectInvalidHost, ipo: 512, iattr: 1 };
      }
      const cntlid = this.#allocateCntlid();
      if (cntlid === undefined) return { status: STATUS.ConnectControllerBusy };
      const controller = new Controller({ cntlid, subsystem: sub, hostnqn: req.hostnqn, hostid: Buffer.from(req.hostid), katoMs: req.katoMs, localAddress: req.localAddress, host: this });
      controller.queues.set(0, queue);
      this.controllers.set(cntlid, controller);
      return { status: SUCCESS, controller };
    }
    if (isDiscovery) return { status: STATUS.ConnectInvalidParameters, ipo: 42, iattr: 0 };
    const controller = this.controllers.get(req.cntlid);
    if (!controller || controller.subnqn !== req.subnqn || controller.hostnqn !== req.hostnqn) {
      return { status: STATUS.ConnectInvalidParameters, ipo: 16, iattr: 1 };
    }
    if (req.sqsize < 1 || req.sqsize > MQES) return { status: STATUS.ConnectInvalidParameters, ipo: 44, iattr: 0 };
    if (req.qid > (controller.grantedIoQueues || MAX_IO_QUEUES) || controller.queues.has(req.qid)) {
      return { status: STATUS.ConnectInvalidParameters, ipo: 42, iattr: 0 };
    }
    controller.queues.set(req.qid, queue);
    return { status: SUCCESS, controller };
  }

  #allocateCntlid(): number | undefined {
    for (let i = 0; i < 0xffef; i++) {
      const id = this.#nextCntlid;
      this.#nextCntlid = this.#nextCntlid >= 0xffef ? 1 : this.#nextCntlid + 1;
      if (!this.controllers.has(id)) return id;
    }
    return undefined;
  }

  close(): void {
    for (const c of [...this.controllers.values()]) c.fatal('target stopped');
  }
}

/** NGUID derived from the clone id: stable across unexport, re-export and restarts, unique per clone. */
export function nguidFor(cloneId: string): Buffer {
  return createHash('sha256').update(`thicket-nguid:${cloneId}`).digest().subarray(0, 16);
}
