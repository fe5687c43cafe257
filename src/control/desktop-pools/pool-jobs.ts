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

function prefixed(what: string, errors: Map<string, string>): Map<string, string> {
  return new Map([...errors].map(([id, e]) => [id, `${what}: ${e}`]));
}

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
    const hooks = ops.hooks && (await ops.hooks.hookHosts(pool.id)).length > 0 ? ops.hooks : undefined;
    let desktops = await ops.pools.desktops(ops.db, pool.id);
    if (desktops.length < target) {
      const have = new Set(desktops.map((d) => d.idx));
      const idxs: number[] = [];
      for (let i = 1; idxs.length < target - desktops.length && i < 10_000_000; i++) if (!have.has(i)) idxs.push(i);
      if (hooks) {
        const free = await hooks.freeCapacity(pool.id);
        if (free < idxs.length) throw new JobFailure('HOSTS_FULL', `the pool's hosts have room for ${free} more desktop(s), not ${idxs.length} (maxDesktops)`);
      }
      // A run resumed after a restart counts what the interrupted run created, so the total a client saw
      // at the start stays the total.
      const already = desktops.filter((d) => d.job_id === ctx.job.id).length;
      const total = idxs.length + already;
      let done = already;
      ctx.progress(done, total, 'clones');
      for (const batch of chunks(idxs, BATCH_DESKTOPS)) {
        ctx.throwIfCancelled();
        // With hook hosts a desktop is provisioning until its attach hook has run.
        await ops.createDesktops(pool, batch, ctx.job.id, hooks ? 'provisioning' : 'available');
        done += batch.length;
        ctx.progress(done, total, 'clones');
      }
      // A cancel that arrived during the last batch is honoured too: the job rolls back what it made.
      ctx.throwIfCancelled();
      const exported = await ops.db.selectFrom('desktops').innerJoin('namespaces', 'namespaces.clone_id', 'desktops.clone_id').select(sql<number>`count(*)::int4`.as('n')).where('desktops.job_id', '=', ctx.job.id).executeTakeFirst();
      ctx.progress(Number(exported?.n ?? 0), total, 'exports');
    } else if (desktops.length > target) {
      // Available desktops go first (newest first), then the others; in-use ones only when forced.
      const rank = (d: DesktopRow) => (d.state === 'available' ? 0 : d.state === 'failed' ? 1 : d.state === 'refreshing' || d.state === 'provisioning' ? 2 : 3);
      const candidates = desktops.filter((d) => force || d.state !== 'in-use').sort((a, b) => rank(a) - rank(b) || b.idx - a.idx);
      const remove = candidates.slice(0, desktops.length - target);
      const total = remove.length;
      let done = 0;
      let kept = 0;
      ctx.progress(0, total, 'removing');
      for (let batch of chunks(remove, BATCH_DESKTOPS)) {
        ctx.throwIfCancelled();
        if (hooks) {
          // Detach hooks run first; a desktop whose detach failed stays (failed) unless forced.
          const stuck = (await hooks.detach(pool, batch)).filter((r) => !r.outcome.ok);
          for (const r of stuck) ctx.result({ item: r.desktop.name, status: force ? 'skipped' : 'failed', error: `detach: ${r.outcome.ok ? '' : r.outcome.error}` });
          if (!force && stuck.length) {
            const ids = new Set(stuck.map((r) => r.desktop.id));
            await ops.setStates(pool.id, batch.filter((d) => ids.has(d.id)), 'failed');
            batch = batch.filter((d) => !ids.has(d.id));
            kept += ids.size;
          }
        }
        await ops.removeDesktops(pool.id, batch);
        done += batch.length;
        ctx.progress(done, total, 'removing');
      }
      if (kept) throw new JobFailure('DETACH_FAILED', `${kept} desktop(s) could not be detached from their hosts and were kept; see the job's results`);
      if (remove.length < desktops.length - target) {
        ctx.result({ item: pool.id, status: 'skipped', error: `${desktops.length - target - remove.length} desktop(s) in use were kept` });
      }
    }
    let attachFailures = 0;
    if (hooks) {
      // Also picks up desktops of an earlier run that crashed between creating and attaching them.
      let pending = (await ops.pools.desktops(ops.db, pool.id)).filter((d) => d.state === 'provisioning' && !d.attached);
      pending = await hooks.place(pool, pending);
      let done = 0;
      ctx.progress(0, pending.length, 'attach');
      for (const batch of chunks(pending, BATCH_DESKTOPS)) {
        ctx.throwIfCancelled();
        const results = await hooks.attach(pool, batch, () => ctx.progress(++done, pending.length, 'attach'), ctx.signal);
        for (const r of results) {
          if (r.outcome.ok) ctx.result({ item: r.desktop.name, status: 'succeeded' });
          else if (r.outcome.code === 'CANCELLED') continue;
          else {
            attachFailures++;
            ctx.result({ item: r.desktop.name, status: 'failed', error: `${r.outcome.code}: ${r.outcome.error}` });
          }
        }
      }
      // A cancel during the attach phase: hooks not yet started were skipped; the rollback detaches and
      // removes what this job made.
      ctx.throwIfCancelled();
    }
    desktops = await ops.pools.desktops(ops.db, pool.id);
    await ops.pools.update(ops.db, pool.id, { state: 'ready', size: desktops.length, error: attachFailures ? `${attachFailures} desktop(s) failed to attach; see the job's results` : null });
    ops.stateEvents.flush();
    ops.events.emit('desktop-pool.ready', { poolId: pool.id, size: desktops.length });
  }

  async rollback(job: JobRow, reason: { code: string; message: string }): Promise<void> {
    const ops = this.#ops;
    const pool = await ops.pools.get(ops.db, job.resource_id!);
    if (!pool) return;
    // What this job created goes away again; what existed before stays.
    const created = (await ops.pools.desktops(ops.db, pool.id)).filter((d) => d.job_id === job.id);
    const stuck: string[] = [];
    for (const batch of chunks(created, BATCH_DESKTOPS)) {
      if (ops.hooks) for (const r of await ops.hooks.detach(pool, batch)) if (!r.outcome.ok) stuck.push(`${r.desktop.name}: ${r.outcome.error}`);
      await ops.removeDesktops(pool.id, batch);
    }
    const left = (await ops.pools.desktops(ops.db, pool.id)).length;
    const firstRun = pool.state === 'provisioning';
    await ops.pools.update(ops.db, pool.id, { state: firstRun ? 'failed' : 'ready', size: left, error: `${reason.code}: ${reason.message}` });
    ops.stateEvents.flush();
    // The rows are gone either way; what a host still holds is reported as the rollback's error.
    if (stuck.length) throw new Error(`detach failed on hosts for ${stuck.length} desktop(s): ${stuck.slice(0, 10).join('; ')}`);
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
      const reset = (list: DesktopRow[]) => (grace > 0 ? this.#replaceClones(pool, list, replica, grace, new Date(ctx.job.created_at)) : this.#resetInPlace(list, replica, isRecompose));
      // On hook hosts the desktops' VMs are powered off around the reset (and started again if they ran).
      const why = ops.hooks ? await ops.hooks.aroundReset(pool, batch, reset) : await reset(batch);
      const failed = new Set(why.keys());
      const ok = batch.filter((d) => !failed.has(d.clone_id));
      const bad = batch.filter((d) => failed.has(d.clone_id));
      // Forced in-use desktops stay in use (their VM is restarted by the hook); the rest become available.
      const stillInUse = ok.filter((d) => previous.get(d.id) === 'in-use');
      // A desktop placed on a hook host but not attached there (its attach failed, or a delete took it
      // off) is attached now: available only if that works, never just because its clone was reset.
      const toAttach = ops.hooks ? ok.filter((d) => d.host_id && !d.attached && previous.get(d.id) !== 'in-use') : [];
      const ready = ok.filter((d) => previous.get(d.id) !== 'in-use' && !toAttach.includes(d));
      if (ready.length) await ops.db.updateTable('desktops').set({ error: null }).where('id', 'in', ready.map((d) => d.id)).where('error', 'is not', null).execute();
      await ops.setStates(pool.id, ready, 'available');
      await ops.setStates(pool.id, stillInUse, 'in-use');
      await ops.setStates(pool.id, bad, 'failed');
      const attachFailed = new Map<string, string>();
      if (toAttach.length) {
        // Rows read again: a reset with a grace period gave them new clones (and namespaces).
        const ids = new Set(toAttach.map((d) => d.id));
        const rows = (await ops.pools.desktops(ops.db, pool.id)).filter((d) => ids.has(d.id));
        for (const r of await ops.hooks!.attach(pool, rows)) if (!r.outcome.ok) attachFailed.set(r.desktop.id, `attach: ${r.outcome.code}: ${r.outcome.error}`);
      }
      for (const d of ok) {
        const e = attachFailed.get(d.id);
        ctx.result(e ? { item: d.name, status: 'failed', error: e } : { item: d.name, status: 'succeeded' });
      }
      for (const d of bad) ctx.result({ item: d.name, status: 'failed', error: why.get(d.clone_id) ?? 'reset failed' });
      done += batch.length;
      ctx.progress(done, total, 'resetting');
    }
    if (isRecompose && skipped.length === 0) await ops.pools.update(ops.db, pool.id, { replica_id: replicaId });
    ops.stateEvents.flush();
    ops.events.emit(isRecompose ? 'desktop-pool.recomposed' : 'desktop-pool.refreshed', { poolId: pool.id, desktops: done, skipped: skipped.length });
  }

  /** Resets (or recomposes) the batch's clones in place; returns the clones that failed, with why. */
  async #resetInPlace(batch: DesktopRow[], replica: { id: string; path: string; sizeBytes: number }, recompose: boolean): Promise<Map<string, string>> {
    const ops = this.ops;
    if (batch.length === 0) return new Map();
    const ids = batch.map((d) => d.clone_id);
    if (!recompose) return prefixed('reset failed', await ops.resetClones(ids));
    const results = await ops.dataplane.call('recomposeClones', { ids, replica: { id: replica.id, path: replica.path, sizeBytes: replica.sizeBytes } });
    const failed = new Map(results.filter((r) => r.error).map((r) => [r.id, `recompose failed: ${r.error}`] as [string, string]));
    const okIds = ids.filter((id) => !failed.has(id));
    if (okIds.length) {
      await ops.db
        .updateTable('clones')
        .set({ replica_id: replica.id, size_bytes: sql`greatest(size_bytes, ${replica.sizeBytes})` as never, unique_bytes: 0, state: 'ready', error: null })
        .where('id', 'in', okIds)
        .execute();
    }
    return failed;
  }

  /**
   * Gives each desktop a fresh clone under the same namespace and keeps the old one for `grace` seconds.
   * `jobStart`: when the job that asks began. A desktop whose current clone this job already swapped in
   * (a resumed run redoing its batch) is left as it is: swapping again would delete the clone its grace
   * period promised to keep and keep the blank one instead.
   */
  async #replaceClones(pool: DesktopPoolRow, batch: DesktopRow[], replica: { id: string; path: string; sizeBytes: number }, grace: number, jobStart: Date): Promise<Map<string, string>> {
    const ops = this.ops;
    const failed = new Map<string, string>();
    const subs = new Map((await ops.pools.subsystems(ops.db, pool.id)).map((s) => [s.subsystem_id, s]));
    const todo: Array<{ d: DesktopRow; old: Awaited<ReturnType<typeof ops.clones.get>> }> = [];
    for (const d of batch) {
      const old = await ops.clones.get(ops.db, d.clone_id);
      const swappedByThisJob = d.undo_clone_id !== null && old !== undefined && old.replica_id === replica.id && new Date(old.created_at).getTime() >= jobStart.getTime();
      if (!swappedByThisJob) todo.push({ d, old });
    }
    const expired = todo.filter(({ d }) => d.undo_clone_id).map(({ d }) => d.undo_clone_id!);
    for (const { d, old } of todo) {
      const fresh = randomUUID();
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
      } catch (err) {
        failed.set(d.clone_id, `reset failed: ${(err as Error).message}`);
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
  resetBatch(pool: DesktopPoolRow, batch: DesktopRow[], replica: { id: string; path: string; sizeBytes: number }, recompose: boolean, jobStart: Date): Promise<Map<string, string>> {
    const grace = pool.refresh_grace_seconds;
    return grace > 0 ? this.#replaceClones(pool, batch, replica, grace, jobStart) : this.#resetInPlace(batch, replica, recompose);
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
    if (ops.hooks && desktops.some((d) => d.host_id)) {
      // Detach hooks first: hosts let go of the namespaces (and destroy the VMs) before they vanish. Every
      // placed desktop, not only attached ones: an attach that failed half-way (or ran on after its
      // timeout) can have left a link, a domain or a connection; the detach hooks skip what is not there.
      const placed = desktops.filter((d) => d.host_id);
      let done = 0;
      ctx.progress(0, placed.length, 'detach');
      const stuck: Array<{ desktop: string; error: string }> = [];
      const detached: DesktopRow[] = [];
      for (const batch of chunks(placed, BATCH_DESKTOPS)) {
        ctx.throwIfCancelled();
        for (const r of await ops.hooks.detach(pool, batch)) {
          if (r.outcome.ok) {
            if (r.desktop.attached) detached.push(r.desktop);
          } else if (r.desktop.attached) {
            stuck.push({ desktop: r.desktop.name, error: r.outcome.error });
          } else {
            // Never attached: nothing of it is known to be on the host (its host may be why it failed).
            ctx.result({ item: r.desktop.name, status: 'skipped', error: `detach of a desktop that was never attached: ${r.outcome.error}` });
          }
          ctx.progress(++done, placed.length, 'detach');
        }
      }
      for (const s of stuck) ctx.result({ item: s.desktop, status: ctx.job.payload.force === true ? 'skipped' : 'failed', error: `detach: ${s.error}` });
      if (stuck.length && ctx.job.payload.force !== true) {
        // The pool stays, but desktops already taken off their hosts have no disk or VM there any more:
        // failed until a refresh attaches them again.
        if (detached.length) {
          await ops.db.updateTable('desktops').set({ error: 'detached from its host by a delete that did not finish; a refresh attaches it again' }).where('id', 'in', detached.map((d) => d.id)).execute();
          await ops.setStates(pool.id, detached, 'failed');
          ops.stateEvents.flush();
        }
        throw new JobFailure('DETACH_FAILED', `${stuck.length} desktop(s) could not be detached from their hosts; fix the hosts and delete again, or delete with force=true`, { desktops: stuck.slice(0, 100) });
      }
    }
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

  async rollback(job: JobRow, reason: { code: string; message: string }): Promise<void> {
    // The rows go in one transaction; after it the data-plane steps are idempotent and rerun on resume.
    // A delete stopped before it (a detach failed, or a cancel) leaves the pool usable again.
    const ops = this.#ops;
    const pool = await ops.pools.get(ops.db, job.resource_id!);
    if (pool) await ops.pools.update(ops.db, pool.id, { state: 'ready', error: `delete: ${reason.code}: ${reason.message}` });
  }
}
