import { sql } from 'kysely';
import type { JobItemResult, JobRow, JobState } from '../schema.ts';
import type { Executor } from './executor.ts';

export class JobRepository {
  insert(
    db: Executor,
    row: { id: string; kind: string; resource_id: string | null; payload: Record<string, unknown>; progress_total?: number },
  ): Promise<JobRow> {
    return db
      .insertInto('jobs')
      .values({
        id: row.id,
        kind: row.kind,
        state: 'queued',
        resource_id: row.resource_id,
        payload: JSON.stringify(row.payload),
        progress_total: row.progress_total ?? 0,
        results: '[]',
        error: undefined,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
  }

  get(db: Executor, id: string): Promise<JobRow | undefined> {
    return db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
  }

  getForUpdate(db: Executor, id: string): Promise<JobRow | undefined> {
    return db.selectFrom('jobs').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  }

  list(db: Executor, filter: { states?: JobState[]; kind?: string; resourceId?: string; limit?: number }): Promise<JobRow[]> {
    let q = db.selectFrom('jobs').selectAll();
    if (filter.states?.length) q = q.where('state', 'in', filter.states);
    if (filter.kind) q = q.where('kind', '=', filter.kind);
    if (filter.resourceId) q = q.where('resource_id', '=', filter.resourceId);
    return q.orderBy('created_at', 'desc').limit(filter.limit ?? 100).execute();
  }

  activeForResource(db: Executor, resourceId: string): Promise<JobRow[]> {
    return db.selectFrom('jobs').selectAll().where('resource_id', '=', resourceId).where('state', 'in', ['queued', 'running']).execute();
  }

  /** Claims the oldest queued job; concurrent runners skip rows another one has locked. */
  async claimNext(db: Executor, runnerId: string): Promise<JobRow | undefined> {
    const r = await sql<JobRow>`
      UPDATE jobs SET state = 'running', claimed_by = ${runnerId}, heartbeat_at = now(),
        started_at = coalesce(started_at, now()), attempts = attempts + 1
      WHERE id = (
        SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, queue_seq
        FOR UPDATE SKIP LOCKED LIMIT 1
      )
      RETURNING *`.execute(db);
    return r.rows[0];
  }

  async heartbeat(db: Executor, ids: string[], runnerId: string): Promise<void> {
    if (ids.length === 0) return;
    await db.updateTable('jobs').set({ heartbeat_at: sql`now()` as never }).where('id', 'in', ids).where('claimed_by', '=', runnerId).execute();
  }

  async setProgress(db: Executor, id: string, done: number, total: number, phase: string): Promise<void> {
    await db.updateTable('jobs').set({ progress_done: done, progress_total: total, phase }).where('id', '=', id).execute();
  }

  async setPayload(db: Executor, id: string, payload: Record<string, unknown>): Promise<void> {
    await db.updateTable('jobs').set({ payload: JSON.stringify(payload) }).where('id', '=', id).execute();
  }

  async finish(
    db: Executor,
    id: string,
    state: Extract<JobState, 'succeeded' | 'failed' | 'cancelled'>,
    outcome: { error?: { code: string; message: string; details?: unknown } | null; results?: JobItemResult[] },
  ): Promise<JobRow | undefined> {
    const set: Record<string, unknown> = { state, finished_at: sql`now()`, claimed_by: null };
    if (outcome.error !== undefined) set.error = outcome.error === null ? null : JSON.stringify(outcome.error);
    if (outcome.results !== undefined) set.results = JSON.stringify(outcome.results);
    return db.updateTable('jobs').set(set as never).where('id', '=', id).returningAll().executeTakeFirst();
  }

  /** Hands a running job back to the queue (this process is shutting down). */
  async release(db: Executor, id: string, runnerId: string): Promise<void> {
    await db.updateTable('jobs').set({ state: 'queued', claimed_by: null }).where('id', '=', id).where('state', '=', 'running').where('claimed_by', '=', runnerId).execute();
  }

  async requestCancel(db: Executor, id: string): Promise<void> {
    await db.updateTable('jobs').set({ cancel_requested: true }).where('id', '=', id).execute();
  }

  async isCancelRequested(db: Executor, id: string): Promise<boolean> {
    const r = await db.selectFrom('jobs').select('cancel_requested').where('id', '=', id).executeTakeFirst();
    return r?.cancel_requested ?? true;
  }

  /**
   * Puts running jobs back in the queue when their runner stopped heartbeating (it crashed or was
   * killed). `olderThanMs = 0` requeues every running job: used at start-up on the embedded database,
   * where no other process can be running them.
   */
  async requeueStale(db: Executor, olderThanMs: number): Promise<JobRow[]> {
    // "<=": with olderThanMs 0 (requeue everything at start-up) a heartbeat written in the same clock
    // tick as now() must count too, or that job stays running with no runner until it goes stale.
    const r = await sql<JobRow>`
      UPDATE jobs SET state = 'queued', claimed_by = NULL
      WHERE state = 'running' AND (heartbeat_at IS NULL OR heartbeat_at <= now() - make_interval(secs => ${olderThanMs / 1000}))
      RETURNING *`.execute(db);
    return r.rows;
  }
}
