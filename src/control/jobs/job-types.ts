// What a job handler sees and returns. Handlers are policy; the runner owns claiming, heartbeats,
// progress throttling, cancellation and the final state.
import type { JobItemResult, JobRow } from '../../db/schema.ts';
import type { JobDto } from '../../dto.ts';
export type { JobDto } from '../../dto.ts';

export interface JobContext {
  readonly job: JobRow;
  readonly signal: AbortSignal;
  /** Records progress; persisted and published at most every 100 ms, and always at the end. */
  progress(done: number, total: number, phase?: string): void;
  /** Adds a per-item result to the job row. */
  result(item: JobItemResult): void;
  /** Throws JobCancelledError when a cancel was requested. */
  throwIfCancelled(): void;
  /**
   * Waits `ms` (throwing JobCancelledError if the job is cancelled or aborted meanwhile) without holding
   * one of the runner's slots, so a job that waits for something outside it never starves other jobs.
   */
  idle(ms: number): Promise<void>;
}

export interface JobHandler {
  readonly kind: string;
  /** Does the work. Must be safe to run again from the start after a crash (resume). */
  run(ctx: JobContext): Promise<void>;
  /** Undoes what a failed or cancelled run left behind. Must be idempotent. */
  rollback(job: JobRow, reason: { code: string; message: string }): Promise<void>;
}

export class JobCancelledError extends Error {
  constructor() {
    super('job cancelled');
    this.name = 'JobCancelledError';
  }
}

/** A failure with a stable code and details, recorded on the job row as is. */
export class JobFailure extends Error {
  readonly code: string;
  readonly details: unknown;
  constructor(code: string, message: string, details?: unknown) {
    super(message);
    this.name = 'JobFailure';
    this.code = code;
    this.details = details;
  }
}


const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

export function toJobDto(row: JobRow): JobDto {
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    resourceId: row.resource_id,
    payload: row.payload,
    phase: row.phase,
    progress: { done: Number(row.progress_done), total: Number(row.progress_total) },
    results: row.results ?? [],
    error: row.error ?? null,
    cancelRequested: row.cancel_requested,
    attempts: row.attempts,
    createdAt: iso(row.created_at)!,
    startedAt: iso(row.started_at),
    finishedAt: iso(row.finished_at),
  };
}
