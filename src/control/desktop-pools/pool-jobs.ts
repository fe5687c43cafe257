// Jobs on desktop pools: resize (provision and grow/shrink), refresh, recompose and delete. Each run can
// be repeated from the start after a crash: it looks at what the rows say is done and does the rest.
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { DesktopPoolRow, DesktopRow, JobRow } from '../../db/schema.ts';
import { JobFailure, type JobContext, type JobHandler } from '../jobs/job-types.ts';
import { BATCH_DESKTOPS, type DesktopOps } from './desktop-ops.ts';

export const POOL_JOB_KINDS = {
  resize: 'desktop-pool.resize',
  refresh: 'desktop-pool.refresh',
  recompose: 'desktop-pool.recompose',
  delete: 'desktop-pool.delete',
} as const;

function chunks<T>(list: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

async function loadPool(ops: DesktopOps, job: JobRow): Promise<DesktopPoolRow> {
  const pool = await ops.pools.get(ops.db, job.resource_id!);
  if (!pool) throw new JobFailure('DESKTOP_POOL_NOT_FOUND', 'the desktop pool no longer exists');
  return pool;
}

/** Grows or shrinks a pool to payload.size; the first run of a new pool provisions it. */
export class ResizePoolJob implements JobHandler {
  readonly kind = POOL_JOB_KINDS.resize;
  #ops: DesktopOps;
  constructor(ops: DesktopOps) {
    this.#ops = ops;
  }

  async run(ctx: JobContext): Promise<void> {
    const ops = this.#ops;
    const pool = await loadPool(ops, ctx.job);
    const target = Number(ctx.job.payload.size);
    const force = ctx.job.payload.force === true;
    let desktops = await ops.pools.desktops(ops.db, pool.id);
    if (desktops.length < target) {
      const have = new Set(desktops.map((d) => d.idx));
      const idxs: number[] = [];
      for (let i = 1; idxs.length < target - desktops.length && i < 10_000_000; i++) if (!have.has(i)) idxs.push(i);
      const total = idxs.length;
      let done = 0;
      ctx.progress(0, total, 'creating');
      for (const batch of chunks(idxs, BATCH_DESKTOPS)) {
        ctx.throwIfCancelled();
        await ops.createDesktops(pool, batch, ctx.job.id);
        done += batch.length;
        ctx.progress(done, total, 'creating');
      }
    } else if (desktops.length > target) {
      // Available desktops go first (newest first), then the others; in-use ones only when forced.
      const rank = (d: DesktopRow) => (d.state === 'available' ? 0 : d.state === 'failed' ? 1 : d.state === 'refreshing' || d.state === 'provisioning' ? 2 : 3);
      const candidates = desktops.filter((d) => force || d.state !== 'in-use').sort((a, b) => rank(a) - rank(b) || b.idx - a.idx);
      const remove = candidates.slice(0, desktops.length - target);
      const total = remove.length;
      let done = 0;
      ctx.progress(0, total, 'removing');
      for (const batch of chunks(remove, BATCH_DESKTOPS)) {
        ctx.throwIfCancelled();
        await ops.removeDesktops(pool.id, batch);
        done += batch.length;
        ctx.progress(done, total, 'removing');
      }
      if (remove.length < desktops.length - target) {
        ctx.result({ item: pool.id, status: 'skipped', error: `${desktops.length - target - remove.length} desktop(s) in use were kept` });
      }
    }
    desktops = await ops.pools.desktops(ops.db, pool.id);
    await ops.pools.update(ops.db, pool.id, { state: 'ready', size: desktops.length, error: null });
    ops.stateEvents.flush();
    ops.events.emit('desktop-pool.ready', { poolId: pool.id, size: desktops.length });
  }

  async rollback(job: JobRow, reason: { code: string; message: string }): Promise<void> {
    const ops = this.#ops;
    const pool = await ops.pools.get(ops.db, job.resource_id!);
    if (!pool) return;
    // What this job created goes away again; what existed before stays.
    const created = (await ops.pools.desktops(ops.db, pool.id)).filter((d) => d.job_id === job.id);
    for (const batch of chunks(created, BATCH_DESKTOPS)) await ops.removeDesktops(pool.id, batch);
    const left = (await ops.pools.desktops(ops.db, pool.id)).length;
    const firstRun = pool.state === 'provisioning';
    await ops.pools.update(ops.db, pool.id, { state: firstRun ? 'failed' : 'ready', size: left, error: `${reason.code}: ${reason.message}` });
    ops.stateEvents.flush();
  }
}

function pickDesktops(all: DesktopRow[], names: string[] | undefined, force: boolean): { chosen: DesktopRow[]; skipped: DesktopRow[]; unknown: string[] } {
  const wanted = names ? new Set(names) : undefined;
  const list = wanted ? all.filter((d) => wanted.has(d.name)) : all;
  const unknown = names ? names.filter((n) => !all.some((d) => d.name === n)) : [];
  const skipped = force ? [] : list.filter((d) => d.state === 'in-use');
  const chosen = list.filter((d) => force || d.state !== 'in-use');
  return { chosen, skipped, unknown };
}

/**
 * Refresh (reset to the replica) and recompose (reset onto another replica) share one shape: with no
 * grace period each clone is reset in place (O(1)); with one, each desktop gets a fresh clone and keeps
 * the old one until the grace period ends, so the refresh can be undone.
 */
abstract class ResetPoolJob implements JobHandler {
  abstract readonly kind: string;
  protected ops: DesktopOps;
  constructor(ops: DesktopOps) {
    this.ops = ops;
  }

  protected abstract targetReplica(ctx: JobContext, pool: DesktopPoolRow): Promise<string>;

  async run(ctx: JobContext): Promise<void> {
    const ops = this.ops;
    const pool = await loadPool(ops, ctx.job);
    const replicaId = await this.targetReplica(ctx, pool);
    const replica = await ops.replicaRef(replicaId);
    const force = ctx.job.payload.force === true;
    const names = ctx.job.payload.desktops as string[] | undefined;
    const all = await ops.pools.desktops(ops.db, pool.id);
    const { chosen, skipped, unknown } = pickDesktops(all, names, force);
    for (const d of skipped) ctx.result({ item: d.name, status: 'skipped', error: 'in use' });
    for (const n of unknown) ctx.result({ item: n, status: 'failed', error: 'no such desktop' });
    // A desktop already moved to the target replica by an earlier (interrupted) run needs nothing more,
    // unless this is a refresh (same replica), which always resets.
    const cloneReplica = new Map(
      (await ops.db.selectFrom('clones').select(['id', 'replica_id']).where('id', 'in', chosen.length ? chosen.map((d) => d.clone_id) : ['00000000-0000-0000-0000-000000000000']).execute()).map((r) => [r.id, r.replica_id]),
    );
    const isRecompose = replicaId !== pool.replica_id || this.kind === POOL_JOB_KINDS.recompose;
    const todo = isRecompose ? chosen.filter((d) => cloneReplica.get(d.clone_id) !== replicaId || ctx.job.attempts <= 1) : chosen;
    const total = todo.length;
    let done = 0;
    ctx.progress(0, total, 'resetting');
    const grace = pool.refresh_grace_seconds;
    for (const batch of chunks(todo, BATCH_DESKTOPS)) {
      ctx.throwIfCancelled();
      const previous = new Map(batch.map((d) => [d.id, d.state]));
      await ops.setStates(pool.id, batch, 'refreshing');
      let failed: Set<string>;
      if (grace > 0) failed = await this.#replaceClones(pool, batch, replica, grace);
      else failed = await this.#resetInPlace(batch, replica, isRecompose);
      const ok = batch.filter((d) => !failed.has(d.clone_id));
      const bad = batch.filter((d) => failed.has(d.clone_id));
      // Forced in-use desktops stay in use (their VM is restarted by the hook); the rest become available.
      const stillInUse = ok.filter((d) => previous.get(d.id) === 'in-use');
      await ops.setStates(pool.id, ok.filter((d) => previous.get(d.id) !== 'in-use'), 'available');
      await ops.setStates(pool.id, stillInUse, 'in-use');
      await ops.setStates(pool.id, bad, 'failed');
      for (const d of ok) ctx.result({ item: d.name, status: 'succeeded' });
      for (const d of bad) ctx.result({ item: d.name, status: 'failed', error: 'reset failed' });
      done += batch.length;
      ctx.progress(done, total, 'resetting');
    }
    if (isRecompose && skipped.length === 0) await ops.pools.update(ops.db, pool.id, { replica_id: replicaId });
    ops.stateEvents.flush();
    ops.events.emit(isRecompose ? 'desktop-pool.recomposed' : 'desktop-pool.refreshed', { poolId: pool.id, desktops: done, skipped: skipped.length });
  }

  async #resetInPlace(batch: DesktopRow[], replica: { id: string; path: string; sizeBytes: number }, recompose: boolean): Promise<Set<string>> {
    const ops = this.ops;
    const ids = batch.map((d) => d.clone_id);
    const results = recompose
      ? await ops.dataplane.call('recomposeClones', { ids, replica: { id: replica.id, path: replica.path, sizeBytes: replica.sizeBytes } })
      : await ops.dataplane.call('resetClones', { ids });
    const failed = new Set(results.filter((r) => r.error).map((r) => r.id));
    const okIds = ids.filter((id) => !failed.has(id));
    if (recompose && okIds.length) {
      await ops.db
        .updateTable('clones')
        .set({ replica_id: replica.id, size_bytes: sql`greatest(size_bytes, ${replica.sizeBytes})` as never, unique_bytes: 0 })
        .where('id', 'in', okIds)
        .execute();
    } else if (okIds.length) {
      await ops.db.updateTable('clones').set({ unique_bytes: 0 }).where('id', 'in', okIds).execute();
    }
    return failed;
  }

  /** Gives each desktop a fresh clone under the same namespace and keeps the old one for `grace` seconds. */
  async #replaceClones(pool: DesktopPoolRow, batch: DesktopRow[], replica: { id: string; path: string; sizeBytes: number }, grace: number): Promise<Set<string>> {
    const ops = this.ops;
    const failed = new Set<string>();
    const subs = new Map((await ops.pools.subsystems(ops.db, pool.id)).map((s) => [s.subsystem_id, s]));
    const expired = batch.filter((d) => d.undo_clone_id).map((d) => d.undo_clone_id!);
    for (const d of batch) {
      const fresh = randomUUID();
      const old = await ops.clones.get(ops.db, d.clone_id);
      const size = Math.max(Number(old?.size_bytes ?? 0), replica.sizeBytes);
      try {
        await ops.db.transaction().execute(async (trx) => {
          await ops.clones.insertMany(trx, [
            { id: fresh, name: `${old?.name ?? d.name}~${Date.now().toString(36)}`, replica_id: replica.id, storage_pool_id: pool.storage_pool_id, size_bytes: size, state: 'ready', qos_iops: old?.qos_iops ?? null, qos_bytes_per_second: old?.qos_bytes_per_second ?? null },
          ]);
          if (d.undo_clone_id) {
            await trx.updateTable('desktops').set({ undo_clone_id: null }).where('id', '=', d.id).execute();
          }
          await trx.updateTable('namespaces').set({ clone_id: fresh }).where('clone_id', '=', d.clone_id).execute();
          await trx
            .updateTable('desktops')
            .set({ clone_id: fresh, undo_clone_id: d.clone_id, undo_until: new Date(Date.now() + grace * 1000) })
            .where('id', '=', d.id)
            .execute();
          if (d.undo_clone_id) await trx.deleteFrom('clones').where('id', '=', d.undo_clone_id).execute();
          await ops.dataplane.call('createClones', {
            clones: [{ id: fresh, poolId: pool.storage_pool_id, replica: { id: replica.id, path: replica.path, sizeBytes: replica.sizeBytes }, sizeBytes: size, qos: { iops: old?.qos_iops ?? null, bytesPerSecond: old?.qos_bytes_per_second ?? null } }],
          });
          await ops.dataplane.call('replaceNamespace', { nqn: subs.get(d.subsystem_id)!.nqn, nsid: d.nsid, cloneId: fresh });
        });
      } catch {
        failed.add(d.clone_id);
        await ops.dataplane.call('deleteClone', { id: fresh }).catch(() => {});
      }
    }
    if (expired.length) await ops.dataplane.call('deleteClones', { ids: expired }).catch(() => {});
    return failed;
  }

  /**
   * Resets one batch onto `replica` the way this job does (in place, or swapped with undo when the pool
   * has a grace period) and returns the clone ids that failed. Scheduled waves reuse it.
   */
  resetBatch(pool: DesktopPoolRow, batch: DesktopRow[], replica: { id: string; path: string; sizeBytes: number }, recompose: boolean): Promise<Set<string>> {
    const grace = pool.refresh_grace_seconds;
    return grace > 0 ? this.#replaceClones(pool, batch, replica, grace) : this.#resetInPlace(batch, replica, recompose);
  }

  async rollback(): Promise<void> {
    // Each desktop is reset or swapped atomically; those done stay done, the rest are untouched.
  }
}

export class RefreshPoolJob extends ResetPoolJob {
  readonly kind = POOL_JOB_KINDS.refresh;
  protected async targetReplica(_ctx: JobContext, pool: DesktopPoolRow): Promise<string> {
    return pool.replica_id;
  }
}

export class RecomposePoolJob extends ResetPoolJob {
  readonly kind = POOL_JOB_KINDS.recompose;
  protected async targetReplica(ctx: JobContext): Promise<string> {
    return String(ctx.job.payload.replicaId);
  }
}

/** Deletes a pool: rows first, then namespaces, subsystems and clones in the data plane. */
export class DeletePoolJob implements JobHandler {
  readonly kind = POOL_JOB_KINDS.delete;
  #ops: DesktopOps;
  constructor(ops: DesktopOps) {
    this.#ops = ops;
  }

  async run(ctx: JobContext): Promise<void> {
    const ops = this.#ops;
    const poolId = ctx.job.resource_id!;
    const pool = await ops.pools.get(ops.db, poolId);
    if (!pool) return; // finished before a crash
    const desktops = await ops.pools.desktops(ops.db, poolId);
    const subs = await ops.pools.subsystems(ops.db, poolId);
    ctx.progress(0, desktops.length, 'deleting');
    const cloneIds = desktops.flatMap((d) => (d.undo_clone_id ? [d.clone_id, d.undo_clone_id] : [d.clone_id]));
    await ops.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('namespaces').where('subsystem_id', 'in', subs.length ? subs.map((s) => s.subsystem_id) : ['00000000-0000-0000-0000-000000000000']).execute();
      await trx.deleteFrom('desktops').where('pool_id', '=', poolId).execute();
      if (cloneIds.length) {
        for (const batch of chunks(cloneIds, 10_000)) await trx.deleteFrom('clones').where('id', 'in', batch).execute();
      }
      await trx.deleteFrom('desktop_pool_subsystems').where('pool_id', '=', poolId).execute();
      if (subs.length) await trx.deleteFrom('subsystems').where('id', 'in', subs.map((s) => s.subsystem_id)).execute();
      await ops.pools.delete(trx, poolId);
    });
    // Removing a subsystem drops all its namespaces at once: one event per connected controller.
    for (const s of subs) await ops.dataplane.call('removeSubsystem', { nqn: s.nqn });
    for (const batch of chunks(cloneIds, BATCH_DESKTOPS)) await ops.dataplane.call('deleteClones', { ids: batch });
    ctx.progress(desktops.length, desktops.length, 'deleted');
    ops.events.emit('desktop-pool.deleted', { poolId });
  }

  async rollback(): Promise<void> {
    // The rows go in one transaction; after it the data-plane steps are idempotent and rerun on resume.
  }
}
