// Claims queued jobs (FOR UPDATE SKIP LOCKED, so several processes can share one PostgreSQL), runs them
// through their handler, heartbeats them, and puts back the jobs of runners that died. A job that
// fails or is cancelled is rolled back by its handler before its final state is written.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Kysely } from 'kysely';
import type { Database, JobItemResult, JobRow } from '../../db/schema.ts';
import { JobRepository } from '../../db/repositories/job.repository.ts';
import { AppError, errorMessage, isAppError } from '../../errors.ts';
import type { EventBus } from '../events/event-bus.ts';
import { JobCancelledError, JobFailure, toJobDto, type JobContext, type JobDto, type JobHandler } from './job-types.ts';

export interface JobRunnerOptions {
  /** How many jobs this process runs at once. */
  concurrency?: number;
  pollIntervalMs?: number;
  heartbeatIntervalMs?: number;
  /** A running job whose heartbeat is older than this is considered orphaned and requeued. */
  staleAfterMs?: number;
  progressIntervalMs?: number;
  log?: { info(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

interface RunningJob {
  row: JobRow;
  abort: AbortController;
  cancelled: boolean;
  /** Another runner requeued and took the job (this one was thought dead): stop, touch nothing. */
  lost: boolean;
  /** In ctx.idle(): does not count against the concurrency limit. */
  idle: boolean;
}

const noopLog = { info() {}, error() {} };

export class JobRunner {
  readonly runnerId = `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  #db: Kysely<Database>;
  #events: EventBus;
  #repo = new JobRepository();
  #handlers = new Map<string, JobHandler>();
  #running = new Map<string, RunningJob>();
  #options: Required<Omit<JobRunnerOptions, 'log'>>;
  #log: NonNullable<JobRunnerOptions['log']>;
  #timers: NodeJS.Timeout[] = [];
  #stopped = true;
  #polling = false;
  #pollAgain = false;
  #idleWaiters: Array<() => void> = [];

  constructor(db: Kysely<Database>, events: EventBus, options: JobRunnerOptions = {}) {
    this.#db = db;
    this.#events = events;
    this.#options = {
      concurrency: options.concurrency ?? 2,
      pollIntervalMs: options.pollIntervalMs ?? 500,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 1000,
      staleAfterMs: options.staleAfterMs ?? 15_000,
      progressIntervalMs: options.progressIntervalMs ?? 100,
    };
    this.#log = options.log ?? noopLog;
  }

  register(handler: JobHandler): void {
    this.#handlers.set(handler.kind, handler);
  }

  /**
   * Starts polling. `requeueAllRunning` is for the embedded database, where no other process can hold a
   * running job: every job left `running` by a previous process is resumed at once.
   */
  async start(options: { requeueAllRunning: boolean }): Promise<void> {
    this.#stopped = false;
    const requeued = await this.#repo.requeueStale(this.#db, options.requeueAllRunning ? 0 : this.#options.staleAfterMs);
    for (const job of requeued) this.#log.info({ jobId: job.id, kind: job.kind }, 'job requeued after restart');
    this.#timers.push(setInterval(() => this.kick(), this.#options.pollIntervalMs));
    this.#timers.push(setInterval(() => void this.#heartbeat(), this.#options.heartbeatIntervalMs));
    this.#timers.push(setInterval(() => void this.#reapStale(), Math.max(1000, this.#options.staleAfterMs / 3)));
    this.kick();
  }

  /** Stops claiming; running jobs are aborted and left for the next start to resume. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    for (const r of this.#running.values()) r.abort.abort();
    await this.whenIdle();
  }

  whenIdle(): Promise<void> {
    if (this.#running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Looks for queued work now instead of at the next poll. */
  kick(): void {
    if (this.#stopped) return;
    if (this.#polling) {
      this.#pollAgain = true;
      return;
    }
    this.#polling = true;
    void this.#poll().finally(() => {
      this.#polling = false;
      if (this.#pollAgain) {
        this.#pollAgain = false;
        this.kick();
      }
    });
  }

  async #poll(): Promise<void> {
    while (!this.#stopped && this.#busySlots() < this.#options.concurrency) {
      let job: JobRow | undefined;
      try {
        job = await this.#repo.claimNext(this.#db, this.runnerId);
      } catch (err) {
        this.#log.error({ err }, 'claiming a job failed');
        return;
      }
      if (!job) return;
      this.#start(job);
    }
  }

  #busySlots(): number {
    let n = 0;
    for (const r of this.#running.values()) if (!r.idle) n++;
    return n;
  }

  #start(row: JobRow): void {
    const entry: RunningJob = { row, abort: new AbortController(), cancelled: row.cancel_requested, lost: false, idle: false };
    if (entry.cancelled) entry.abort.abort();
    this.#running.set(row.id, entry);
    void this.#execute(entry).finally(() => {
      this.#running.delete(row.id);
      if (this.#running.size === 0) for (const w of this.#idleWaiters.splice(0)) w();
      this.kick();
    });
  }

  async #execute(entry: RunningJob): Promise<void> {
    const { row } = entry;
    const handler = this.#handlers.get(row.kind);
    const results: JobItemResult[] = [...(row.results ?? [])];
    let lastDone = Number(row.progress_done);
    let lastTotal = Number(row.progress_total);
    let lastPhase = row.phase;
    let lastFlush = 0;
    let flushTimer: NodeJS.Timeout | undefined;
    let flushing: Promise<void> = Promise.resolve();

    const flushProgress = (): void => {
      lastFlush = Date.now();
      if (entry.lost) return;
      const done = lastDone;
      const total = lastTotal;
      const phase = lastPhase;
      flushing = flushing
        .then(async () => {
          if (entry.lost) return;
          await this.#repo.setProgress(this.#db, row.id, done, total, phase);
          this.#events.emit('job.progress', { jobId: row.id, kind: row.kind, resourceId: row.resource_id, done, total, phase });
        })
        .catch((err) => this.#log.error({ err, jobId: row.id }, 'recording job progress failed'));
    };

    const ctx: JobContext = {
      job: row,
      signal: entry.abort.signal,
      progress: (done, total, phase) => {
        // A new phase is published at once: merged into the next update it could go unseen (a pool's
        // `exports` phase lasts a moment between `clones` and `attach`).
        const newPhase = phase !== undefined && phase !== lastPhase;
        lastDone = done;
        lastTotal = total;
        if (phase !== undefined) lastPhase = phase;
        const wait = this.#options.progressIntervalMs - (Date.now() - lastFlush);
        if (wait <= 0 || newPhase) {
          if (flushTimer) clearTimeout(flushTimer);
          flushTimer = undefined;
          flushProgress();
        } else if (!flushTimer) {
          flushTimer = setTimeout(() => {
            flushTimer = undefined;
            flushProgress();
          }, wait);
        }
      },
      result: (item) => {
        results.push(item);
      },
      throwIfCancelled: () => {
        if (entry.abort.signal.aborted) throw new JobCancelledError();
      },
      idle: async (ms) => {
        if (entry.abort.signal.aborted) throw new JobCancelledError();
        entry.idle = true;
        this.kick();
        try {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, ms);
            function done() {
              clearTimeout(timer);
              entry.abort.signal.removeEventListener('abort', done);
              resolve();
            }
            entry.abort.signal.addEventListener('abort', done);
          });
        } finally {
          entry.idle = false;
        }
        if (entry.abort.signal.aborted) throw new JobCancelledError();
      },
    };

    // Progress is published at least every interval while the job runs, even when it does not move.
    const ticker: NodeJS.Timeout = setInterval(() => {
      if (!this.#running.has(row.id)) {
        clearInterval(ticker);
        return;
      }
      // Ticking at a fifth of the interval and publishing once 80 % of it has passed keeps the gaps within
      // the interval; ticking at the interval itself let timer jitter stretch a gap to nearly two.
      if (Date.now() - lastFlush >= this.#options.progressIntervalMs * 0.8 && !flushTimer) flushProgress();
    }, Math.max(10, Math.floor(this.#options.progressIntervalMs / 5)));
    this.#log.info({ jobId: row.id, kind: row.kind, attempt: row.attempts }, 'job started');
    this.#events.emit('job.started', { jobId: row.id, kind: row.kind, resourceId: row.resource_id, attempt: row.attempts });
    let outcome: { state: 'succeeded' | 'failed' | 'cancelled'; error: { code: string; message: string; details?: unknown } | null };
    try {
      if (!handler) throw new JobFailure('UNKNOWN_JOB_KIND', `no handler for job kind "${row.kind}"`);
      if (entry.abort.signal.aborted && entry.cancelled) throw new JobCancelledError();
      await handler.run(ctx);
      outcome = { state: 'succeeded', error: null };
    } catch (err) {
      if (entry.lost || !(await this.#stillOwns(row.id))) {
        clearInterval(ticker);
        await this.#letGo(entry, flushTimer, flushing);
        return;
      }
      if (this.#stopped && !entry.cancelled) {
        // Shutting down: leave the job running for the next start (or another process) to resume.
        clearInterval(ticker);
        if (flushTimer) clearTimeout(flushTimer);
        await flushing;
        this.#log.info({ jobId: row.id }, 'job interrupted by shutdown; it will resume');
        await this.#repo.release(this.#db, row.id, this.runnerId).catch(() => {});
        return;
      }
      outcome = entry.cancelled || err instanceof JobCancelledError
        ? { state: 'cancelled', error: { code: 'JOB_CANCELLED', message: 'cancelled by request' } }
        : { state: 'failed', error: describeFailure(err) };
      if (outcome.state === 'failed') this.#log.error({ jobId: row.id, kind: row.kind, err }, 'job failed');
      try {
        await handler?.rollback(row, outcome.error!);
      } catch (rollbackErr) {
        this.#log.error({ jobId: row.id, err: rollbackErr }, 'job rollback failed');
        outcome.error = { ...outcome.error!, details: { ...(outcome.error!.details as object), rollbackError: errorMessage(rollbackErr) } };
      }
    }
    clearInterval(ticker);
    if (flushTimer) clearTimeout(flushTimer);
    if (entry.lost) {
      await this.#letGo(entry, undefined, flushing);
      return;
    }
    if (outcome.state === 'succeeded' && lastTotal > 0) lastDone = lastTotal;
    flushProgress();
    await flushing;
    // Written only while this runner still holds the job, so a runner that was taken for dead cannot
    // overwrite the state of the runner that took the job over.
    const finished = await this.#db.transaction().execute(async (trx) => {
      const current = await this.#repo.getForUpdate(trx, row.id);
      if (!current || current.state !== 'running' || current.claimed_by !== this.runnerId) return null;
      return (await this.#repo.finish(trx, row.id, outcome.state, { error: outcome.error, results })) ?? null;
    });
    if (finished === null) {
      await this.#letGo(entry, undefined, Promise.resolve());
      return;
    }
    this.#log.info({ jobId: row.id, kind: row.kind, state: outcome.state }, 'job finished');
    this.#events.emit(`job.${outcome.state}`, {
      jobId: row.id,
      kind: row.kind,
      resourceId: row.resource_id,
      error: outcome.error,
      job: finished ? toJobDto(finished) : undefined,
    });
  }

  /** Whether the job row still names this runner as the one running it. */
  async #stillOwns(jobId: string): Promise<boolean> {
    try {
      const current = await this.#repo.get(this.#db, jobId);
      return !current || (current.state === 'running' && current.claimed_by === this.runnerId);
    } catch {
      // Cannot tell: carry on as the owner (the final write is conditional anyway).
      return true;
    }
  }

  /** Stops caring about a job another runner has taken over: no rollback, no final state, no events. */
  async #letGo(entry: RunningJob, flushTimer: NodeJS.Timeout | undefined, flushing: Promise<void>): Promise<void> {
    entry.lost = true;
    if (flushTimer) clearTimeout(flushTimer);
    await flushing;
    this.#log.info({ jobId: entry.row.id }, 'job was taken over by another runner; this runner stopped working on it');
  }

  async #heartbeat(): Promise<void> {
    const ids = [...this.#running.keys()];
    if (ids.length === 0) return;
    try {
      await this.#repo.heartbeat(this.#db, ids, this.runnerId);
      const rows = await this.#db.selectFrom('jobs').select(['id', 'state', 'claimed_by', 'cancel_requested']).where('id', 'in', ids).execute();
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const id of ids) {
        const entry = this.#running.get(id);
        if (!entry || entry.lost) continue;
        const current = byId.get(id);
        if (current && (current.state !== 'running' || current.claimed_by !== this.runnerId)) {
          // Requeued by another runner that thought this one dead (and maybe already claimed again).
          entry.lost = true;
          entry.abort.abort();
          continue;
        }
        if (!entry.cancelled && (current?.cancel_requested ?? true)) {
          entry.cancelled = true;
          entry.abort.abort();
        }
      }
    } catch (err) {
      this.#log.error({ err }, 'job heartbeat failed');
    }
  }

  async #reapStale(): Promise<void> {
    try {
      // This runner's own jobs are alive by definition: refresh them first so a late heartbeat timer
      // never makes the reaper requeue (and this runner claim again) a job it is still running.
      await this.#heartbeat();
      const requeued = await this.#repo.requeueStale(this.#db, this.#options.staleAfterMs);
      if (requeued.length) {
        for (const job of requeued) this.#log.info({ jobId: job.id }, 'requeued a job whose runner stopped heartbeating');
        this.kick();
      }
    } catch (err) {
      this.#log.error({ err }, 'requeueing stale jobs failed');
    }
  }

  /**
   * Cancels a queued job at once, or asks the runner holding a running job to stop it. A queued job is
   * rolled back before it is marked cancelled: a crash in between leaves it queued with the cancel request
   * recorded, and the next runner to claim it rolls it back and cancels it, so no rollback is ever lost.
   */
  async cancel(jobId: string): Promise<JobDto> {
    const requested = await this.#db.transaction().execute(async (trx) => {
      const row = await this.#repo.getForUpdate(trx, jobId);
      if (!row) throw new AppError('JOB_NOT_FOUND', `job ${jobId} does not exist`);
      if (row.state === 'succeeded' || row.state === 'failed' || row.state === 'cancelled') {
        throw new AppError('JOB_FINISHED', `job ${jobId} has already ${row.state === 'cancelled' ? 'been cancelled' : row.state}`);
      }
      await this.#repo.requestCancel(trx, jobId);
      return { ...row, cancel_requested: true };
    });
    if (requested.state !== 'queued') {
      const local = this.#running.get(jobId);
      if (local) {
        local.cancelled = true;
        local.abort.abort();
      }
      return toJobDto(requested);
    }
    const reason = { code: 'JOB_CANCELLED', message: 'cancelled before it started' };
    await this.#handlers
      .get(requested.kind)
      ?.rollback(requested, reason)
      .catch((err) => this.#log.error({ err, jobId }, 'rollback of a cancelled job failed'));
    const finished = await this.#db.transaction().execute(async (trx) => {
      const row = await this.#repo.getForUpdate(trx, jobId);
      // A runner claimed it meanwhile: it sees the cancel request, rolls back and records the cancellation.
      if (!row || row.state !== 'queued') return { row: row ?? requested, mine: false };
      return { row: (await this.#repo.finish(trx, jobId, 'cancelled', { error: reason }))!, mine: true };
    });
    if (finished.mine) {
      this.#events.emit('job.cancelled', { jobId, kind: finished.row.kind, resourceId: finished.row.resource_id, job: toJobDto(finished.row) });
    }
    return toJobDto(finished.row);
  }
}

function describeFailure(err: unknown): { code: string; message: string; details?: unknown } {
  if (err instanceof JobFailure) return { code: err.code, message: err.message, details: err.details };
  if (isAppError(err)) return { code: err.code, message: err.message, details: err.details };
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC') return { code: 'INSUFFICIENT_SPACE', message: 'the storage pool is full' };
  return { code: 'JOB_ERROR', message: errorMessage(err) };
}
