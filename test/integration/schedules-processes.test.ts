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
});
