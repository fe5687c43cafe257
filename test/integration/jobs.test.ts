import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EventBus, type ThicketEvent } from '../../src/control/events/event-bus.ts';
import { JobRunner, type JobRunnerOptions } from '../../src/control/jobs/job-runner.ts';
import { JobFailure, type JobContext, type JobHandler } from '../../src/control/jobs/job-types.ts';
import { openDatabase, type DatabaseHandle } from '../../src/db/database.ts';
import { JobRepository } from '../../src/db/repositories/job.repository.ts';
import type { JobRow } from '../../src/db/schema.ts';
import { DATABASE_KINDS, openTestDatabase, type DatabaseKind } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const repo = new JobRepository();

/** Polls `check` until it returns a truthy value; bounded in time and iterations. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 5_000 && Date.now() < deadline; i++) {
    const v = await check();
    if (v) return v;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A handler whose behaviour each test sets; records every run and rollback. */
class TestHandler implements JobHandler {
  readonly kind: string;
  runs: Array<{ jobId: string; attempt: number; runner: string }> = [];
  rollbacks: Array<{ jobId: string; reason: { code: string; message: string } }> = [];
  started = new Set<string>();
  body: (ctx: JobContext) => Promise<void> = async () => {};
  #runner: string;

  constructor(kind: string, runnerLabel: string) {
    this.kind = kind;
    this.#runner = runnerLabel;
  }

  async run(ctx: JobContext): Promise<void> {
    this.runs.push({ jobId: ctx.job.id, attempt: ctx.job.attempts, runner: this.#runner });
    this.started.add(ctx.job.id);
    await this.body(ctx);
  }

  async rollback(job: JobRow, reason: { code: string; message: string }): Promise<void> {
    this.rollbacks.push({ jobId: job.id, reason });
  }
}

/** Waits on the abort signal (or a deadline), then throws as a cancel-aware handler does. */
async function runUntilAborted(ctx: JobContext, maxMs = 10_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  for (let i = 0; i < 2_000 && Date.now() < deadline; i++) {
    ctx.throwIfCancelled();
    await sleep(10);
  }
  throw new Error('the job was never cancelled');
}

describe.each(DATABASE_KINDS)('JobRunner (%s)', (kind: DatabaseKind) => {
  let handle: DatabaseHandle & { drop(): Promise<void> };
  let second: DatabaseHandle | undefined;
  const runners: JobRunner[] = [];
  const KIND = 'test.work';

  beforeAll(async () => {
    handle = await openTestDatabase(kind);
  });

  afterEach(async () => {
    for (const r of runners.splice(0)) await r.stop();
    await sql`DELETE FROM jobs`.execute(handle.db);
  });

  afterAll(async () => {
    await second?.close().catch(() => {});
    await handle?.drop();
  });

  /** A second connection pool on the same database: on PostgreSQL it stands in for another process. */
  async function secondHandle(): Promise<DatabaseHandle> {
    if (kind === 'pglite') return handle;
    if (!second) {
      const url = (await sql<{ db: string }>`SELECT current_database() AS db`.execute(handle.db)).rows[0].db;
      const base = new URL(process.env.THICKET_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
      base.pathname = `/${url}`;
      second = await openDatabase({ url: base.toString() });
    }
    return second;
  }

  function makeRunner(db: DatabaseHandle, label: string, options: JobRunnerOptions = {}) {
    const events = new EventBus(db.db);
    const runner = new JobRunner(db.db, events, { pollIntervalMs: 50, heartbeatIntervalMs: 50, ...options });
    const handler = new TestHandler(KIND, label);
    runner.register(handler);
    runners.push(runner);
    return { runner, events, handler };
  }

  async function enqueue(count = 1, payload: Record<string, unknown> = {}): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const row = await repo.insert(handle.db, { id: randomUUID(), kind: KIND, resource_id: null, payload: { ...payload, n: i } });
      ids.push(row.id);
    }
    return ids;
  }

  const jobRow = async (id: string) => (await repo.get(handle.db, id))!;
  const finished = (id: string, timeoutMs = 10_000) =>
    waitFor(`job ${id} to finish`, async () => {
      const row = await jobRow(id);
      return row.state !== 'queued' && row.state !== 'running' ? row : undefined;
    }, timeoutMs);

  it('two runners on one database run each of 20 jobs exactly once', async () => {
    const ids = await enqueue(20);
    const a = makeRunner(handle, 'A', { concurrency: 2 });
    const b = makeRunner(await secondHandle(), 'B', { concurrency: 2 });
    const body = async () => {
      await sleep(15 + Math.floor(Math.random() * 20));
    };
    a.handler.body = body;
    b.handler.body = body;
    await Promise.all([a.runner.start({ requeueAllRunning: false }), b.runner.start({ requeueAllRunning: false })]);
    for (const id of ids) expect((await finished(id)).state).toBe('succeeded');

    const runs = [...a.handler.runs, ...b.handler.runs];
    expect(runs.map((r) => r.jobId).sort()).toEqual([...ids].sort());
    expect(new Set(runs.map((r) => r.jobId)).size).toBe(20);
    // Both took part: claiming is shared, not serialised behind one runner.
    expect(a.handler.runs.length).toBeGreaterThan(0);
    expect(b.handler.runs.length).toBeGreaterThan(0);
    for (const id of ids) {
      const row = await jobRow(id);
      expect(row.attempts).toBe(1);
      expect(row.claimed_by).toBeNull();
      expect(row.finished_at).not.toBeNull();
    }
  });

  it('never lets two runners claim the same queued row, even when claims race', async () => {
    const ids = await enqueue(30);
    const other = await secondHandle();
    const claimed: string[] = [];
    // 60 concurrent claim attempts split over two pools for 30 jobs: each job is claimed once, the rest get nothing.
    const attempts = Array.from({ length: 60 }, (_, i) => repo.claimNext(i % 2 ? other.db : handle.db, `racer-${i % 2}`));
    for (const row of await Promise.all(attempts)) if (row) claimed.push(row.id);
    expect(claimed.sort()).toEqual([...ids].sort());
  });

  it('persists progress and publishes job.progress at most about every 100 ms, and once more at the end', async () => {
    const [id] = await enqueue(1);
    const { runner, events, handler } = makeRunner(handle, 'A');
    const steps = 60;
    let midRunProgress: number | undefined;
    handler.body = async (ctx) => {
      for (let i = 1; i < steps; i++) {
        ctx.progress(i, steps, 'working');
        await sleep(10);
        if (i === 45) midRunProgress = Number((await jobRow(ctx.job.id)).progress_done);
      }
    };
    const seen: Array<{ event: ThicketEvent; receivedAt: number }> = [];
    events.subscribe((event) => {
      if (event.jobId === id) seen.push({ event, receivedAt: Date.now() });
    });
    const startedAt = Date.now();
    await runner.start({ requeueAllRunning: false });
    const row = await finished(id);
    await events.settled();
    const duration = Date.now() - startedAt;

    expect(row.state).toBe('succeeded');
    // Persisted while running, not only at the end.
    expect(midRunProgress).toBeGreaterThan(0);
    expect(midRunProgress).toBeLessThan(steps);
    // Persisted at the end: a succeeded job is complete.
    expect(Number(row.progress_done)).toBe(steps);
    expect(Number(row.progress_total)).toBe(steps);
    expect(row.phase).toBe('working');

    const progress = seen.filter((s) => s.event.type === 'job.progress');
    // ~60 progress calls over ~600+ ms must collapse to a handful of events.
    expect(progress.length).toBeGreaterThanOrEqual(4);
    expect(progress.length).toBeLessThanOrEqual(Math.ceil(duration / 100) + 2);
    // Throttled: apart from the final flush, events are on average at least ~100 ms apart (individual gaps
    // jitter with database latency, so the average is what is checked).
    const throttled = progress.slice(0, -1);
    const averageGap = (throttled.at(-1)!.receivedAt - throttled[0].receivedAt) / (throttled.length - 1);
    expect(averageGap).toBeGreaterThanOrEqual(85);
    const dones = progress.map((p) => p.event.done as number);
    expect([...dones].sort((x, y) => x - y)).toEqual(dones);
    expect(progress.at(-1)!.event).toMatchObject({ jobId: id, kind: KIND, done: steps, total: steps, phase: 'working' });
    for (const p of progress) expect(p.event).toMatchObject({ seq: expect.any(Number), type: 'job.progress', at: expect.any(String) });
    // The end: the final progress comes before job.succeeded.
    const types = seen.map((s) => s.event.type);
    expect(types[0]).toBe('job.started');
    expect(types.at(-1)).toBe('job.succeeded');
    expect(types.lastIndexOf('job.progress')).toBe(types.length - 2);
  });

  it('marks a job failed with {code, message} and calls rollback when its handler throws', async () => {
    const [coded, plain] = await enqueue(2);
    const { runner, events, handler } = makeRunner(handle, 'A', { concurrency: 1 });
    handler.body = async (ctx) => {
      ctx.progress(10, 100);
      if (ctx.job.id === coded) throw new JobFailure('DISK_ON_FIRE', 'the disk caught fire', { disk: 'sda' });
      throw new Error('plain failure');
    };
    const failedEvents: ThicketEvent[] = [];
    events.subscribe((e) => e.type === 'job.failed' && failedEvents.push(e));
    await runner.start({ requeueAllRunning: false });

    const a = await finished(coded);
    expect(a.state).toBe('failed');
    expect(a.error).toEqual({ code: 'DISK_ON_FIRE', message: 'the disk caught fire', details: { disk: 'sda' } });
    const b = await finished(plain);
    expect(b.state).toBe('failed');
    expect(b.error).toMatchObject({ code: 'JOB_ERROR', message: 'plain failure' });

    expect(handler.rollbacks).toEqual([
      { jobId: coded, reason: { code: 'DISK_ON_FIRE', message: 'the disk caught fire', details: { disk: 'sda' } } },
      { jobId: plain, reason: { code: 'JOB_ERROR', message: 'plain failure' } },
    ]);
    await events.settled();
    expect(failedEvents.map((e) => e.jobId).sort()).toEqual([coded, plain].sort());
    expect(failedEvents.find((e) => e.jobId === coded)).toMatchObject({ error: { code: 'DISK_ON_FIRE' }, job: { state: 'failed' } });
  });

  it('records a failing rollback on the job instead of losing the original error', async () => {
    const [id] = await enqueue(1);
    const { runner, handler } = makeRunner(handle, 'A');
    handler.body = async () => {
      throw new JobFailure('FIRST', 'first problem');
    };
    handler.rollback = async () => {
      throw new Error('rollback exploded');
    };
    await runner.start({ requeueAllRunning: false });
    const row = await finished(id);
    expect(row.state).toBe('failed');
    expect(row.error).toMatchObject({ code: 'FIRST', message: 'first problem', details: { rollbackError: 'rollback exploded' } });
  });

  it('fails a job of a kind no handler knows, without hanging', async () => {
    const row = await repo.insert(handle.db, { id: randomUUID(), kind: 'test.nobody', resource_id: null, payload: {} });
    const { runner } = makeRunner(handle, 'A');
    await runner.start({ requeueAllRunning: false });
    const done = await finished(row.id);
    expect(done.state).toBe('failed');
    expect(done.error).toMatchObject({ code: 'UNKNOWN_JOB_KIND' });
  });

  it('cancels a queued job at once and rolls it back', async () => {
    const [id] = await enqueue(1);
    // Not started: the job stays queued.
    const { runner, events, handler } = makeRunner(handle, 'A');
    const cancelled: ThicketEvent[] = [];
    events.subscribe((e) => e.type === 'job.cancelled' && cancelled.push(e));
    const dto = await runner.cancel(id);
    expect(dto).toMatchObject({ id, state: 'cancelled', cancelRequested: true, error: { code: 'JOB_CANCELLED' } });
    expect(dto.finishedAt).not.toBeNull();
    const row = await jobRow(id);
    expect(row.state).toBe('cancelled');
    expect(handler.rollbacks).toEqual([{ jobId: id, reason: { code: 'JOB_CANCELLED', message: expect.any(String) } }]);
    await events.settled();
    expect(cancelled.map((e) => e.jobId)).toEqual([id]);

    // It never runs afterwards.
    await runner.start({ requeueAllRunning: false });
    await sleep(200);
    expect(handler.runs).toEqual([]);
    expect((await jobRow(id)).state).toBe('cancelled');
  });

  it('rolls back and cancels, without running it, a queued job whose cancel was recorded by a process that then died', async () => {
    const [id] = await enqueue(1);
    // What a crash right after the cancel request was committed leaves behind.
    await repo.requestCancel(handle.db, id);
    const { runner, handler } = makeRunner(handle, 'next');
    await runner.start({ requeueAllRunning: false });
    const row = await finished(id);
    expect(row.state).toBe('cancelled');
    expect(handler.rollbacks.map((r) => r.jobId)).toEqual([id]);
    expect(handler.runs).toEqual([]);
  });

  it('cancels a running job on the runner that holds it and rolls it back', async () => {
    const [id] = await enqueue(1);
    const { runner, events, handler } = makeRunner(handle, 'A');
    handler.body = (ctx) => runUntilAborted(ctx);
    await runner.start({ requeueAllRunning: false });
    await waitFor('the job to start', () => handler.started.has(id));

    const dto = await runner.cancel(id);
    expect(dto).toMatchObject({ id, state: 'running', cancelRequested: true });
    const row = await finished(id);
    expect(row.state).toBe('cancelled');
    expect(row.error).toMatchObject({ code: 'JOB_CANCELLED' });
    expect(handler.rollbacks.map((r) => r.jobId)).toEqual([id]);
    await events.settled();
  });

  it('cancels a running job through another runner: the holder notices at its next heartbeat', async () => {
    const [id] = await enqueue(1);
    const holder = makeRunner(handle, 'holder');
    holder.handler.body = (ctx) => runUntilAborted(ctx);
    // The other runner (think: the API of another process) has the handler too but runs nothing.
    const other = makeRunner(await secondHandle(), 'other');
    await holder.runner.start({ requeueAllRunning: false });
    await waitFor('the job to start', () => holder.handler.started.has(id));

    const dto = await other.runner.cancel(id);
    expect(dto.state).toBe('running');
    const row = await finished(id, 5_000);
    expect(row.state).toBe('cancelled');
    expect(holder.handler.rollbacks.map((r) => r.jobId)).toEqual([id]);
    expect(other.handler.runs).toEqual([]);
  });

  it('refuses to cancel a finished job with JOB_FINISHED and an unknown one with JOB_NOT_FOUND', async () => {
    const [id] = await enqueue(1);
    const { runner } = makeRunner(handle, 'A');
    await runner.start({ requeueAllRunning: false });
    expect((await finished(id)).state).toBe('succeeded');
    await expect(runner.cancel(id)).rejects.toMatchObject({ code: 'JOB_FINISHED' });
    await expect(runner.cancel(randomUUID())).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' });
    expect((await jobRow(id)).state).toBe('succeeded');
  });

  it('requeues and runs a job whose runner stopped heartbeating (a dead process)', async () => {
    const [id] = await enqueue(1);
    // A "process" claims the job and dies: its heartbeat is fresh now and never moves again.
    const dead = await repo.claimNext(handle.db, 'deadhost:4242:deadbeef');
    expect(dead?.id).toBe(id);
    expect(dead!.attempts).toBe(1);
    const { runner, events, handler } = makeRunner(handle, 'survivor', { staleAfterMs: 300 });
    await runner.start({ requeueAllRunning: false });
    // Not stale yet when the survivor starts: it must leave the job alone at first.
    expect((await jobRow(id)).claimed_by).toBe('deadhost:4242:deadbeef');

    const started: ThicketEvent[] = [];
    events.subscribe((e) => e.type === 'job.started' && started.push(e));
    const row = await finished(id, 10_000);
    expect(row.state).toBe('succeeded');
    expect(row.attempts).toBe(2);
    expect(handler.runs).toEqual([{ jobId: id, attempt: 2, runner: 'survivor' }]);
    await events.settled();
    expect(started).toMatchObject([{ jobId: id, attempt: 2 }]);
  });

  it('rolls back instead of running a job that was cancelled while its dead runner held it', async () => {
    const [id] = await enqueue(1);
    const dead = await repo.claimNext(handle.db, 'deadhost:4243:cafebabe');
    expect(dead?.id).toBe(id);
    const { runner, handler } = makeRunner(handle, 'survivor', { staleAfterMs: 300 });
    // Accepted while the job is (apparently) running; nobody is there to act on it yet.
    expect((await runner.cancel(id)).state).toBe('running');
    await runner.start({ requeueAllRunning: false });
    const row = await finished(id, 10_000);
    expect(row.state).toBe('cancelled');
    expect(row.error).toMatchObject({ code: 'JOB_CANCELLED' });
    expect(handler.rollbacks.map((r) => r.jobId)).toEqual([id]);
    // The handler never got to do any work.
    expect(handler.runs).toEqual([]);
  });

  it('does not requeue a long job whose runner keeps heartbeating', async () => {
    const [id] = await enqueue(1);
    const holder = makeRunner(handle, 'holder', { heartbeatIntervalMs: 50, staleAfterMs: 300 });
    holder.handler.body = () => sleep(1_600); // longer than staleAfterMs and one reaper period (1 s)
    await holder.runner.start({ requeueAllRunning: false });
    await waitFor('the job to start', () => holder.handler.started.has(id));
    const watcher = makeRunner(await secondHandle(), 'watcher', { staleAfterMs: 300 });
    await watcher.runner.start({ requeueAllRunning: false });

    const row = await finished(id, 10_000);
    expect(row.state).toBe('succeeded');
    expect(row.attempts).toBe(1);
    expect(watcher.handler.runs).toEqual([]);
    expect(holder.handler.runs).toHaveLength(1);
  });

  it('never requeues a job that its own runner is still running, even when its heartbeats lag', async () => {
    const [id] = await enqueue(1);
    // Heartbeats far apart, staleness short: only the runner's own reaper could take the job away.
    const { runner, handler } = makeRunner(handle, 'solo', { heartbeatIntervalMs: 60_000, staleAfterMs: 300, concurrency: 2 });
    handler.body = () => sleep(2_500); // spans two reaper periods
    await runner.start({ requeueAllRunning: false });
    const row = await finished(id, 15_000);
    expect(row.state).toBe('succeeded');
    expect(handler.runs).toHaveLength(1);
    expect(row.attempts).toBe(1);
  });

  it('stops a job it lost to another runner without rolling it back or overwriting the new owner\'s result', async () => {
    const [id] = await enqueue(1);
    // Concurrency 1: while the first runner is busy with the job it cannot claim it back itself.
    const first = makeRunner(handle, 'first', { concurrency: 1 });
    let firstSawAbort = false;
    // Until the second runner has the job, the first stays busy after its abort: otherwise, once idle, it
    // could claim the requeued job again itself before the second runner (slower to start on a loaded
    // machine: it opens its own connection) polls.
    let secondHasIt = (): boolean => false;
    first.handler.body = async (ctx) => {
      try {
        await runUntilAborted(ctx, 3_000);
      } catch (err) {
        firstSawAbort = ctx.signal.aborted;
        for (let i = 0; i < 1_000 && firstSawAbort && !secondHasIt(); i++) await sleep(10);
        throw err;
      }
    };
    await first.runner.start({ requeueAllRunning: false });
    await waitFor('the job to start', () => first.handler.started.has(id));

    // Another process decided the first runner was dead and requeued the job (a network partition, say).
    await sql`UPDATE jobs SET state = 'queued', claimed_by = NULL WHERE id = ${id}`.execute(handle.db);
    const second = makeRunner(await secondHandle(), 'second');
    let release!: () => void;
    const secondMayFinish = new Promise<void>((r) => (release = r));
    second.handler.body = (ctx) =>
      Promise.race([secondMayFinish, sleep(10_000), new Promise<void>((r) => ctx.signal.addEventListener('abort', () => r()))]);
    secondHasIt = () => second.handler.started.has(id);
    await second.runner.start({ requeueAllRunning: false });
    await waitFor('the second runner to take the job', () => second.handler.started.has(id));

    // The first runner notices at its next heartbeat and stops, leaving the job to the second.
    const idle = await Promise.race([first.runner.whenIdle().then(() => true), sleep(5_000).then(() => false)]);
    expect(idle, 'the first runner kept running a job it no longer owns').toBe(true);
    expect(firstSawAbort).toBe(true);
    expect(first.handler.rollbacks).toEqual([]);
    const during = await jobRow(id);
    expect(during.state).toBe('running');
    expect(during.claimed_by).toBe(second.runner.runnerId);

    release();
    const row = await finished(id);
    expect(row.state).toBe('succeeded');
    expect(row.attempts).toBe(2);
    expect(second.handler.rollbacks).toEqual([]);
  });

  it('on start with requeueAllRunning resumes every job left running by the previous process', async () => {
    const [id] = await enqueue(1);
    const dead = await repo.claimNext(handle.db, 'previous-process');
    expect(dead?.id).toBe(id);
    const { runner, handler } = makeRunner(handle, 'next', { staleAfterMs: 60_000 });
    await runner.start({ requeueAllRunning: true });
    const row = await finished(id);
    expect(row.state).toBe('succeeded');
    expect(handler.runs).toEqual([{ jobId: id, attempt: 2, runner: 'next' }]);
  });

  it('leaves a running job for the next start when the runner stops, without rolling it back', async () => {
    const [id] = await enqueue(1);
    const first = makeRunner(handle, 'first');
    first.handler.body = (ctx) => runUntilAborted(ctx);
    await first.runner.start({ requeueAllRunning: false });
    await waitFor('the job to start', () => first.handler.started.has(id));
    await first.runner.stop();
    const row = await jobRow(id);
    expect(row.state).toBe('queued');
    expect(row.claimed_by).toBeNull();
    expect(first.handler.rollbacks).toEqual([]);

    const next = makeRunner(handle, 'next');
    await next.runner.start({ requeueAllRunning: false });
    expect((await finished(id)).state).toBe('succeeded');
    expect(next.handler.runs).toEqual([{ jobId: id, attempt: 2, runner: 'next' }]);
  });
});

describe.each(DATABASE_KINDS)('jobs API (%s)', (kind) => {
  let t: TestThicket;
  let sourceDir: string;
  let succeededJobId: string;

  beforeAll(async () => {
    t = await startTestThicket(kind);
    sourceDir = await mkdtemp(path.join(os.tmpdir(), 'thicket-jobs-api-'));
    const image = path.join(sourceDir, 'tiny.img');
    await writeFile(image, Buffer.alloc(64 * 1024, 7));
    const template = await t.json('POST', '/api/v1/templates', { name: 'jobs-api' });
    expect(template.status).toBe(201);
    const version = await t.json('POST', `/api/v1/templates/${template.body.id}/versions`, { sourcePath: image, format: 'raw' });
    expect(version.status).toBe(201);
    const pools = await t.json('GET', '/api/v1/storage-pools');
    const promoted = await t.json('POST', '/api/v1/replicas', { templateVersionId: version.body.id, storagePoolId: pools.body[0].id });
    expect(promoted.status).toBe(202);
    succeededJobId = promoted.body.job.id;
    expect((await t.waitForJob(succeededJobId)).state).toBe('succeeded');
  });

  afterAll(async () => {
    await t?.destroy();
    if (sourceDir) await rm(sourceDir, { recursive: true, force: true });
  });

  it('GET /api/v1/jobs/:id returns the job with its progress', async () => {
    const { status, body } = await t.json('GET', `/api/v1/jobs/${succeededJobId}`);
    expect(status).toBe(200);
    expect(body).toMatchObject({ id: succeededJobId, kind: 'replica.promote', state: 'succeeded', progress: { done: 65536, total: 65536 }, error: null });
  });

  it('GET /api/v1/jobs?state= returns only jobs in the listed states', async () => {
    const succeeded = await t.json('GET', '/api/v1/jobs?state=succeeded');
    expect(succeeded.status).toBe(200);
    expect(succeeded.body.map((j: any) => j.id)).toContain(succeededJobId);
    expect(succeeded.body.every((j: any) => j.state === 'succeeded')).toBe(true);

    const active = await t.json('GET', '/api/v1/jobs?state=queued,running');
    expect(active.status).toBe(200);
    expect(active.body.map((j: any) => j.id)).not.toContain(succeededJobId);

    const several = await t.json('GET', '/api/v1/jobs?state=failed,succeeded');
    expect(several.body.map((j: any) => j.id)).toContain(succeededJobId);

    const all = await t.json('GET', '/api/v1/jobs');
    expect(all.body.map((j: any) => j.id)).toContain(succeededJobId);
  });

  it('GET /api/v1/jobs?state=<unknown> is a 400 naming the state field', async () => {
    for (const q of ['state=bogus', 'state=succeeded,bogus', 'state=SUCCEEDED']) {
      const { status, body } = await t.json('GET', `/api/v1/jobs?${q}`);
      expect(status, q).toBe(400);
      expect(body.error.code).toBe('VALIDATION_FAILED');
      expect(body.error.message).toMatch(/^state/);
    }
  });

  it('GET /api/v1/jobs with an unknown query parameter or bad limit is a 400', async () => {
    expect((await t.json('GET', '/api/v1/jobs?color=red')).status).toBe(400);
    expect((await t.json('GET', '/api/v1/jobs?limit=0')).status).toBe(400);
    expect((await t.json('GET', '/api/v1/jobs?limit=abc')).status).toBe(400);
  });

  it('POST /api/v1/jobs/:id/cancel of a finished job is a 409 JOB_FINISHED', async () => {
    const { status, body } = await t.json('POST', `/api/v1/jobs/${succeededJobId}/cancel`);
    expect(status).toBe(409);
    expect(body.error.code).toBe('JOB_FINISHED');
    expect((await t.json('GET', `/api/v1/jobs/${succeededJobId}`)).body.state).toBe('succeeded');
  });

  it('GET and cancel of an unknown or malformed job id are 404 JOB_NOT_FOUND', async () => {
    for (const [method, p] of [
      ['GET', `/api/v1/jobs/${randomUUID()}`],
      ['GET', '/api/v1/jobs/not-a-uuid'],
      ['POST', `/api/v1/jobs/${randomUUID()}/cancel`],
      ['POST', '/api/v1/jobs/not-a-uuid/cancel'],
    ] as const) {
      const { status, body } = await t.json(method, p);
      expect(status, `${method} ${p}`).toBe(404);
      expect(body.error.code).toBe('JOB_NOT_FOUND');
    }
  });
});
