// The typed message interface between the control plane (main thread) and the data plane (worker):
// the only crossing between the two. Every operation is a request with an id and one response.
import type { CloneInfo, CreateCloneInput, ReplicaRef } from '../engine/engine.ts';
import type { PoolOptions, RecoveryReport } from '../engine/pool-store.ts';
import type { QosLimits } from '../engine/token-bucket.ts';

export interface DataplaneOptions {
  replicaCacheBytes: number;
  firmware?: string;
  journalBytes?: number;
  reserveBytes?: number;
}

export interface PoolUsage {
  poolId: string;
  cloneDataBytes: number;
  uniqueBytes: number;
  journalBytes: number;
}

export interface TargetNamespaceSpec {
  nsid: number;
  cloneId: string;
  uuid: string;
  nguid: string;
  /** Host NQNs that see the namespace; null: every allowed host. */
  visibleTo: string[] | null;
}

export interface ControllerInfo {
  cntlid: number;
  subnqn: string;
  hostnqn: string;
  queues: number;
  discovery: boolean;
}

export interface DataplaneOps {
  startTarget(args: { host: string; ioPort: number; discoveryPort: number; advertiseAddress?: string }): { ioPort: number; discoveryPort: number };
  addSubsystem(args: { nqn: string }): void;
  removeSubsystem(args: { nqn: string }): void;
  setSubsystemHosts(args: { nqn: string; hosts: string[] }): void;
  addNamespaces(args: { nqn: string; namespaces: TargetNamespaceSpec[] }): void;
  removeNamespace(args: { nqn: string; nsid: number }): void;
  controllers(args: Record<string, never>): ControllerInfo[];
  openPool(args: { pool: PoolOptions; clones: Array<Omit<CreateCloneInput, 'poolId'>> }): RecoveryReport;
  closePool(args: { poolId: string }): void;
  createClones(args: { clones: CreateCloneInput[] }): void;
  deleteClone(args: { id: string }): void;
  deleteClones(args: { ids: string[] }): void;
  resetClone(args: { id: string }): void;
  resetClones(args: { ids: string[] }): Array<{ id: string; error?: string }>;
  recomposeClones(args: { ids: string[]; replica: ReplicaRef; sizeBytes?: number }): Array<{ id: string; error?: string }>;
  replaceNamespace(args: { nqn: string; nsid: number; cloneId: string }): void;
  removeNamespaces(args: { nqn: string; nsids: number[] }): void;
  setQos(args: { id: string; qos: QosLimits }): void;
  cloneInfo(args: { ids?: string[] }): CloneInfo[];
  poolUsage(args: { poolId?: string }): PoolUsage[];
  repointReplica(args: { replicaId: string; path: string }): void;
  releaseReplica(args: { replicaId: string }): void;
  reparentClones(args: { cloneIds: string[]; replica: ReplicaRef }): void;
  cacheStats(args: Record<string, never>): { hits: number; misses: number; deviceReads: number; deviceBytes: number; cachedBytes: number; capacityBytes: number };
  ping(args: Record<string, never>): { ok: true };
}

export type OpName = keyof DataplaneOps;

export interface DataplaneRequest {
  id: number;
  op: OpName;
  args: unknown;
}

export type DataplaneResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: string; message: string; name: string } };
