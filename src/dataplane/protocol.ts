// The typed message interface between the control plane (main thread) and the data plane (worker):
// the only crossing between the two. Every operation is a request with an id and one response.
import type { CloneInfo, CreateCloneInput, ReplicaRef } from '../engine/engine.ts';
import type { PoolOptions, RecoveryReport } from '../engine/pool-store.ts';
import type { QosLimits } from '../engine/token-bucket.ts';

export interface DataplaneOptions {
  replicaCacheBytes: number;
  journalBytes?: number;
  reserveBytes?: number;
}

export interface PoolUsage {
  poolId: string;
  cloneDataBytes: number;
  uniqueBytes: number;
  journalBytes: number;
}

export interface DataplaneOps {
  openPool(args: { pool: PoolOptions; clones: Array<Omit<CreateCloneInput, 'poolId'>> }): RecoveryReport;
  closePool(args: { poolId: string }): void;
  createClones(args: { clones: CreateCloneInput[] }): void;
  deleteClone(args: { id: string }): void;
  resetClone(args: { id: string }): void;
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
