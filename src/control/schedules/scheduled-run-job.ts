// One scheduled run of a desktop pool: refresh or recompose in rolling waves of at most waveSize
// desktops, with the schedule's in-use policy. Every wave is recorded (schedule_run_items) before its
// desktops are touched, so a run resumed by another process after a crash knows what is done, redoes
// what was half-way, and gives each desktop back the state it had.
import type { DesktopPoolRow, DesktopRow, DesktopState, InUsePolicy, JobRow, ScheduleAction } from '../../db/schema.ts';
import { ScheduleRepository } from '../../db/repositories/schedule.repository.ts';
import { errorMessage } from '../../errors.ts';
import { BATCH_DESKTOPS, type DesktopOps } from '../desktop-pools/desktop-ops.ts';
import { JobFailure, type JobContext, type JobHandler } from '../jobs/job-types.ts';
import type { DesktopRestarter } from './desktop-restarter.ts';

export const SCHEDULED_RUN_KIND = 'desktop-pool.scheduled-run';

export interface ScheduledRunPayload {
  poolId: string;
  scheduleId: string;
  scheduledFor: string;
  trigger: 'tick' | 'catch-up';
  action: ScheduleAction;
  waveSize: number;
  inUse: InUsePolicy;
  /** ISO instant after which desktops still in use are given up (inUse: wait). */
  waitDeadlineAt: string | null;
  maxFailuresPerWave: number;
  /** The recompose target, fixed the first time it is resolved so a resumed run keeps it. */
  replicaId?: string;
}

type ReplicaTarget = { id: string; path: string; sizeBytes: number };

/** The batch reset shared with the whole-pool refresh and recompose jobs (ResetPoolJob.resetBatch). */
export interface BatchResetter {
  /** Returns the clones that failed, with why. */
  resetBatch(pool: DesktopPoolRow, batch: DesktopRow[], replica: ReplicaTarget, recompose: boolean, jobStart: Date): Promise<Map<string, string>>;
}

export interface ScheduledRunDeps {
  ops: DesktopOps;
  resetter: BatchResetter;
  restarter: DesktopRestarter;
  /** Queues the promotion of a template version onto a storage pool; returns the new replica's id. */
  promote(templateVersionId: string, storagePoolId: string): Promise<string>;
  /** How often waiting runs look again (desktops in use, a promotion). */
  pollIntervalMs?: number;
}

const repo = new ScheduleRepository();

export class ScheduledRunJob implements JobHandler {
  readonly kind = SCHEDULED_RUN_KIND;
  #deps: ScheduledRunDeps;
  #poll: number;

  constructor(deps: ScheduledRunDeps) {
    this.#deps = deps;
    this.#poll = deps.pollIntervalMs ?? 500;
  }

  async run(ctx: JobContext): Promise<void> {
    const { ops } = this.#deps;
    const p = ctx.job.payload as unknown as ScheduledRunPayload;
    const pool = await ops.pools.get(ops.db, p.poolId);
    if (!pool) throw new JobFailure('DESKTOP_POOL_NOT_FOUND', 'the desktop pool no longer exists');
    const recompose = p.action === 'recompose-latest';
    const target = await ops.replicaRef(recompose ? await this.#recomposeTarget(ctx, pool, p) : pool.replica_id);

    // What an earlier attempt of this run finished stays finished.
    const earlier = await repo.items(ops.db, ctx.job.id);
    const done = new Set<string>();
    let wave = 0;
    for (const item of earlier) {
      wave = Math.max(wave, item.wave);
      if (item.status === 'pending') continue;
      done.add(item.desktop_id);
      ctx.result({ item: item.desktop_name, status: item.status, ...(item.error ? { error: item.error } : {}) });
    }
    const state = { wave, done, processed: done.size };
    const runWave = async (claimed: DesktopRow[]): Promise<void> => {
      try {
        await this.#wave(ctx, p, pool, target, recompose, claimed, state);
      } catch (err) {
        // A stopped run still gives every desktop a result: those it never reached are skipped.
        if (err instanceof JobFailure && err.code === 'SCHEDULE_RUN_STOPPED') {
          for (const d of await this.#todo(pool.id, target.id, recompose, done)) {
            ctx.result({ item: d.name, status: 'skipped', error: 'not reached: the run stopped after a wave with too many failures' });
          }
        }
        throw err;
      }
    };

    // A wave a crash interrupted: its desktops are still `refreshing`; redo them with their old states.
    const interrupted = earlier.filter((i) => i.status === 'pending');
    if (interrupted.length) {
      const rows = new Map((await ops.pools.desktops(ops.db, pool.id)).map((d) => [d.id, d]));
      const again = interrupted.filter((i) => rows.has(i.desktop_id)).map((i) => ({ ...rows.get(i.desktop_id)!, state: i.previous_state }));
      // Waves run one at a time, so only the last one can be pending: it is redone under its own number.
      state.wave = Math.max(...interrupted.map((i) => i.wave)) - 1;
      await runWave(again);
    }

    const deadline = p.waitDeadlineAt ? Date.parse(p.waitDeadlineAt) : 0;
    const takeable: DesktopState[] = p.inUse === 'force' ? ['available', 'failed', 'in-use'] : ['available', 'failed'];
    let left: DesktopRow[] = [];
    for (let round = 0; round < 1_000_000; round++) {
      ctx.throwIfCancelled();
      const todo = await this.#todo(pool.id, target.id, recompose, done);
      left = todo;
      const ready = todo.filter((d) => takeable.includes(d.state));
      ctx.progress(state.processed, state.processed + todo.length, ready.length ? `wave ${state.wave + 1}` : 'waiting for desktops in use');
      const total = state.processed + todo.length;
      let progressed = false;
      for (let i = 0; i < ready.length; i += p.waveSize) {
        ctx.throwIfCancelled();
        const ids = ready.slice(i, i + p.waveSize).map((d) => d.id);
        // Taken only if still in a takeable state: one a broker took meanwhile is left for later.
        const claimed = await ops.db.transaction().execute(async (trx) => {
          const rows = await repo.claimDesktops(trx, ids, takeable);
          await repo.insertItems(trx, ctx.job.id, state.wave + 1, rows);
          return rows;
        });
        if (claimed.length === 0) continue;
        await runWave(claimed);
        ctx.progress(state.processed, total, `wave ${state.wave}`);
        progressed = true;
      }
      if (progressed) continue;
      const waiting = todo.some((d) => d.state === 'in-use');
      if (p.inUse !== 'wait' || !waiting || Date.now() >= deadline) break;
      await ctx.idle(Math.min(this.#poll, Math.max(1, deadline - Date.now())));
    }
    for (const d of left) {
      const why = d.state === 'in-use' ? (p.inUse === 'wait' ? 'still in use at the wait deadline' : 'in use') : `desktop is ${d.state}`;
      ctx.result({ item: d.name, status: 'skipped', error: why });
    }
    if (recompose && (await this.#todo(pool.id, target.id, true, new Set())).length === 0) {
      await ops.pools.update(ops.db, pool.id, { replica_id: target.id });
    }
    ops.stateEvents.flush();
    ctx.progress(state.processed, state.processed, 'done');
    ops.events.emit(recompose ? 'desktop-pool.recomposed' : 'desktop-pool.refreshed', {
      poolId: pool.id,
      scheduleId: p.scheduleId,
      jobId: ctx.job.id,
      desktops: state.processed,
      skipped: left.length,
    });
  }

  /** Desktops of the pool this run still has to do (for a recompose: those not on the target yet). */
  async #todo(poolId: string, targetId: string, recompose: boolean, done: Set<string>): Promise<DesktopRow[]> {
    const { ops } = this.#deps;
    const all = (await ops.pools.desktops(ops.db, poolId)).filter((d) => !done.has(d.id));
    if (!recompose || all.length === 0) return all;
    const onTarget = new Set(
      (await ops.db.selectFrom('clones').select('id').where('replica_id', '=', targetId).where('id', 'in', all.map((d) => d.clone_id)).execute()).map((r) => r.id),
    );
    return all.filter((d) => !onTarget.has(d.clone_id));
  }

  /** Resets one wave of claimed desktops (their `state` is the state they had before the claim). */
  async #wave(
    ctx: JobContext,
    p: ScheduledRunPayload,
    pool: DesktopPoolRow,
    target: ReplicaTarget,
    recompose: boolean,
    claimed: DesktopRow[],
    state: { wave: number; done: Set<string>; processed: number },
  ): Promise<void> {
    const { ops, resetter, restarter } = this.#deps;
    state.wave++;
    const wave = state.wave;
    ops.stateEvents.push(pool.id, claimed.map((d) => ({ name: d.name, cloneId: d.clone_id, state: 'refreshing' })));
    // One data-plane call per batch of at most BATCH_DESKTOPS, however large the wave.
    const failedClones = new Map<string, string>();
    for (let i = 0; i < claimed.length; i += BATCH_DESKTOPS) {
      const batch = claimed.slice(i, i + BATCH_DESKTOPS);
      const reset = (list: DesktopRow[]) => resetter.resetBatch(pool, list, target, recompose, new Date(ctx.job.created_at));
      // On hook hosts running VMs are powered off around the reset and started again on the new disk.
      const failed = ops.hooks ? await ops.hooks.aroundReset(pool, batch, reset) : await reset(batch);
      for (const [id, why] of failed) failedClones.set(id, why);
    }
    const errors = new Map<string, string>();
    for (const d of claimed) {
      const why = failedClones.get(d.clone_id);
      if (why !== undefined) errors.set(d.id, why);
    }
    // A desktop reset under its user (force) keeps its state; the restarter tells its host (libvirt VMs
    // were already power-cycled around the reset).
    for (const d of claimed) {
      if (d.state !== 'in-use' || errors.has(d.id)) continue;
      try {
        await restarter.restart(pool.id, d.name);
      } catch (err) {
        errors.set(d.id, `reset while in use, but restarting its VM failed: ${errorMessage(err)}`);
      }
    }
    // The disk of every desktop that failed may be half-way: it becomes `failed` unless someone uses it.
    const next = (d: DesktopRow): DesktopState => (d.state === 'in-use' ? 'in-use' : errors.has(d.id) ? 'failed' : 'available');
    for (const s of ['available', 'in-use', 'failed'] as const) await ops.setStates(pool.id, claimed.filter((d) => next(d) === s), s);
    await repo.finishItems(
      ops.db,
      ctx.job.id,
      claimed.map((d) => (errors.has(d.id) ? { desktopId: d.id, status: 'failed' as const, error: errors.get(d.id) } : { desktopId: d.id, status: 'succeeded' as const })),
    );
    for (const d of claimed) {
      state.done.add(d.id);
      ctx.result(errors.has(d.id) ? { item: d.name, status: 'failed', error: errors.get(d.id) } : { item: d.name, status: 'succeeded' });
    }
    state.processed += claimed.length;
    const failed = claimed.filter((d) => errors.has(d.id)).map((d) => d.name);
    ops.events.emit('schedule.wave', {
      scheduleId: p.scheduleId,
      poolId: pool.id,
      jobId: ctx.job.id,
      wave,
      desktops: claimed.map((d) => d.name),
      succeeded: claimed.length - failed.length,
      failed: failed.length,
    });
    if (failed.length > p.maxFailuresPerWave) {
      ops.stateEvents.flush();
      throw new JobFailure(
        'SCHEDULE_RUN_STOPPED',
        `wave ${wave}: ${failed.length} of ${claimed.length} desktops failed (more than maxFailuresPerWave = ${p.maxFailuresPerWave}); the run stopped`,
        { wave, failed },
      );
    }
  }

  /**
   * The newest `ready` replica of the pool's template on the storage pool of the pool's replica. When the
   * template has a newer version than any replica there, it is promoted first and the run waits for it.
   */
  async #recomposeTarget(ctx: JobContext, pool: DesktopPoolRow, p: ScheduledRunPayload): Promise<string> {
    const { ops } = this.#deps;
    if (p.replicaId) return this.#waitReady(ctx, p.replicaId);
    const current = await ops.db.selectFrom('replicas').select(['template_id', 'storage_pool_id']).where('id', '=', pool.replica_id).executeTakeFirst();
    if (!current) throw new JobFailure('REPLICA_NOT_FOUND', "the pool's replica no longer exists");
    const newestVersion = await ops.db
      .selectFrom('template_versions')
      .select(['id', 'version'])
      .where('template_id', '=', current.template_id)
      .orderBy('version', 'desc')
      .limit(1)
      .executeTakeFirst();
    const there = await ops.db
      .selectFrom('replicas')
      .select(['id', 'version', 'state'])
      .where('template_id', '=', current.template_id)
      .where('storage_pool_id', '=', current.storage_pool_id)
      .where('state', 'in', ['ready', 'creating'])
      .orderBy('version', 'desc')
      .orderBy('state', 'desc') // 'ready' before 'creating' for the same version
      .orderBy('created_at')
      .execute();
    let replicaId: string;
    const newestThere = there.find((r) => r.state === 'ready');
    if (newestVersion && !there.some((r) => r.version >= newestVersion.version)) {
      ctx.progress(0, 0, `promoting version ${newestVersion.version}`);
      replicaId = await this.#deps.promote(newestVersion.id, current.storage_pool_id);
    } else if (newestVersion && !there.some((r) => r.version >= newestVersion.version && r.state === 'ready')) {
      // Someone is promoting the newest version there already: wait for that one.
      replicaId = there.find((r) => r.version >= newestVersion.version)!.id;
    } else if (newestThere) {
      replicaId = newestThere.id;
    } else {
      throw new JobFailure('REPLICA_NOT_FOUND', 'the template has no ready replica on the pool\'s storage pool');
    }
    const payload = { ...p, replicaId };
    await ops.db.updateTable('jobs').set({ payload: JSON.stringify(payload) }).where('id', '=', ctx.job.id).execute();
    return this.#waitReady(ctx, replicaId);
  }

  async #waitReady(ctx: JobContext, replicaId: string): Promise<string> {
    const { ops } = this.#deps;
    for (let i = 0; i < 10_000_000; i++) {
      const r = await ops.db.selectFrom('replicas').select(['state', 'version', 'error']).where('id', '=', replicaId).executeTakeFirst();
      if (!r) throw new JobFailure('REPLICA_NOT_FOUND', `replica ${replicaId} no longer exists`);
      if (r.state === 'ready') return replicaId;
      if (r.state !== 'creating') throw new JobFailure('PROMOTION_FAILED', `the replica of version ${r.version} is ${r.state}${r.error ? `: ${r.error}` : ''}`, { replicaId });
      ctx.progress(0, 0, `promoting version ${r.version}`);
      await ctx.idle(this.#poll);
    }
    throw new JobFailure('PROMOTION_FAILED', 'gave up waiting for the promotion');
  }

  /** A run that failed or was cancelled gives the desktops of its unfinished wave their states back. */
  async rollback(job: JobRow): Promise<void> {
    const { ops } = this.#deps;
    const pending = (await repo.items(ops.db, job.id)).filter((i) => i.status === 'pending');
    if (pending.length === 0) return;
    const rows = (await ops.pools.desktops(ops.db, String(job.payload.poolId))).filter((d) => d.state === 'refreshing');
    const byId = new Map(rows.map((d) => [d.id, d]));
    for (const s of ['available', 'in-use', 'failed'] as const) {
      await ops.setStates(String(job.payload.poolId), pending.filter((i) => i.previous_state === s && byId.has(i.desktop_id)).map((i) => byId.get(i.desktop_id)!), s);
    }
    await repo.finishItems(ops.db, job.id, pending.map((i) => ({ desktopId: i.desktop_id, status: 'failed' as const, error: 'the run stopped before this desktop was done' })));
    ops.stateEvents.flush();
  }
}
