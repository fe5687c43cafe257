// Desktop pools end to end through the API on both databases: a burst of 300 exported linked clones
// with live progress, grow, shrink, refresh (with and without in-use desktops), recompose, undo, delete.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { withDirectDb } from '../helpers/registry-fixtures.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const MiB = 1024 * 1024;
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:cccccccc-0000-4000-8000-000000000003';

describe.each(DATABASE_KINDS)('desktop pools (%s)', (kind) => {
  let t: TestThicket;
  let templateId: string;
  let replicaV1: string;
  let replicaV2: string;
  let fastPool: string;
  let capacityPool: string;
  let hostId: string;
  let poolId: string;
  const imageV1 = randomBytes(MiB);
  const imageV2 = randomBytes(2 * MiB);

  async function promote(image: Buffer, file: string): Promise<string> {
    const p = path.join(t.dataDir, file);
    writeFileSync(p, image);
    const v = await t.json('POST', `/api/v1/templates/${templateId}/versions`, { sourcePath: p, format: 'raw' });
    const r = await t.json('POST', '/api/v1/replicas', { templateVersionId: v.body.id, storagePoolId: capacityPool });
    expect((await t.waitForJob(r.body.job.id)).state).toBe('succeeded');
    return r.body.replica.id;
  }

  beforeAll(async () => {
    t = await startTestThicket(kind);
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string }>;
    fastPool = pools.find((p) => p.name === 'fast')!.id;
    capacityPool = pools.find((p) => p.name === 'capacity')!.id;
    templateId = (await t.json('POST', '/api/v1/templates', { name: 'win11' })).body.id;
    replicaV1 = await promote(imageV1, 'v1.img');
    replicaV2 = await promote(imageV2, 'v2.img');
    hostId = (await t.json('POST', '/api/v1/hosts', { name: 'hv1', nqn: HOSTNQN })).body.id;
  });

  afterAll(async () => {
    await t?.destroy();
  });

  it('provisions 300 desktops in one job with progress over the WebSocket ending at done == total', async () => {
    const ws = new WebSocket(`${t.url.replace('http', 'ws')}/api/v1/events?token=${t.token}&since=0`);
    const progress: Array<{ done: number; total: number; jobId: string }> = [];
    const states: Array<{ name: string; state: string }> = [];
    ws.on('message', (m) => {
      const e = JSON.parse(String(m));
      if (e.type === 'job.progress') progress.push(e);
      if (e.type === 'desktop.state') for (const d of e.desktops) states.push(d);
    });
    await new Promise((r) => ws.once('open', r));
    const res = await t.json('POST', '/api/v1/desktop-pools', {
      name: 'win11-pool',
      replicaId: replicaV1,
      storagePoolId: fastPool,
      size: 300,
      namePattern: 'win11-{n:000}',
      hostIds: [hostId],
    });
    expect(res.status).toBe(202);
    poolId = res.body.pool.id;
    const job = await t.waitForJob(res.body.job.id, 60_000);
    expect(job.state).toBe('succeeded');
    await new Promise((r) => setTimeout(r, 400));
    ws.close();
    const mine = progress.filter((p) => p.jobId === res.body.job.id);
    expect(mine.length).toBeGreaterThan(0);
    for (let i = 1; i < mine.length; i++) expect(mine[i].done).toBeGreaterThanOrEqual(mine[i - 1].done);
    expect(mine.at(-1)).toMatchObject({ done: 300, total: 300 });
    expect(new Set(states.filter((s) => s.state === 'available').map((s) => s.name)).size).toBe(300);

    const pool = await t.json('GET', `/api/v1/desktop-pools/${poolId}`);
    expect(pool.body).toMatchObject({ size: 300, state: 'ready', desktops: { available: 300, total: 300 } });
    expect(pool.body.space.savedBytes).toBe(300 * MiB);
    const desktops = (await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body;
    expect(desktops).toHaveLength(300);
    expect(desktops[0]).toMatchObject({ name: 'win11-001', subsystemNqn: 'nqn.2026-11.io.thicket:win11-pool', nsid: 1, state: 'available' });
    expect(desktops[299].name).toBe('win11-300');
  });

  it('serves every desktop to the pool host over NVMe/TCP', async () => {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: 'nqn.2026-11.io.thicket:win11-pool', hostnqn: HOSTNQN });
    try {
      const nsids = await host.activeNamespaces();
      expect(nsids).toHaveLength(300);
      expect((await host.read(300, 0, 16)).equals(imageV1.subarray(0, 16 * 4096))).toBe(true);
      await host.write(1, 0, Buffer.alloc(4096, 0xab));
      await host.flush(1);
      expect((await host.read(2, 0, 1)).equals(imageV1.subarray(0, 4096))).toBe(true);
    } finally {
      await host.close();
    }
  });

  it('refreshes available desktops and skips in-use ones unless forced', async () => {
    const inUse = await t.json('POST', `/api/v1/desktop-pools/${poolId}/desktops/win11-001/state`, { state: 'in-use' });
    expect(inUse.status).toBe(200);
    expect(inUse.body.state).toBe('in-use');
    const r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/refresh`, {});
    const job = await t.waitForJob(r.body.job.id);
    expect(job.state).toBe('succeeded');
    expect(job.results.filter((x: { status: string }) => x.status === 'skipped').map((x: { item: string }) => x.item)).toEqual(['win11-001']);
    const d1 = (await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body[0];
    expect(d1.uniqueBytes).toBe(4096); // kept its write
    const forced = await t.json('POST', `/api/v1/desktop-pools/${poolId}/refresh`, { desktops: ['win11-001'], force: true });
    expect((await t.waitForJob(forced.body.job.id)).state).toBe('succeeded');
    const after = (await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body[0];
    expect(after.uniqueBytes).toBe(0);
    expect(after.state).toBe('in-use');
  });

  it('shrinks by removing available desktops first and refuses to remove in-use ones without force', async () => {
    const refused = await t.json('PATCH', `/api/v1/desktop-pools/${poolId}`, { size: 0 });
    expect(refused.status).toBe(409);
    const res = await t.json('PATCH', `/api/v1/desktop-pools/${poolId}`, { size: 250 });
    expect(res.status).toBe(202);
    expect((await t.waitForJob(res.body.job.id)).state).toBe('succeeded');
    const desktops = (await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body as Array<{ name: string }>;
    expect(desktops).toHaveLength(250);
    expect(desktops.some((d) => d.name === 'win11-001')).toBe(true);
    const grow = await t.json('PATCH', `/api/v1/desktop-pools/${poolId}`, { size: 320 });
    expect((await t.waitForJob(grow.body.job.id)).state).toBe('succeeded');
    const pool = await t.json('GET', `/api/v1/desktop-pools/${poolId}`);
    expect(pool.body.size).toBe(320);
  });

  it('recomposes onto a newer replica and refuses an unrelated one', async () => {
    const other = (await t.json('POST', '/api/v1/templates', { name: 'other' })).body.id;
    void other;
    const bad = await t.json('POST', `/api/v1/desktop-pools/${poolId}/recompose`, { replicaId: '00000000-0000-4000-8000-000000000000' });
    expect(bad.status).toBe(404);
    const res = await t.json('POST', `/api/v1/desktop-pools/${poolId}/recompose`, { replicaId: replicaV2, force: true });
    expect(res.status).toBe(202);
    expect((await t.waitForJob(res.body.job.id, 60_000)).state).toBe('succeeded');
    const pool = await t.json('GET', `/api/v1/desktop-pools/${poolId}`);
    expect(pool.body.replicaId).toBe(replicaV2);
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: 'nqn.2026-11.io.thicket:win11-pool', hostnqn: HOSTNQN });
    try {
      expect((await host.read(1, 256, 16)).equals(imageV2.subarray(MiB, MiB + 16 * 4096))).toBe(true);
    } finally {
      await host.close();
    }
  });

  it('deletes the pool, its clones, namespaces and subsystem', async () => {
    const clonesBefore = (await t.json('GET', '/api/v1/clones')).body.length;
    expect(clonesBefore).toBeGreaterThanOrEqual(320);
    const res = await t.json('DELETE', `/api/v1/desktop-pools/${poolId}`);
    expect(res.status).toBe(202);
    expect((await t.waitForJob(res.body.job.id)).state).toBe('succeeded');
    expect((await t.json('GET', `/api/v1/desktop-pools/${poolId}`)).status).toBe(404);
    expect((await t.json('GET', '/api/v1/clones')).body).toHaveLength(0);
    expect((await t.json('GET', '/api/v1/subsystems')).body).toHaveLength(0);
  });

  /** A pool on replica v2 exported to the test host; returns its id and subsystem NQN once provisioned. */
  async function provisionedPool(name: string, size: number, namePattern: string, extra: Record<string, unknown> = {}): Promise<{ id: string; nqn: string }> {
    const res = await t.json('POST', '/api/v1/desktop-pools', { name, replicaId: replicaV2, storagePoolId: fastPool, size, namePattern, hostIds: [hostId], ...extra });
    expect((await t.waitForJob(res.body.job.id)).state).toBe('succeeded');
    return { id: res.body.pool.id, nqn: `nqn.2026-11.io.thicket:${name}` };
  }

  /** Writes one block of `fill` to namespace 1 and flushes it, over a connection of its own. */
  async function writeFlushed(nqn: string, lba: number, fill: number): Promise<void> {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: nqn, hostnqn: HOSTNQN });
    try {
      await host.write(1, lba, Buffer.alloc(4096, fill));
      await host.flush(1);
    } finally {
      await host.close();
    }
  }

  /** Reads one block of namespace 1 over a connection of its own. */
  async function readBlock(nqn: string, lba: number): Promise<Buffer> {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: nqn, hostnqn: HOSTNQN });
    try {
      return await host.read(1, lba, 1);
    } finally {
      await host.close();
    }
  }

  it('undoes a refresh within the grace period', async () => {
    const res = await t.json('POST', '/api/v1/desktop-pools', {
      name: 'grace',
      replicaId: replicaV2,
      storagePoolId: fastPool,
      size: 2,
      namePattern: 'g-{n}',
      hostIds: [hostId],
      refreshGraceSeconds: 600,
    });
    await t.waitForJob(res.body.job.id);
    const gid = res.body.pool.id;
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: 'nqn.2026-11.io.thicket:grace', hostnqn: HOSTNQN });
    try {
      await host.write(1, 3, Buffer.alloc(4096, 0x5a));
      await host.flush(1);
      const r = await t.json('POST', `/api/v1/desktop-pools/${gid}/refresh`, { desktops: ['g-1'] });
      expect((await t.waitForJob(r.body.job.id)).state).toBe('succeeded');
      expect((await host.read(1, 3, 1)).equals(imageV2.subarray(3 * 4096, 4 * 4096))).toBe(true);
      const undo = await t.json('POST', `/api/v1/desktop-pools/${gid}/desktops/g-1/undo-refresh`);
      expect(undo.status).toBe(200);
      expect((await host.read(1, 3, 1)).equals(Buffer.alloc(4096, 0x5a))).toBe(true);
      const again = await t.json('POST', `/api/v1/desktop-pools/${gid}/desktops/g-1/undo-refresh`);
      expect(again.status).toBe(409);
    } finally {
      await host.close();
    }
  });

  it('keeps the pre-refresh clone for undo when a grace-period refresh is run again after a crash', async () => {
    const pool = await provisionedPool('grace2', 1, 'h-{n}', { refreshGraceSeconds: 600 });
    await writeFlushed(pool.nqn, 5, 0x6b);
    const r = await t.json('POST', `/api/v1/desktop-pools/${pool.id}/refresh`, {});
    expect((await t.waitForJob(r.body.job.id)).state).toBe('succeeded');
    // The process died after swapping but before recording the job's end: the same job runs again.
    await withDirectDb(t, (db) => db.updateTable('jobs').set({ state: 'queued', claimed_by: null, finished_at: null }).where('id', '=', r.body.job.id).execute());
    t.instance.jobs.kick();
    expect((await t.waitForJob(r.body.job.id)).state).toBe('succeeded');
    expect((await t.json('POST', `/api/v1/desktop-pools/${pool.id}/desktops/h-1/undo-refresh`)).status).toBe(200);
    // Undo brings back what was written before the refresh, not the blank clone of the first run.
    expect((await readBlock(pool.nqn, 5)).equals(Buffer.alloc(4096, 0x6b))).toBe(true);
  });

  it('finishes a logoff reset that a crash left in refreshing, and leaves fresh ones to their owner', async () => {
    const pool = await provisionedPool('stuck', 2, 'k-{n}');
    await writeFlushed(pool.nqn, 7, 0x3c);
    // k-1: a reset a crash interrupted 20 minutes ago; k-2: one another process started just now.
    await withDirectDb(t, async (db) => {
      await db.updateTable('desktops').set({ state: 'refreshing', updated_at: new Date(Date.now() - 20 * 60_000) }).where('pool_id', '=', pool.id).where('name', '=', 'k-1').execute();
      await db.updateTable('desktops').set({ state: 'refreshing', updated_at: new Date() }).where('pool_id', '=', pool.id).where('name', '=', 'k-2').execute();
    });
    expect(await t.instance.desktopPools.recoverInterruptedResets()).toBe(1);
    const states = new Map(((await t.json('GET', `/api/v1/desktop-pools/${pool.id}/desktops`)).body as Array<{ name: string; state: string }>).map((d) => [d.name, d.state]));
    expect(states.get('k-1')).toBe('available');
    expect(states.get('k-2')).toBe('refreshing');
    // The reset did happen: the block written before it reads as the replica again.
    expect((await readBlock(pool.nqn, 7)).equals(imageV2.subarray(7 * 4096, 8 * 4096))).toBe(true);
    expect(await t.instance.desktopPools.recoverInterruptedResets()).toBe(0);
  });

  it('rejects bad input with 400 naming the field', async () => {
    const base = { name: 'x', replicaId: replicaV1, storagePoolId: fastPool, size: 1, namePattern: 'x-{n}', hostIds: [] };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ ...base, namePattern: 'no-placeholder' }, 'namePattern'],
      [{ ...base, size: -1 }, 'size'],
      [{ ...base, size: 'ten' }, 'size'],
      [{ ...base, hostIds: ['nope'] }, 'hostIds'],
    ];
    for (const [body, field] of cases) {
      const res = await t.json('POST', '/api/v1/desktop-pools', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.message).toContain(field);
    }
    expect((await t.json('GET', '/api/v1/desktop-pools/00000000-0000-4000-8000-000000000000')).status).toBe(404);
  });

  it('says what is wrong with out-of-range numbers, and checks the widest desktop name', async () => {
    const base = { name: 'msg', replicaId: replicaV1, storagePoolId: fastPool, size: 1, namePattern: 'm-{n}', hostIds: [] };
    const neg = await t.json('POST', '/api/v1/desktop-pools', { ...base, size: -1 });
    expect(neg.body.error.message).toMatch(/size: .*>=\s*0/);
    const { size: _omit, ...noSize } = base;
    expect((await t.json('POST', '/api/v1/desktop-pools', noSize)).body.error.message).toContain('size: is required');
    // 'd' * 47 + '{n}': desktop 1 has 48 characters, desktop 10 would have 49.
    const wide = await t.json('POST', '/api/v1/desktop-pools', { ...base, namePattern: `${'d'.repeat(47)}{n}`, size: 10 });
    expect(wide.status).toBe(400);
    expect(wide.body.error.message).toContain('49 characters');
  });

  it('refuses at request time a pool whose subsystems would collide with another pool\'s', async () => {
    // A pool of 1100 desktops needs subsystems <name> and <name>-2; a pool named "cx-2" holds the second.
    const mk = (name: string, size: number) => t.json('POST', '/api/v1/desktop-pools', { name, replicaId: replicaV1, storagePoolId: fastPool, size, namePattern: `${name}-{n}`, hostIds: [] });
    const other = await mk('cx-2', 1);
    expect(other.status).toBe(202);
    await t.waitForJob(other.body.job.id);
    const big = await mk('cx', 1100);
    expect(big.status).toBe(409);
    expect(big.body.error.code).toBe('NAME_TAKEN');
    expect(big.body.error.message).toContain('"cx-2"');
    const small = await mk('cx', 2);
    expect(small.status).toBe(202);
    // The 202 shows the size asked for; the desktop counts show the job's progress.
    expect(small.body.pool.size).toBe(2);
    expect((await t.waitForJob(small.body.job.id)).state).toBe('succeeded');
    const grow = await t.json('PATCH', `/api/v1/desktop-pools/${small.body.pool.id}`, { size: 1100 });
    expect(grow.status).toBe(409);
    expect((await t.json('GET', `/api/v1/desktop-pools/${small.body.pool.id}`)).body.size).toBe(2);
    for (const id of [other.body.pool.id, small.body.pool.id]) await t.waitForJob((await t.json('DELETE', `/api/v1/desktop-pools/${id}`)).body.job.id);
  });

  it('never recomposes a desktop back to an older version, refuses unknown desktop names, and protects failed and in-use desktops', async () => {
    const res = await t.json('POST', '/api/v1/desktop-pools', { name: 'mixed', replicaId: replicaV1, storagePoolId: fastPool, size: 2, namePattern: 'mx-{n}', hostIds: [], refreshGraceSeconds: 600 });
    expect((await t.waitForJob(res.body.job.id)).state).toBe('succeeded');
    const id = res.body.pool.id;
    expect((await t.json('POST', `/api/v1/desktop-pools/${id}/desktops/mx-1/state`, { state: 'in-use' })).status).toBe(200);
    // mx-1 is skipped, mx-2 moves to v2; the pool stays on v1 until every desktop has moved.
    const up = await t.json('POST', `/api/v1/desktop-pools/${id}/recompose`, { replicaId: replicaV2 });
    expect((await t.waitForJob(up.body.job.id)).state).toBe('succeeded');
    const down = await t.json('POST', `/api/v1/desktop-pools/${id}/recompose`, { replicaId: replicaV1 });
    expect(down.status).toBe(400);
    expect(down.body.error.message).toContain('already run version');
    const unknown = await t.json('POST', `/api/v1/desktop-pools/${id}/refresh`, { desktops: ['mx-1', 'nope'] });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.message).toContain('"nope"');
    // mx-2 was recomposed with a grace period: its undo is refused while it is in use, unless forced.
    expect((await t.json('POST', `/api/v1/desktop-pools/${id}/desktops/mx-2/state`, { state: 'in-use' })).status).toBe(200);
    const undo = await t.json('POST', `/api/v1/desktop-pools/${id}/desktops/mx-2/undo-refresh`);
    expect(undo.status).toBe(409);
    expect(undo.body.error.code).toBe('DESKTOPS_IN_USE');
    expect((await t.json('POST', `/api/v1/desktop-pools/${id}/desktops/mx-2/undo-refresh`, { force: true })).status).toBe(200);
    // A failed desktop is not made available by a report.
    await withDirectDb(t, (db) => db.updateTable('desktops').set({ state: 'failed', error: 'attach: test' }).where('pool_id', '=', id).where('name', '=', 'mx-1').execute());
    const mark = await t.json('POST', `/api/v1/desktop-pools/${id}/desktops/mx-1/state`, { state: 'available' });
    expect(mark.status).toBe(409);
    await t.waitForJob((await t.json('DELETE', `/api/v1/desktop-pools/${id}`)).body.job.id);
  });
});
