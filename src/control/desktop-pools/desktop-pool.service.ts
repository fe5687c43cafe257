// Desktop pools as operators see them. Requests are validated here and turned into jobs; the jobs in
// pool-jobs.ts do the work in bursts.
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Database, DesktopPoolRow, DesktopRow, DesktopState, JobRow } from '../../db/schema.ts';
import { JobRepository } from '../../db/repositories/job.repository.ts';
import { isUniqueViolation } from '../../db/repositories/executor.ts';
import { AppError } from '../../errors.ts';
import { toJobDto, type JobDto } from '../jobs/job-types.ts';
import type { DesktopOps } from './desktop-ops.ts';
import { checkNamesFit, desktopName, parseNamePattern } from './name-pattern.ts';
import { MAX_NAMESPACES_PER_SUBSYSTEM } from '../exports/export.service.ts';
import { POOL_JOB_KINDS } from './pool-jobs.ts';
import type { DesktopPoolDto, DesktopDto } from '../../dto.ts';
export type { DesktopPoolDto, DesktopDto } from '../../dto.ts';

export const MAX_POOL_SIZE = 100_000;



export const DESKTOP_EVENTS = ['vm-started', 'vm-stopped', 'session-started', 'session-ended'] as const;
export type DesktopEvent = (typeof DESKTOP_EVENTS)[number];

export interface PoolSettingsInput {
  refreshOnLogoff?: boolean;
  vm?: { vcpus?: number; memoryMiB?: number; network?: string };
}

export class DesktopPoolService {
  #ops: DesktopOps;
  #db: Kysely<Database>;
  #jobs = new JobRepository();
  #kick: () => void;

  constructor(ops: DesktopOps, kickJobs: () => void) {
    this.#ops = ops;
    this.#db = ops.db;
    this.#kick = kickJobs;
  }

  async #pool(id: string): Promise<DesktopPoolRow> {
    const pool = await this.#ops.pools.get(this.#db, id);
    if (!pool) throw new AppError('DESKTOP_POOL_NOT_FOUND', `desktop pool ${id} does not exist`);
    return pool;
  }

  async #toDto(pool: DesktopPoolRow, counts?: Map<string, number>): Promise<DesktopPoolDto> {
    const ops = this.#ops;
    const desktops = await ops.pools.desktops(this.#db, pool.id);
    const byState = { provisioning: 0, available: 0, 'in-use': 0, refreshing: 0, failed: 0, total: desktops.length } as DesktopPoolDto['desktops'];
    if (counts) for (const [k, v] of counts) (byState as Record<string, number>)[k] = v;
    else for (const d of desktops) byState[d.state]++;
    const infos = desktops.length ? await ops.dataplane.call('cloneInfo', { ids: desktops.map((d) => d.clone_id) }) : [];
    let unique = 0;
    let shared = 0;
    let full = 0;
    for (const i of infos) {
      unique += i.uniqueBytes;
      shared += i.sharedBytes;
      full += i.sizeBytes;
    }
    const subs = await ops.pools.subsystems(this.#db, pool.id);
    return {
      id: pool.id,
      name: pool.name,
      replicaId: pool.replica_id,
      storagePoolId: pool.storage_pool_id,
      size: pool.size,
      namePattern: pool.name_pattern,
      hostIds: await ops.pools.hostIds(this.#db, pool.id),
      qos: { iops: pool.qos_iops, bytesPerSecond: pool.qos_bytes_per_second === null ? null : Number(pool.qos_bytes_per_second) },
      refreshGraceSeconds: pool.refresh_grace_seconds,
      refreshOnLogoff: pool.refresh_on_logoff,
      vm: { vcpus: pool.vm_vcpus, memoryMiB: pool.vm_memory_mib, network: pool.vm_network },
      state: pool.state,
      error: pool.error,
      desktops: byState,
      // What full copies would have cost, minus what the clones cost.
      space: { uniqueBytes: unique, sharedBytes: shared, savedBytes: Math.max(0, full - unique) },
      subsystems: subs.map((s) => ({ id: s.subsystem_id, nqn: s.nqn })),
      createdAt: new Date(pool.created_at).toISOString(),
    };
  }

  async list(): Promise<DesktopPoolDto[]> {
    const pools = await this.#ops.pools.list(this.#db);
    return Promise.all(pools.map((p) => this.#toDto(p)));
  }

  async get(id: string): Promise<DesktopPoolDto> {
    return this.#toDto(await this.#pool(id));
  }

  async desktops(id: string): Promise<DesktopDto[]> {
    const pool = await this.#pool(id);
    return this.#desktopDtos(pool.id, await this.#ops.pools.desktops(this.#db, pool.id));
  }

  async #desktopDtos(poolId: string, rows: DesktopRow[]): Promise<DesktopDto[]> {
    const ops = this.#ops;
    const subs = new Map((await ops.pools.subsystems(this.#db, poolId)).map((s) => [s.subsystem_id, s.nqn]));
    const ns = rows.length
      ? new Map((await this.#db.selectFrom('namespaces').select(['clone_id', 'uuid']).where('clone_id', 'in', rows.map((d) => d.clone_id)).execute()).map((n) => [n.clone_id, n.uuid]))
      : new Map<string, string>();
    const infos = rows.length ? new Map((await ops.dataplane.call('cloneInfo', { ids: rows.map((d) => d.clone_id) })).map((i) => [i.id, i])) : new Map();
    return rows.map((d) => ({
      name: d.name,
      cloneId: d.clone_id,
      subsystemNqn: subs.get(d.subsystem_id) ?? '',
      nsid: d.nsid,
      uuid: ns.get(d.clone_id) ?? d.clone_id,
      state: d.state,
      uniqueBytes: infos.get(d.clone_id)?.uniqueBytes ?? 0,
      undoUntil: d.undo_until ? new Date(d.undo_until).toISOString() : null,
      hostId: d.host_id,
      attached: d.attached,
      power: d.power,
      error: d.error,
    }));
  }

  async #queue(trx: Kysely<Database>, poolId: string, kind: string, payload: Record<string, unknown>, total = 0): Promise<JobRow> {
    const active = await this.#jobs.activeForResource(trx, poolId);
    if (active.length > 0) {
      throw new AppError('DESKTOP_POOL_BUSY', `desktop pool ${poolId} has a ${active[0].kind} job in progress`, { jobs: active.map((j) => ({ id: j.id, kind: j.kind, state: j.state })) });
    }
    // The pool's name goes with the job: job lists show it even after the pool is deleted.
    const pool = await this.#ops.pools.get(trx, poolId);
    return this.#jobs.insert(trx, { id: randomUUID(), kind, resource_id: poolId, payload: { poolId, poolName: pool?.name, ...payload }, progress_total: total });
  }

  #queued(job: JobRow): JobDto {
    this.#ops.events.emit('job.queued', { jobId: job.id, kind: job.kind, resourceId: job.resource_id });
    this.#kick();
    return toJobDto(job);
  }

  async create(input: {
    name: string;
    replicaId: string;
    storagePoolId: string;
    size: number;
    namePattern: string;
    hostIds: string[];
    qos?: { iops?: number | null; bytesPerSecond?: number | null };
    refreshGraceSeconds?: number;
  } & PoolSettingsInput): Promise<{ pool: DesktopPoolDto; job: JobDto }> {
    const pattern = parseNamePattern(input.namePattern);
    checkNamesFit(pattern, input.size);
    const { pool, job } = await this.#db
      .transaction()
      .execute(async (trx) => {
        const replica = await trx.selectFrom('replicas').select(['id', 'state']).where('id', '=', input.replicaId).executeTakeFirst();
        if (!replica) throw new AppError('REPLICA_NOT_FOUND', `replica ${input.replicaId} does not exist`, { field: 'replicaId' });
        if (replica.state !== 'ready') throw new AppError('REPLICA_NOT_READY', `replica ${input.replicaId} is ${replica.state}`);
        const sp = await trx.selectFrom('storage_pools').select('id').where('id', '=', input.storagePoolId).executeTakeFirst();
        if (!sp) throw new AppError('STORAGE_POOL_NOT_FOUND', `storage pool ${input.storagePoolId} does not exist`, { field: 'storagePoolId' });
        const hosts = await this.#ops.hosts.getMany(trx, input.hostIds);
        const missing = input.hostIds.filter((h) => !hosts.some((x) => x.id === h));
        if (missing.length) throw new AppError('HOST_NOT_FOUND', `host ${missing[0]} does not exist`, { field: 'hostIds' });
        await this.#requireSubsystemNames(trx, undefined, input.name, input.size);
        const pool = await this.#ops.pools.insert(trx, {
          id: randomUUID(),
          name: input.name,
          replica_id: input.replicaId,
          storage_pool_id: input.storagePoolId,
          // The size asked for: the pool's desktop counts show how far its job has come. The job records
          // the real count when it ends (a failed burst leaves 0).
          size: input.size,
          name_pattern: input.namePattern,
          qos_iops: input.qos?.iops ?? null,
          qos_bytes_per_second: input.qos?.bytesPerSecond ?? null,
          refresh_grace_seconds: input.refreshGraceSeconds ?? 0,
          refresh_on_logoff: input.refreshOnLogoff ?? false,
          vm_vcpus: input.vm?.vcpus ?? 2,
          vm_memory_mib: input.vm?.memoryMiB ?? 4096,
          vm_network: input.vm?.network ?? 'default',
          state: 'provisioning',
        });
        await this.#ops.pools.setHosts(trx, pool.id, [...new Set(input.hostIds)]);
        // The first resize of a pool provisions it; `provision` tells the two apart in job lists.
        const job = await this.#queue(trx, pool.id, POOL_JOB_KINDS.resize, { size: input.size, provision: true }, input.size);
        return { pool, job };
      })
      .catch((err) => {
        if (isUniqueViolation(err)) throw new AppError('NAME_TAKEN', `a desktop pool named "${input.name}" already exists`, { field: 'name' });
        throw err;
      });
    this.#ops.events.emit('desktop-pool.created', { poolId: pool.id, name: pool.name, size: input.size });
    // job.queued is published before anything else is awaited: the runner may claim the job (and publish
    // job.started) as soon as the transaction commits, and events go out in publishing order.
    const jobDto = this.#queued(job);
    return { pool: await this.#toDto(pool), job: jobDto };
  }

  /** PATCH: settings change at once; a new size queues a resize job. */
  async patch(id: string, input: { size?: number; force?: boolean } & PoolSettingsInput): Promise<{ pool: DesktopPoolDto; job: JobDto | null }> {
    if (input.refreshOnLogoff !== undefined || input.vm !== undefined) {
      const pool = await this.#pool(id);
      await this.#db
        .updateTable('desktop_pools')
        .set({
          refresh_on_logoff: input.refreshOnLogoff ?? pool.refresh_on_logoff,
          vm_vcpus: input.vm?.vcpus ?? pool.vm_vcpus,
          vm_memory_mib: input.vm?.memoryMiB ?? pool.vm_memory_mib,
          vm_network: input.vm?.network ?? pool.vm_network,
        })
        .where('id', '=', id)
        .execute();
      this.#ops.events.emit('desktop-pool.updated', { poolId: id, refreshOnLogoff: input.refreshOnLogoff, vm: input.vm });
    }
    if (input.size === undefined) return { pool: await this.get(id), job: null };
    return this.resize(id, { size: input.size, force: input.force });
  }

  async resize(id: string, input: { size: number; force?: boolean }): Promise<{ pool: DesktopPoolDto; job: JobDto }> {
    const job = await this.#db.transaction().execute(async (trx) => {
      const pool = await this.#ops.pools.getForUpdate(trx, id);
      if (!pool) throw new AppError('DESKTOP_POOL_NOT_FOUND', `desktop pool ${id} does not exist`);
      checkNamesFit(parseNamePattern(pool.name_pattern), input.size);
      await this.#requireSubsystemNames(trx, pool.id, pool.name, input.size);
      const desktops = await this.#ops.pools.desktops(trx, id);
      const removable = desktops.filter((d) => d.state !== 'in-use').length;
      if (!input.force && desktops.length - input.size > removable) {
        throw new AppError('DESKTOPS_IN_USE', `shrinking to ${input.size} would remove desktops in use; pass force to remove them`, {
          inUse: desktops.filter((d) => d.state === 'in-use').map((d) => d.name),
        });
      }
      const queued = await this.#queue(trx, id, POOL_JOB_KINDS.resize, { size: input.size, force: input.force === true }, Math.abs(desktops.length - input.size));
      // As for a new pool: size is what was asked for; the job writes the real count when it ends.
      await this.#ops.pools.update(trx, id, { size: input.size });
      return queued;
    });
    const jobDto = this.#queued(job); // before any await: see create()
    return { pool: await this.get(id), job: jobDto };
  }

  async refresh(id: string, input: { desktops?: string[]; force?: boolean }): Promise<{ job: JobDto }> {
    const job = await this.#db.transaction().execute(async (trx) => {
      const pool = await this.#ops.pools.getForUpdate(trx, id);
      if (!pool) throw new AppError('DESKTOP_POOL_NOT_FOUND', `desktop pool ${id} does not exist`);
      await this.#requireDesktops(trx, pool, input.desktops);
      return this.#queue(trx, id, POOL_JOB_KINDS.refresh, { desktops: input.desktops, force: input.force === true });
    });
    return { job: this.#queued(job) };
  }

  async recompose(id: string, input: { replicaId: string; desktops?: string[]; force?: boolean }): Promise<{ job: JobDto }> {
    const job = await this.#db.transaction().execute(async (trx) => {
      const pool = await this.#ops.pools.getForUpdate(trx, id);
      if (!pool) throw new AppError('DESKTOP_POOL_NOT_FOUND', `desktop pool ${id} does not exist`);
      const current = await trx.selectFrom('replicas').select(['template_id', 'version']).where('id', '=', pool.replica_id).executeTakeFirst();
      const next = await trx.selectFrom('replicas').select(['id', 'template_id', 'version', 'state']).where('id', '=', input.replicaId).executeTakeFirst();
      if (!next) throw new AppError('REPLICA_NOT_FOUND', `replica ${input.replicaId} does not exist`, { field: 'replicaId' });
      if (next.state !== 'ready') throw new AppError('REPLICA_NOT_READY', `replica ${input.replicaId} is ${next.state}`);
      if (current && (next.template_id !== current.template_id || next.version < current.version)) {
        throw new AppError('VALIDATION_FAILED', 'replicaId: must be a replica of the same template at the same or a newer version', { field: 'replicaId' });
      }
      // The pool's replica is the one every desktop has reached; a recompose that skipped in-use desktops
      // left others on a newer version. Going back below any desktop's version would downgrade it.
      const newest = await trx
        .selectFrom('desktops as d')
        .innerJoin('clones as c', 'c.id', 'd.clone_id')
        .innerJoin('replicas as r', 'r.id', 'c.replica_id')
        .select((eb) => eb.fn.max('r.version').as('version'))
        .where('d.pool_id', '=', id)
        .executeTakeFirst();
      const newestVersion = newest?.version === null || newest?.version === undefined ? undefined : Number(newest.version);
      if (newestVersion !== undefined && next.version < newestVersion) {
        throw new AppError('VALIDATION_FAILED', `replicaId: some desktops of this pool already run version ${newestVersion}; recompose to that version or a newer one`, { field: 'replicaId', newestVersion });
      }
      await this.#requireDesktops(trx, pool, input.desktops);
      return this.#queue(trx, id, POOL_JOB_KINDS.recompose, { replicaId: input.replicaId, desktops: input.desktops, force: input.force === true });
    });
    return { job: this.#queued(job) };
  }

  async delete(id: string, input: { force?: boolean } = {}): Promise<{ job: JobDto }> {
    const job = await this.#db.transaction().execute(async (trx) => {
      const pool = await this.#ops.pools.getForUpdate(trx, id);
      if (!pool) throw new AppError('DESKTOP_POOL_NOT_FOUND', `desktop pool ${id} does not exist`);
      const job = await this.#queue(trx, id, POOL_JOB_KINDS.delete, input.force ? { force: true } : {}, pool.size);
      await this.#ops.pools.update(trx, id, { state: 'deleting' });
      return job;
    });
    return { job: this.#queued(job) };
  }

  /**
   * Marks a desktop in use or available, or records what its host reports: VM power (`vm-started`,
   * `vm-stopped`) and sessions (`session-started` → in use, `session-ended` → available). With the pool's
   * refreshOnLogoff, a stopped VM or an ended session resets the clone before the desktop is available
   * again (a running VM is powered off around the reset and started again). `callerHostId`: the request
   * came with a host's token, which may only report desktops placed on that host.
   */
  async setDesktopState(id: string, name: string, input: { state?: 'in-use' | 'available'; event?: DesktopEvent }, callerHostId?: string): Promise<DesktopDto> {
    const ops = this.#ops;
    const pool = await this.#pool(id);
    const d = await ops.pools.desktopByName(this.#db, pool.id, name);
    if (!d) throw new AppError('DESKTOP_NOT_FOUND', `desktop pool ${pool.name} has no desktop "${name}"`);
    if (callerHostId !== undefined && d.host_id !== callerHostId) throw new AppError('FORBIDDEN', `desktop "${name}" is not placed on the host whose token was used`);
    if (d.state === 'refreshing' || d.state === 'provisioning') throw new AppError('CONFLICT', `desktop "${name}" is ${d.state}`);
    // A failed desktop (its attach or reset failed) is cleared only by a refresh or a re-attach, never by
    // a report: marking it available would hand out a desktop that is not there.
    if (d.state === 'failed' && input.state !== undefined) throw new AppError('CONFLICT', `desktop "${name}" is failed (${d.error ?? 'see its error'}); refresh it to bring it back`);
    const event = input.event;
    if (event === 'vm-started' || event === 'vm-stopped') {
      await this.#db.updateTable('desktops').set({ power: event === 'vm-started' ? 'running' : 'stopped' }).where('id', '=', d.id).execute();
      ops.events.emit('desktop.power', { poolId: pool.id, name, power: event === 'vm-started' ? 'running' : 'stopped', hostId: d.host_id });
    }
    if (pool.refresh_on_logoff && (event === 'vm-stopped' || event === 'session-ended')) {
      await this.#resetOnLogoff(pool, d, event === 'session-ended');
    } else {
      const next = d.state === 'failed' ? d.state : event === undefined ? input.state! : event === 'session-started' ? 'in-use' : event === 'session-ended' || (event === 'vm-stopped' && d.state === 'in-use') ? 'available' : d.state;
      if (next !== d.state) await ops.setStates(pool.id, [d], next);
    }
    // State events join the pool's 100 ms batch: a fleet of VMs reporting at once is a few messages.
    const now = (await ops.pools.desktopByName(this.#db, pool.id, name)) ?? d;
    return (await this.#desktopDtos(pool.id, [now]))[0];
  }

  async #resetOnLogoff(pool: DesktopPoolRow, seen: DesktopRow, vmMayRun: boolean): Promise<void> {
    const ops = this.#ops;
    // Taken atomically: a scheduled wave or another report claiming the same desktop at the same moment
    // gets it or leaves it, never both resetting it.
    const claimed = await sql<DesktopRow>`
      UPDATE desktops SET state = 'refreshing', updated_at = now()
      WHERE id = ${seen.id} AND state NOT IN ('refreshing', 'provisioning')
      RETURNING *`.execute(this.#db);
    const d = claimed.rows[0];
    if (!d) throw new AppError('CONFLICT', `desktop "${seen.name}" is already being reset or provisioned`);
    ops.stateEvents.push(pool.id, [{ name: d.name, cloneId: d.clone_id, state: 'refreshing' }]);
    const reset = async (list: DesktopRow[]): Promise<Map<string, string>> => new Map([...(await ops.resetClones(list.map((x) => x.clone_id)))].map(([id, e]) => [id, `reset failed: ${e}`]));
    // A stopped VM needs nothing around the reset; a VM whose session ended is powered off and on again.
    const failed = vmMayRun && ops.hooks ? await ops.hooks.aroundReset(pool, [d], reset) : await reset([d]);
    const ok = !failed.has(d.clone_id);
    await ops.setStates(pool.id, [d], ok ? 'available' : 'failed');
    ops.events.emit('desktop.refreshed-on-logoff', { poolId: pool.id, name: d.name, ok, error: failed.get(d.clone_id) });
  }

  /**
   * A pool of `size` desktops uses subsystems named <name>, <name>-2, ... (one per 1024 namespaces). Any of
   * them held by a subsystem outside this pool (another pool's extra subsystem, or one made by hand) is
   * refused now, with its name, instead of failing the job on a unique constraint.
   */
  async #requireSubsystemNames(trx: Kysely<Database>, poolId: string | undefined, name: string, size: number): Promise<void> {
    const count = Math.max(1, Math.ceil(size / MAX_NAMESPACES_PER_SUBSYSTEM));
    const names = Array.from({ length: count }, (_, i) => (i === 0 ? name : `${name}-${i + 1}`));
    const taken = await trx
      .selectFrom('subsystems as s')
      .leftJoin('desktop_pool_subsystems as dps', 'dps.subsystem_id', 's.id')
      .select(['s.name', 'dps.pool_id'])
      .where('s.name', 'in', names)
      .execute();
    const clash = taken.find((t) => poolId === undefined || t.pool_id !== poolId);
    if (clash) {
      const size1 = names.indexOf(clash.name) * MAX_NAMESPACES_PER_SUBSYSTEM;
      throw new AppError(
        'NAME_TAKEN',
        clash.name === name
          ? `a subsystem named "${name}" already exists; a desktop pool's first subsystem takes the pool's name`
          : `a pool of ${size} desktops needs subsystem "${clash.name}" (for desktops past ${size1}), but that name is taken${clash.pool_id ? ' by another desktop pool' : ''}`,
        { field: poolId === undefined ? 'name' : 'size', subsystem: clash.name },
      );
    }
  }

  /** A refresh or recompose naming desktops the pool does not have is refused before any job starts. */
  async #requireDesktops(trx: Kysely<Database>, pool: DesktopPoolRow, names: string[] | undefined): Promise<void> {
    if (!names || names.length === 0) return;
    const unique = [...new Set(names)];
    const found = new Set((await trx.selectFrom('desktops').select('name').where('pool_id', '=', pool.id).where('name', 'in', unique).execute()).map((r) => r.name));
    const missing = unique.filter((n) => !found.has(n));
    if (missing.length) {
      throw new AppError('DESKTOP_NOT_FOUND', `desktop pool ${pool.name} has no desktop ${missing.slice(0, 10).map((n) => `"${n}"`).join(', ')}${missing.length > 10 ? ` and ${missing.length - 10} more` : ''}`, { field: 'desktops', missing: missing.slice(0, 100) });
    }
  }

  /** Brings back the clone a refresh replaced, if its grace period has not ended. */
  async undoRefresh(id: string, name: string, options: { force?: boolean } = {}): Promise<DesktopDto> {
    const ops = this.#ops;
    const pool = await this.#pool(id);
    const d = await ops.pools.desktopByName(this.#db, pool.id, name);
    if (!d) throw new AppError('DESKTOP_NOT_FOUND', `desktop pool ${pool.name} has no desktop "${name}"`);
    if (!d.undo_clone_id || !d.undo_until || new Date(d.undo_until).getTime() < Date.now()) {
      throw new AppError('NOTHING_TO_UNDO', `desktop "${name}" has no refresh to undo (none, or its grace period ended)`);
    }
    // Like refresh and recompose: the disk is not swapped under a running session unless forced.
    if (d.state === 'in-use' && !options.force) throw new AppError('DESKTOPS_IN_USE', `desktop "${name}" is in use; pass {"force": true} to undo its refresh anyway`);
    const active = await this.#jobs.activeForResource(this.#db, pool.id);
    if (active.length) throw new AppError('DESKTOP_POOL_BUSY', `desktop pool ${pool.name} has a job in progress`);
    const sub = (await ops.pools.subsystems(this.#db, pool.id)).find((s) => s.subsystem_id === d.subsystem_id)!;
    const fresh = d.clone_id;
    const restored = d.undo_clone_id;
    const original = await this.#db.selectFrom('clones').select('replica_id').where('id', '=', restored).executeTakeFirst();
    await this.#db.transaction().execute(async (trx) => {
      await trx.updateTable('namespaces').set({ clone_id: restored }).where('clone_id', '=', fresh).execute();
      await trx.updateTable('desktops').set({ clone_id: restored, undo_clone_id: null, undo_until: null }).where('id', '=', d.id).execute();
      await trx.deleteFrom('clones').where('id', '=', fresh).execute();
      await ops.dataplane.call('replaceNamespace', { nqn: sub.nqn, nsid: d.nsid, cloneId: restored });
    });
    await ops.dataplane.call('deleteClone', { id: fresh });
    ops.events.emit('desktop.refresh-undone', { poolId: pool.id, name });
    return (await this.desktops(pool.id)).find((x) => x.name === name)!;
  }

  /** Deletes clones kept for undo whose grace period has ended. */
  async sweepExpiredUndo(): Promise<number> {
    const expired = await this.#db
      .selectFrom('desktops')
      .select(['id', 'undo_clone_id'])
      .where('undo_clone_id', 'is not', null)
      .where('undo_until', '<', new Date())
      .limit(1000)
      .execute();
    if (expired.length === 0) return 0;
    const ids = expired.map((e) => e.undo_clone_id!);
    await this.#db.transaction().execute(async (trx) => {
      await trx.updateTable('desktops').set({ undo_clone_id: null, undo_until: null }).where('id', 'in', expired.map((e) => e.id)).execute();
      await trx.deleteFrom('clones').where('id', 'in', ids).execute();
    });
    await this.#ops.dataplane.call('deleteClones', { ids });
    return ids.length;
  }

  /**
   * Finishes resets that a report from a host (refreshOnLogoff) started and a crash interrupted: such a
   * desktop stays `refreshing` with no job of its pool running, and nothing else would ever take it
   * again. Only desktops left so for `staleMs` are taken (a reset in progress on another process is
   * younger), one conditional update each, so two processes never both redo one. Returns how many.
   */
  async recoverInterruptedResets(staleMs = 10 * 60_000): Promise<number> {
    const ops = this.#ops;
    const stale = await this.#db
      .selectFrom('desktops')
      .selectAll()
      .where('state', '=', 'refreshing')
      .where('updated_at', '<', new Date(Date.now() - staleMs))
      .where((eb) => eb.not(eb.exists(eb.selectFrom('jobs').select('jobs.id').whereRef('jobs.resource_id', '=', 'desktops.pool_id').where('jobs.state', 'in', ['queued', 'running']))))
      .limit(100)
      .execute();
    let done = 0;
    for (const d of stale) {
      const taken = await this.#db.updateTable('desktops').set({ updated_at: new Date() }).where('id', '=', d.id).where('state', '=', 'refreshing').where('updated_at', '=', d.updated_at).executeTakeFirst();
      if (Number(taken.numUpdatedRows) !== 1) continue;
      const error = (await ops.resetClones([d.clone_id])).get(d.clone_id);
      const ok = error === undefined;
      await ops.setStates(d.pool_id, [d], ok ? 'available' : 'failed');
      ops.events.emit('desktop.refreshed-on-logoff', { poolId: d.pool_id, name: d.name, ok, recovered: true, error });
      done++;
    }
    return done;
  }
}
