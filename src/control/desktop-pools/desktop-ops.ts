// Batch operations on desktops shared by the pool jobs: create (clone + namespace + row), remove, reset.
// Every batch is one transaction plus one data-plane call per kind of change, so a burst of N desktops
// costs a handful of round trips, not N.
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DataplaneClient } from '../../dataplane/client.ts';
import type { Database, DesktopPoolRow, DesktopRow, DesktopState } from '../../db/schema.ts';
import { CloneRepository } from '../../db/repositories/clone.repository.ts';
import { DesktopPoolRepository } from '../../db/repositories/desktop-pool.repository.ts';
import { HostRepository, SubsystemRepository } from '../../db/repositories/export.repository.ts';
import { replicaImagePath } from '../../engine/storage-pool-fs.ts';
import { nguidFor } from '../../nvmeof/target/target.ts';
import type { EventBus } from '../events/event-bus.ts';
import type { DesktopHooks } from './desktop-hooks.ts';
import { MAX_NAMESPACES_PER_SUBSYSTEM } from '../exports/export.service.ts';
import { isUniqueViolation } from '../../db/repositories/executor.ts';
import { desktopName, parseNamePattern } from './name-pattern.ts';

export const BATCH_DESKTOPS = 1000;

/** desktop.state events, batched: at most one message per pool per 100 ms under bursts. */
export class DesktopStateEvents {
  #events: EventBus;
  #pending = new Map<string, Array<{ name: string; cloneId: string; state: string }>>();
  #timer: NodeJS.Timeout | undefined;
  constructor(events: EventBus) {
    this.#events = events;
  }
  push(poolId: string, changes: Array<{ name: string; cloneId: string; state: string }>): void {
    if (changes.length === 0) return;
    const list = this.#pending.get(poolId) ?? [];
    for (const c of changes) list.push(c);
    this.#pending.set(poolId, list);
    if (!this.#timer) this.#timer = setTimeout(() => this.flush(), 100);
  }
  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const [poolId, desktops] of this.#pending) this.#events.emit('desktop.state', { poolId, desktops });
    this.#pending.clear();
  }
}

export class DesktopOps {
  readonly db: Kysely<Database>;
  readonly dataplane: DataplaneClient;
  readonly events: EventBus;
  readonly stateEvents: DesktopStateEvents;
  readonly pools = new DesktopPoolRepository();
  readonly clones = new CloneRepository();
  readonly subsystems = new SubsystemRepository();
  readonly hosts = new HostRepository();
  /** Hooks on hypervisor hosts; set when hooks are enabled (thicket.ts). */
  hooks: DesktopHooks | undefined;
  #nqnPrefix: string;

  constructor(db: Kysely<Database>, dataplane: DataplaneClient, events: EventBus, nqnPrefix: string) {
    this.db = db;
    this.dataplane = dataplane;
    this.events = events;
    this.stateEvents = new DesktopStateEvents(events);
    this.#nqnPrefix = nqnPrefix;
  }

  async replicaRef(replicaId: string): Promise<{ id: string; path: string; sizeBytes: number; templateId: string; version: number }> {
    const r = await this.db
      .selectFrom('replicas')
      .innerJoin('storage_pools', 'storage_pools.id', 'replicas.storage_pool_id')
      .select(['replicas.id', 'replicas.size_bytes', 'replicas.template_id', 'replicas.version', 'replicas.state', 'storage_pools.path'])
      .where('replicas.id', '=', replicaId)
      .executeTakeFirst();
    if (!r) throw new Error(`replica ${replicaId} no longer exists`);
    return { id: r.id, path: replicaImagePath(r.path, r.id), sizeBytes: Number(r.size_bytes), templateId: r.template_id, version: r.version };
  }

  /** Makes sure the pool has `count` subsystems, each allowing the pool's hosts. */
  async ensureSubsystems(pool: DesktopPoolRow, count: number): Promise<Array<{ subsystem_id: string; ordinal: number; nqn: string }>> {
    let subs = await this.pools.subsystems(this.db, pool.id);
    const hostIds = await this.pools.hostIds(this.db, pool.id);
    const hostNqns = (await this.hosts.getMany(this.db, hostIds)).map((h) => h.nqn);
    for (let ordinal = subs.length; ordinal < count; ordinal++) {
      const name = ordinal === 0 ? pool.name : `${pool.name}-${ordinal + 1}`;
      const nqn = `${this.#nqnPrefix}:${name}`;
      await this.db.transaction().execute(async (trx) => {
        const id = randomUUID();
        // Checked when the job was queued; a subsystem made since then still fails the job with its name.
        await this.subsystems.insert(trx, { id, name, nqn }).catch((err: unknown) => {
          if (isUniqueViolation(err)) throw new Error(`subsystem name "${name}" was taken while the job waited; remove it or rename the pool`, { cause: err });
          throw err;
        });
        for (const h of hostIds) await this.subsystems.addHost(trx, id, h);
        await this.pools.addSubsystem(trx, pool.id, id, ordinal);
        await this.dataplane.call('addSubsystem', { nqn });
        await this.dataplane.call('setSubsystemHosts', { nqn, hosts: hostNqns });
      });
      this.events.emit('subsystem.created', { subsystemId: nqn, nqn, desktopPoolId: pool.id });
    }
    subs = await this.pools.subsystems(this.db, pool.id);
    return subs;
  }

  /**
   * Creates desktops with the given indexes: clones, desktop rows and namespaces in one transaction; the
   * engine and the target are told inside it, so a failure commits nothing (and is undone in the engine).
   */
  async createDesktops(pool: DesktopPoolRow, idxs: number[], jobId: string | null, initialState: DesktopState = 'available'): Promise<DesktopRow[]> {
    if (idxs.length === 0) return [];
    const pattern = parseNamePattern(pool.name_pattern);
    const replica = await this.replicaRef(pool.replica_id);
    const subs = await this.ensureSubsystems(pool, Math.ceil(Math.max(...idxs) / MAX_NAMESPACES_PER_SUBSYSTEM));
    const bySubsystem = new Map(subs.map((s) => [s.ordinal, s]));
    const cloneRows = idxs.map((idx) => ({
      id: randomUUID(),
      name: `${pool.name}--${desktopName(pattern, idx)}`,
      replica_id: pool.replica_id,
      storage_pool_id: pool.storage_pool_id,
      size_bytes: replica.sizeBytes,
      state: 'ready',
      qos_iops: pool.qos_iops,
      qos_bytes_per_second: pool.qos_bytes_per_second === null ? null : Number(pool.qos_bytes_per_second),
    }));
    const desktops = idxs.map((idx, i) => {
      const sub = bySubsystem.get(Math.floor((idx - 1) / MAX_NAMESPACES_PER_SUBSYSTEM))!;
      return {
        id: randomUUID(),
        pool_id: pool.id,
        idx,
        name: desktopName(pattern, idx),
        clone_id: cloneRows[i].id,
        subsystem_id: sub.subsystem_id,
        nsid: ((idx - 1) % MAX_NAMESPACES_PER_SUBSYSTEM) + 1,
        state: initialState,
        job_id: jobId,
      };
    });
    let engineCreated = false;
    try {
      await this.db.transaction().execute(async (trx) => {
        await this.pools.insertDesktopBatch(trx, cloneRows, desktops, desktops.map((d) => nguidFor(d.clone_id).toString('hex')));
        await this.dataplane.call('createClones', {
          clones: cloneRows.map((c) => ({
            id: c.id,
            poolId: c.storage_pool_id,
            replica: { id: replica.id, path: replica.path, sizeBytes: replica.sizeBytes },
            sizeBytes: c.size_bytes,
            qos: { iops: c.qos_iops, bytesPerSecond: c.qos_bytes_per_second },
          })),
        });
        engineCreated = true;
        for (const sub of subs) {
          const list = desktops.filter((d) => d.subsystem_id === sub.subsystem_id);
          if (list.length === 0) continue;
          await this.dataplane.call('addNamespaces', {
            nqn: sub.nqn,
            namespaces: list.map((d) => ({ nsid: d.nsid, cloneId: d.clone_id, uuid: d.clone_id, nguid: nguidFor(d.clone_id).toString('hex'), visibleTo: null })),
          });
        }
      });
    } catch (err) {
      if (engineCreated) {
        for (const sub of subs) {
          const nsids = desktops.filter((d) => d.subsystem_id === sub.subsystem_id).map((d) => d.nsid);
          if (nsids.length) await this.dataplane.call('removeNamespaces', { nqn: sub.nqn, nsids }).catch(() => {});
        }
        await this.dataplane.call('deleteClones', { ids: cloneRows.map((c) => c.id) }).catch(() => {});
      }
      throw err;
    }
    this.stateEvents.push(pool.id, desktops.map((d) => ({ name: d.name, cloneId: d.clone_id, state: d.state })));
    return desktops.map((d) => ({ ...d, undo_clone_id: null, undo_until: null, host_id: null, attached: false, error: null, power: null, updated_at: new Date() }));
  }

  /** Removes desktops: rows first (one transaction), then namespaces and clones in the data plane. */
  async removeDesktops(poolId: string, desktops: DesktopRow[]): Promise<void> {
    if (desktops.length === 0) return;
    const subs = await this.pools.subsystems(this.db, poolId);
    const cloneIds = desktops.flatMap((d) => (d.undo_clone_id ? [d.clone_id, d.undo_clone_id] : [d.clone_id]));
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('namespaces').where('clone_id', 'in', desktops.map((d) => d.clone_id)).execute();
      await this.pools.deleteDesktops(trx, desktops.map((d) => d.id));
      await trx.deleteFrom('clones').where('id', 'in', cloneIds).execute();
    });
    for (const sub of subs) {
      const nsids = desktops.filter((d) => d.subsystem_id === sub.subsystem_id).map((d) => d.nsid);
      if (nsids.length) await this.dataplane.call('removeNamespaces', { nqn: sub.nqn, nsids });
    }
    await this.dataplane.call('deleteClones', { ids: cloneIds });
    this.stateEvents.push(poolId, desktops.map((d) => ({ name: d.name, cloneId: d.clone_id, state: 'deleted' })));
  }

  /** Resets clones to their replica in the data plane and zeroes their recorded usage; returns the failed ones with why. */
  async resetClones(cloneIds: string[]): Promise<Map<string, string>> {
    if (cloneIds.length === 0) return new Map();
    const results = await this.dataplane.call('resetClones', { ids: cloneIds });
    const failed = new Map(results.filter((r) => r.error).map((r) => [r.id, r.error!]));
    const ok = cloneIds.filter((id) => !failed.has(id));
    if (ok.length) {
      await this.db.updateTable('clones').set({ unique_bytes: 0 }).where('id', 'in', ok).execute();
      // A reset repairs a clone that failed at start-up (the engine wrote it a fresh checkpoint).
      await this.db.updateTable('clones').set({ state: 'ready', error: null }).where('id', 'in', ok).where('state', '=', 'failed').execute();
    }
    return failed;
  }

  async setStates(poolId: string, desktops: DesktopRow[], state: DesktopState): Promise<void> {
    if (desktops.length === 0) return;
    await this.pools.setStates(this.db, desktops.map((d) => d.id), state);
    this.stateEvents.push(poolId, desktops.map((d) => ({ name: d.name, cloneId: d.clone_id, state })));
  }
}
