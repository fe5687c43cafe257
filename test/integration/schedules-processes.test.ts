// Two Thicket processes on one PostgreSQL database with the same schedule: every tick becomes exactly
// one run, and when the process running one is killed with SIGKILL the other finishes it.
// (Both processes open the storage pools the first one created: pools are not yet node-local, so the
// test only reads what the database records and never restarts the killed process.)
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/databases.ts';
import { ThicketProcess } from '../helpers/thicket-process.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KIND = 'desktop-pool.scheduled-run';

describe('schedules across two processes on one PostgreSQL', { timeout: 240_000 }, () => {
  let db: TestDatabase;
  let sql: pg.Client;
  let a: ThicketProcess;
  let b: ThicketProcess;
  let poolId: string;
  /** The process left running after the SIGKILL test. */
  let alive: ThicketProcess;

  beforeAll(async () => {
    db = await createTestDatabase('postgres');
    a = new ThicketProcess({ DATABASE_URL: db.url });
    await a.start();
    const img = path.join(a.dataDir, 'golden.img');
    writeFileSync(img, randomBytes(1024 * 1024));
    const pools = (await a.json('GET', '/api/v1/storage-pools')).body as any[];
    const tpl = (await a.json('POST', '/api/v1/templates', { name: 'g' })).body;
    const v = (await a.json('POST', `/api/v1/templates/${tpl.id}/versions`, { sourcePath: img, format: 'raw' })).body;
    const r = (await a.json('POST', '/api/v1/replicas', { templateVersionId: v.id, storagePoolId: pools.find((p) => p.name === 'capacity').id })).body;
    expect((await a.waitForJob(r.job.id)).state).toBe('succeeded');
    const host = (await a.json('POST', '/api/v1/hosts', { name: 'h', nqn: 'nqn.2014-08.org.nvmexpress:uuid:12345678-0000-4000-8000-0000000000bb' })).body;
    const pool = (await a.json('POST', '/api/v1/desktop-pools', { name: 'p', replicaId: r.replica.id, storagePoolId: pools.find((p) => p.name === 'fast').id, size: 100, namePattern: 'd-{n:000}', hostIds: [host.id] })).body;
    expect((await a.waitForJob(pool.job.id)).state).toBe('succeeded');
    poolId = pool.pool.id;
    // Started after the desktops exist, so its data plane knows their clones too.
    b = new ThicketProcess({ DATABASE_URL: db.url });
    await b.start();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  }, 180_000);

  afterAll(async () => {
    await sql?.end().catch(() => {});
    await a?.destroy();
    await b?.destroy();
    await db?.drop();
  });

  async function runsOf(p: ThicketProcess, scheduleId: string): Promise<any[]> {
    return (await p.json('GET', `/api/v1/desktop-pools/${poolId}/schedules/${scheduleId}/runs?limit=1000`)).body;
  }

  async function waitIdle(p: ThicketProcess, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
      if ((await p.json('GET', `/api/v1/jobs?state=queued,running&resourceId=${poolId}`)).body.length === 0) return;
      await sleep(100);
    }
    throw new Error('the pool did not become idle');
  }

  it('turns every tick of an every-second schedule armed in both processes into exactly one run', async () => {
    const s = (await a.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { cron: '* * * * * *', action: 'refresh', waveSize: 10, inUse: 'skip', enabled: true })).body;
    // Both processes must have armed it: B learns of it from the database within its sync interval.
    await sleep(3_000);
    const firstCounted = Date.now();
    await sleep(5_000);
    await b.json('PATCH', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`, { enabled: false });
    await waitIdle(a);
    const runs = await runsOf(b, s.id);
    const ticks = runs.map((r) => Date.parse(r.scheduledFor)).sort((x, y) => x - y);
    // No tick lost and none doubled: consecutive seconds, each once.
    expect(new Set(ticks).size).toBe(ticks.length);
    for (let i = 1; i < ticks.length; i++) expect(ticks[i] - ticks[i - 1]).toBe(1000);
    expect(ticks.filter((t) => t >= firstCounted).length).toBeGreaterThanOrEqual(4);
    // One job per run with a job, and no other scheduled-run job at all.
    const jobs = ((await a.json('GET', `/api/v1/jobs?kind=${KIND}&limit=1000`)).body as any[]).filter((j) => j.payload.scheduleId === s.id);
    const withJob = runs.filter((r) => r.jobId);
    expect(withJob.length).toBeGreaterThanOrEqual(2);
    expect(jobs.length).toBe(withJob.length);
    expect(new Set(jobs.map((j) => j.payload.scheduledFor)).size).toBe(jobs.length);
    for (const j of jobs) {
      expect(j.state).toBe('succeeded');
      expect(j.results.filter((x: any) => x.status === 'succeeded').length).toBe(100);
    }
  });

  it('finishes a run in the other process after the one running it is killed with SIGKILL', async () => {
    for (const n of ['d-001', 'd-002']) expect((await a.json('POST', `/api/v1/desktop-pools/${poolId}/desktops/${n}/state`, { state: 'in-use' })).status).toBe(200);
    const s = (await a.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { cron: '* * * * * *', action: 'refresh', waveSize: 10, inUse: 'wait', waitDeadlineMinutes: 5, enabled: true })).body;
    let jobId: string | undefined;
    for (let i = 0; i < 300 && !jobId; i++) {
      jobId = (await runsOf(a, s.id)).find((r) => r.jobId)?.jobId;
      if (!jobId) await sleep(50);
    }
    expect(jobId).toBeDefined();
    await a.json('PATCH', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`, { enabled: false });
    // In the middle: the 98 free desktops are done, the run waits for the two in use.
    for (let i = 0; i < 400; i++) {
      const job = (await a.json('GET', `/api/v1/jobs/${jobId}`)).body;
      if (job.progress.done >= 98) break;
      await sleep(50);
    }
    const before = (await sql.query(`SELECT state, claimed_by FROM jobs WHERE id = $1`, [jobId])).rows[0];
    expect(before.state).toBe('running');
    const pid = Number(String(before.claimed_by).split(':')[1]);
    const [victim, survivor] = a.child!.pid === pid ? [a, b] : [b, a];
    expect(victim.child!.pid).toBe(pid);
    await victim.kill9();
    alive = survivor;
    for (const n of ['d-001', 'd-002']) expect((await survivor.json('POST', `/api/v1/desktop-pools/${poolId}/desktops/${n}/state`, { state: 'available' })).status).toBe(200);
    const job = await survivor.waitForJob(jobId!, 90_000);
    expect(job.state).toBe('succeeded');
    expect(job.attempts).toBe(2);
    expect(job.results).toHaveLength(100);
    expect(job.results.every((x: any) => x.status === 'succeeded')).toBe(true);
    // Every desktop was taken on exactly once, in waves of at most 10.
    const items = (await sql.query(`SELECT desktop_name, wave, status FROM schedule_run_items WHERE job_id = $1`, [jobId])).rows;
    expect(items).toHaveLength(100);
    expect(items.every((i) => i.status === 'succeeded')).toBe(true);
    const perWave = new Map<number, number>();
    for (const i of items) perWave.set(i.wave, (perWave.get(i.wave) ?? 0) + 1);
    for (const n of perWave.values()) expect(n).toBeLessThanOrEqual(10);
    const desktops = (await survivor.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body as any[];
    expect(desktops.every((d) => d.state === 'available')).toBe(true);
    expect((await runsOf(survivor, s.id)).filter((r) => r.jobId)).toHaveLength(1);
  });

  it('redoes the wave a dead process left half-way, giving its desktops their recorded states back', async () => {
    await alive.stop();
    const s = (await sql.query(`SELECT id FROM schedules WHERE pool_id = $1 LIMIT 1`, [poolId])).rows[0];
    const rows = (await sql.query(`SELECT id, name FROM desktops WHERE pool_id = $1 ORDER BY idx`, [poolId])).rows as Array<{ id: string; name: string }>;
    const byName = new Map(rows.map((r) => [r.name, r.id]));
    // What a process leaves when it dies in the middle of wave 2 of a forced refresh: wave 1 recorded as
    // done, wave 2 recorded as pending with the states its desktops had, those desktops `refreshing`.
    const jobId = '0b0b0b0b-0000-4000-8000-000000000001';
    const tick = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000).toISOString();
    const payload = { poolId, scheduleId: s.id, scheduledFor: tick, trigger: 'tick', action: 'refresh', waveSize: 5, inUse: 'force', waitDeadlineAt: null, maxFailuresPerWave: 0 };
    await sql.query(
      `INSERT INTO jobs (id, kind, state, resource_id, payload, claimed_by, heartbeat_at, attempts, started_at) VALUES ($1, $2, 'running', $3, $4, 'gone:1:deadbeef', now() - interval '1 hour', 1, now() - interval '1 hour')`,
      [jobId, KIND, poolId, JSON.stringify(payload)],
    );
    await sql.query(`INSERT INTO schedule_runs (schedule_id, scheduled_for, trigger, job_id) VALUES ($1, $2, 'tick', $3)`, [s.id, tick, jobId]);
    const done = ['d-001', 'd-002', 'd-003'];
    const pending: Array<[string, string]> = [['d-004', 'in-use'], ['d-005', 'in-use'], ['d-006', 'available'], ['d-007', 'available'], ['d-008', 'failed']];
    for (const n of done) await sql.query(`INSERT INTO schedule_run_items (job_id, desktop_id, desktop_name, wave, previous_state, status) VALUES ($1, $2, $3, 1, 'available', 'succeeded')`, [jobId, byName.get(n), n]);
    for (const [n, st] of pending) {
      await sql.query(`INSERT INTO schedule_run_items (job_id, desktop_id, desktop_name, wave, previous_state, status) VALUES ($1, $2, $3, 2, $4, 'pending')`, [jobId, byName.get(n), n, st]);
      await sql.query(`UPDATE desktops SET state = 'refreshing' WHERE id = $1`, [byName.get(n)]);
    }
    const restartsBefore = (await sql.query(`SELECT count(*)::int AS n FROM events WHERE type = 'desktop.restart-requested'`)).rows[0].n;
    await alive.start();
    const job = await alive.waitForJob(jobId, 60_000);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    expect(job.attempts).toBe(2);
    expect(job.results).toHaveLength(100);
    expect(job.results.every((x: any) => x.status === 'succeeded')).toBe(true);
    const items = new Map((await sql.query(`SELECT desktop_name, wave, status FROM schedule_run_items WHERE job_id = $1`, [jobId])).rows.map((r) => [r.desktop_name, r]));
    expect(items.size).toBe(100);
    // Wave 1 was not done again; the interrupted wave 2 was redone first; the rest followed from wave 3.
    for (const n of done) expect(items.get(n)).toMatchObject({ wave: 1, status: 'succeeded' });
    for (const [n] of pending) expect(items.get(n)).toMatchObject({ wave: 2, status: 'succeeded' });
    const later = [...items.values()].filter((i) => i.wave > 2);
    expect(later).toHaveLength(92);
    expect(Math.min(...later.map((i) => i.wave))).toBe(3);
    expect(Math.max(...later.map((i) => i.wave))).toBe(2 + Math.ceil(92 / 5));
    const desktops = new Map(((await alive.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body as any[]).map((d) => [d.name, d.state]));
    expect(desktops.get('d-004')).toBe('in-use');
    expect(desktops.get('d-005')).toBe('in-use');
    expect([...desktops.entries()].filter(([, st]) => st !== 'available').map(([n]) => n).sort()).toEqual(['d-004', 'd-005']);
    const restarts = (await sql.query(`SELECT data->>'name' AS name FROM events WHERE type = 'desktop.restart-requested' ORDER BY seq OFFSET $1`, [restartsBefore])).rows.map((r) => r.name);
    expect(restarts.sort()).toEqual(['d-004', 'd-005']);
  });
});
