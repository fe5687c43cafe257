// A subsystem: an NQN, the hosts allowed to connect, and namespaces each visible to some of those hosts.
import type { NamespaceBackend } from './namespace-backend.ts';

export interface Namespace {
  nsid: number;
  uuid: string;
  nguid: Buffer;
  backend: NamespaceBackend;
  /** Host NQNs that see it; null means every allowed host. */
  visibleTo: Set<string> | null;
  /** I/O served for the SMART / health log, across every controller and reconnect (made on first I/O). */
  io?: NamespaceIo;
}

export interface NamespaceIo {
  readCommands: number;
  writeCommands: number;
  bytesRead: number;
  bytesWritten: number;
}

export class Subsystem {
  readonly nqn: string;
  readonly serial: string;
  readonly allowedHosts = new Set<string>();
  readonly namespaces = new Map<number, Namespace>();

  constructor(nqn: string, serial: string) {
    this.nqn = nqn;
    this.serial = serial;
  }

  hostAllowed(hostnqn: string): boolean {
    return this.allowedHosts.has(hostnqn);
  }

  visible(ns: Namespace, hostnqn: string): boolean {
    return this.hostAllowed(hostnqn) && (ns.visibleTo === null || ns.visibleTo.has(hostnqn));
  }

  namespaceFor(nsid: number, hostnqn: string): Namespace | undefined {
    const ns = this.namespaces.get(nsid);
    return ns && this.visible(ns, hostnqn) ? ns : undefined;
  }

  visibleNsids(hostnqn: string): number[] {
    const out: number[] = [];
    for (const ns of this.namespaces.values()) if (this.visible(ns, hostnqn)) out.push(ns.nsid);
    return out;
  }
}
