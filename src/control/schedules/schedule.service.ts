// Schedules as operators see them, and the one place a tick becomes a run: `fire` records the tick under
// its (schedule, instant) key and queues the run job in the same transaction, so however many processes
// fire the same tick, exactly one run exists for it.
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database, InUsePolicy, ScheduleAction, ScheduleRow } from '../../db/schema.ts';
import { JobRepository } from '../../db/repositories/job.repository.ts';
import { DesktopPoolRepository } from '../../db/repositories/desktop-pool.repository.ts';
import { ScheduleRepository, type ScheduleChanges, type ScheduleRunWithJob } from '../../db/repositories/schedule.repository.ts';
import { AppError } from '../../errors.ts';
import type { EventBus } from '../events/event-bus.ts';
import { nextTicks, validateCron, validateTimezone } from './cron.ts';
import { SCHEDULED_RUN_KIND, type ScheduledRunPayload } from './scheduled-run-job.ts';
import type { ScheduleRunDto, ScheduleDto } from '../../dto.ts';
export type { ScheduleRunDto, ScheduleDto } from '../../dto.ts';

export interface ScheduleInput {
  cron: string;
  timezone: string;
  action: ScheduleAction;
  waveSize: number;
  inUse: InUsePolicy;
  waitDeadlineMinutes?: number | null;
  maxFailuresPerWave?: number;
  enabled: boolean;
}



export type FireOutcome = 'queued' | 'skipped' | 'taken' | 'gone';

const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

function toRunDto(r: ScheduleRunWithJob): ScheduleRunDto {
  const counts = { succeeded: 0, failed: 0, skipped: 0 };
  for (const item of r.job_results ?? []) if (item.status in counts) counts[item.status as keyof typeof counts]++;
  return {
    scheduledFor: iso(r.scheduled_for)!,
    trigger: r.trigger,
    jobId: r.job_id,
    state: r.job_id ? (r.job_state ?? 'unknown') : 'skipped',
    skippedReason: r.skipped_reason,
    error: r.job_error ? { code: r.job_error.code, message: r.job_error.message } : null,
    desktops: counts,
    startedAt: iso(r.job_started_at),
    finishedAt: iso(r.job_finished_at),
  };
}

/** The next tick and the one after it (the end of the next tick's catch-up window), or nulls when disabled. */
function pendingTicks(row: Pick<ScheduleRow, 'cron' | 'timezone' | 'enabled'>): { pending_tick_at: Date | null; window_ends_at: Date | null } {
  if (!row.enabled) return { pending_tick_at: null, window_ends_at: null };
  const [next, after] = nextTicks(row.cron, row.timezone, 2);
  return { pending_tick_at: next ?? null, window_ends_at: after ?? null };
}

export class ScheduleService {
  #db: Kysely<Database>;
  #events: EventBus;
  #kick: () => void;
  #repo = new ScheduleRepository();
  #pools = new DesktopPoolRepository();
  #jobs = new JobRepository();
  #changed: () => void = () => {};

  constructor(db: Kysely<Database>, events: EventBus, kickJobs: () => void) {
    this.#db = db;
    this.#events = events;
    this.#kick = kickJobs;
  }

  /** Called after every change, so this process's scheduler re-arms at once (others notice on their next sync). */
  onChange(listener: () => void): void {
    this.#changed = listener;
  }

  async #toDtos(rows: ScheduleRow[]): Promise<ScheduleDto[]> {
    const last = new Map((await this.#repo.runs(this.#db, rows.map((r) => r.id), 1)).map((r) => [r.schedule_id, r]));
    return rows.map((row) => {
      const run = last.get(row.id);
      return {
        id: row.id,
        poolId: row.pool_id,
        cron: row.cron,
        timezone: row.timezone,
        action: row.action,
        waveSize: row.wave_size,
        inUse: row.in_use,
        waitDeadlineMinutes: row.wait_deadline_minutes,
        maxFailuresPerWave: row.max_failures_per_wave,
        enabled: row.enabled,
        nextRunAt: row.enabled ? iso(nextTicks(row.cron, row.timezone, 1)[0] ?? null) : null,
        lastRun: run ? toRunDto(run) : null,
        createdAt: iso(row.created_at)!,
        updatedAt: iso(row.updated_at)!,
      };
    });
  }

  async #pool(poolId: string): Promise<void> {
    if (!(await this.#pools.get(this.#db, poolId))) throw new AppError('DESKTOP_POOL_NOT_FOUND', `desktop pool ${poolId} does not exist`);
  }

  async #row(poolId: string, id: string): Promise<ScheduleRow> {
    await this.#pool(poolId);
    const row = await this.#repo.get(this.#db, id);
    if (!row || row.pool_id !== poolId) throw new AppError('SCHEDULE_NOT_FOUND', `desktop pool ${poolId} has no schedule ${id}`);
    return row;
  }

  async list(): Promise<ScheduleDto[]> {
    return this.#toDtos(await this.#repo.list(this.#db));
  }

  async listForPool(poolId: string): Promise<ScheduleDto[]> {
    await this.#pool(poolId);
    return this.#toDtos(await this.#repo.list(this.#db, { poolId }));
  }

  async get(poolId: string, id: string): Promise<ScheduleDto> {
    return (await this.#toDtos([await this.#row(poolId, id)]))[0];
  }

  /** Rows for the scheduler: every schedule, enabled or not. */
  rows(): Promise<ScheduleRow[]> {
    return this.#repo.list(this.#db);
  }

  async create(poolId: string, input: ScheduleInput): Promise<ScheduleDto> {
    await this.#pool(poolId);
    const row = checked({
      cron: input.cron,
      timezone: input.timezone,
      action: input.action,
      wave_size: input.waveSize,
      in_use: input.inUse,
      wait_deadline_minutes: input.waitDeadlineMinutes ?? null,
      max_failures_per_wave: input.maxFailuresPerWave ?? 0,
      enabled: input.enabled,
    });
    const inserted = await this.#repo.insert(this.#db, { id: randomUUID(), pool_id: poolId, ...row, ...pendingTicks(row) });
    this.#events.emit('schedule.created', { scheduleId: inserted.id, poolId, cron: inserted.cron, action: inserted.action, enabled: inserted.enabled });
    this.#changed();
    return (await this.#toDtos([inserted]))[0];
  }

  async update(poolId: string, id: string, patch: Partial<ScheduleInput>): Promise<ScheduleDto> {
    const current = await this.#row(poolId, id);
    const merged = checked({
      cron: patch.cron ?? current.cron,
      timezone: patch.timezone ?? current.timezone,
      action: patch.action ?? current.action,
      wave_size: patch.waveSize ?? current.wave_size,
      in_use: patch.inUse ?? current.in_use,
      wait_deadline_minutes: patch.waitDeadlineMinutes === undefined ? (patch.inUse && patch.inUse !== 'wait' ? null : current.wait_deadline_minutes) : patch.waitDeadlineMinutes,
      max_failures_per_wave: patch.maxFailuresPerWave ?? current.max_failures_per_wave,
      enabled: patch.enabled ?? current.enabled,
    });
    const set: ScheduleChanges = { ...merged };
    // A new expression, zone, or re-enabling starts counting ticks from now: nothing before is "missed".
    if (merged.cron !== current.cron || merged.timezone !== current.timezone || merged.enabled !== current.enabled) Object.assign(set, pendingTicks(merged));
    const row = await this.#repo.update(this.#db, id, set);
    if (!row) throw new AppError('SCHEDULE_NOT_FOUND', `desktop pool ${poolId} has no schedule ${id}`);
    this.#events.emit('schedule.updated', { scheduleId: id, poolId, enabled: row.enabled });
    this.#changed();
    return (await this.#toDtos([row]))[0];
  }

  async delete(poolId: string, id: string): Promise<void> {
    await this.#row(poolId, id);
    await this.#repo.delete(this.#db, id);
    this.#events.emit('schedule.deleted', { scheduleId: id, poolId });
    this.#changed();
  }

  async runs(poolId: string, id: string, limit = 50): Promise<ScheduleRunDto[]> {
    await this.#row(poolId, id);
    return (await this.#repo.runs(this.#db, [id], limit)).map(toRunDto);
  }

  /**
   * Turns a tick into a run, once: the first process to record (schedule, slot) queues the job; a tick
   * that finds the pool busy with another job is recorded as skipped (the next tick tries again).
   */
  async fire(
    scheduleId: string,
    slot: Date,
    trigger: 'tick' | 'catch-up',
    armedWith: Pick<ScheduleRow, 'cron' | 'timezone'>,
  ): Promise<{ outcome: FireOutcome; jobId?: string }> {
    const result = await this.#db.transaction().execute(async (trx): Promise<{ outcome: FireOutcome; jobId?: string; schedule?: ScheduleRow; reason?: string }> => {
      const schedule = await this.#repo.get(trx, scheduleId);
      // A tick of an expression changed meanwhile (this process has not re-armed yet) is not a tick.
      if (!schedule || !schedule.enabled || schedule.cron !== armedWith.cron || schedule.timezone !== armedWith.timezone) return { outcome: 'gone' };
      // Serialises with the pool's own operations (refresh, resize, delete lock the pool row too).
      const pool = await this.#pools.getForUpdate(trx, schedule.pool_id);
      if (!pool) return { outcome: 'gone' };
      if (!(await this.#repo.claimTick(trx, { schedule_id: scheduleId, scheduled_for: slot, trigger }))) return { outcome: 'taken' };
      const active = await this.#jobs.activeForResource(trx, pool.id);
      const reason = pool.state !== 'ready' ? `the pool is ${pool.state}` : active.length ? `the pool has a ${active[0].kind} job in progress (${active[0].id})` : undefined;
      if (reason) {
        await this.#repo.setRunOutcome(trx, scheduleId, slot, { skipped_reason: reason });
        return { outcome: 'skipped', schedule, reason };
      }
      const payload: ScheduledRunPayload = {
        poolId: pool.id,
        scheduleId,
        scheduledFor: slot.toISOString(),
        trigger,
        action: schedule.action,
        waveSize: schedule.wave_size,
        inUse: schedule.in_use,
        // From the tick, or for a missed run made up later from now: counted from the missed tick, the
        // deadline of a run made up hours late would have passed before it starts.
        waitDeadlineAt: schedule.in_use === 'wait' && schedule.wait_deadline_minutes ? new Date((trigger === 'catch-up' ? Math.max(Date.now(), slot.getTime()) : slot.getTime()) + schedule.wait_deadline_minutes * 60_000).toISOString() : null,
        maxFailuresPerWave: schedule.max_failures_per_wave,
      };
      const job = await this.#jobs.insert(trx, { id: randomUUID(), kind: SCHEDULED_RUN_KIND, resource_id: pool.id, payload: payload as unknown as Record<string, unknown> });
      await this.#repo.setRunOutcome(trx, scheduleId, slot, { job_id: job.id });
      return { outcome: 'queued', jobId: job.id, schedule };
    });
    if (result.outcome === 'queued') {
      this.#events.emit('schedule.run-queued', { scheduleId, poolId: result.schedule!.pool_id, scheduledFor: slot.toISOString(), trigger, jobId: result.jobId });
      this.#events.emit('job.queued', { jobId: result.jobId, kind: SCHEDULED_RUN_KIND, resourceId: result.schedule!.pool_id });
      this.#kick();
    } else if (result.outcome === 'skipped') {
      this.#events.emit('schedule.run-skipped', { scheduleId, poolId: result.schedule!.pool_id, scheduledFor: slot.toISOString(), trigger, reason: result.reason });
    }
    return { outcome: result.outcome, jobId: result.jobId };
  }

  /** Records that the ticks up to now were handled: the pending tick moves to the next one. */
  async advance(row: Pick<ScheduleRow, 'id' | 'cron' | 'timezone' | 'enabled'>): Promise<void> {
    const next = pendingTicks(row);
    if (next.pending_tick_at) await this.#repo.advancePendingTick(this.#db, row.id, next.pending_tick_at, next.window_ends_at);
  }
}

type CheckedFields = Pick<ScheduleRow, 'cron' | 'timezone' | 'action' | 'wave_size' | 'in_use' | 'wait_deadline_minutes' | 'max_failures_per_wave' | 'enabled'>;

/** Rules across fields, and the cron expression and zone as node-cron understands them. */
function checked(row: CheckedFields): CheckedFields {
  validateCron(row.cron);
  validateTimezone(row.timezone);
  if (row.in_use === 'wait' && !row.wait_deadline_minutes) {
    throw new AppError('VALIDATION_FAILED', 'waitDeadlineMinutes: is required when inUse is "wait"', { field: 'waitDeadlineMinutes' });
  }
  if (row.in_use !== 'wait' && row.wait_deadline_minutes) {
    throw new AppError('VALIDATION_FAILED', 'waitDeadlineMinutes: applies only when inUse is "wait"', { field: 'waitDeadlineMinutes' });
  }
  if (row.max_failures_per_wave >= row.wave_size && row.max_failures_per_wave > 0) {
    throw new AppError('VALIDATION_FAILED', `maxFailuresPerWave: must be less than waveSize (${row.wave_size}), or no wave could ever stop the run`, { field: 'maxFailuresPerWave' });
  }
  return row;
}
