// The clones API on both databases: linked clones of a ready replica, created without copying data.
import { writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const MiB = 1024 * 1024;

describe.each(DATABASE_KINDS)('clones API (%s)', (kind) => {
  let t: TestThicket;
  let replicaId: string;
  let templateId: string;
  let fastPool: string;
  let capacityPool: string;

  beforeAll(async () => {
    t = await startTestThicket(kind);
    const img = path.join(t.dataDir, 'golden.img');
    const data = Buffer.alloc(4 * MiB);
    for (let i = 0; i < data.length; i += 4096) data.fill(i / 4096, i, i + 4096);
    writeFileSync(img, data);
    const tpl = await t.json('POST', '/api/v1/templates', { name: 'golden' });
    templateId = tpl.body.id;
    const v = await t.json('POST', `/api/v1/templates/${templateId}/versions`, { sourcePath: img, format: 'raw' });
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string }>;
    fastPool = pools.find((p) => p.name === 'fast')!.id;
    capacityPool = pools.find((p) => p.name === 'capacity')!.id;
    const r = await t.json('POST', '/api/v1/replicas', { templateVersionId: v.body.id, storagePoolId: capacityPool });
    expect((await t.waitForJob(r.body.job.id)).state).toBe('succeeded');
    replicaId = r.body.replica.id;
  });

  afterAll(async () => {
    await t?.destroy();
  });

  it('creates a clone with the replica size by default and reports it', async () => {
    const res = await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: 'desk-001' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: 'desk-001', replicaId, storagePoolId: fastPool, sizeBytes: 4 * MiB, state: 'ready', uniqueBytes: 0, qos: { iops: null, bytesPerSecond: null } });
    const got = await t.json('GET', `/api/v1/clones/${res.body.id}`);
    expect(got.status).toBe(200);
    expect(got.body.id).toBe(res.body.id);
    // No data is copied: the clone has no files until it is written.
    const poolPath = (await t.json('GET', `/api/v1/storage-pools/${fastPool}`)).body.path;
    expect(existsSync(path.join(poolPath, 'clones', res.body.id))).toBe(false);
  });

  it('creates a larger clone with QoS limits and changes them with PATCH', async () => {
    const res = await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: 'desk-002', sizeBytes: 8 * MiB, qos: { iops: 500 } });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ sizeBytes: 8 * MiB, qos: { iops: 500, bytesPerSecond: null } });
    const patched = await t.json('PATCH', `/api/v1/clones/${res.body.id}`, { qos: { iops: null, bytesPerSecond: 10 * MiB } });
    expect(patched.status).toBe(200);
    expect(patched.body.qos).toEqual({ iops: null, bytesPerSecond: 10 * MiB });
  });

  it('lists clones filtered by replica and reports cloneCount and sharedBytes on the replica', async () => {
    const list = await t.json('GET', `/api/v1/clones?replicaId=${replicaId}`);
    expect(list.status).toBe(200);
    expect(list.body.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining(['desk-001', 'desk-002']));
    const replica = await t.json('GET', `/api/v1/replicas/${replicaId}`);
    expect(replica.body.cloneCount).toBeGreaterThanOrEqual(2);
    expect(replica.body.sharedBytes).toBeGreaterThanOrEqual(2 * 4 * MiB);
  });

  it('rejects a clone smaller than its replica or not a multiple of 4096 with 400 naming sizeBytes', async () => {
    for (const sizeBytes of [MiB, 4 * MiB + 1]) {
      const res = await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: `bad-${sizeBytes}`, sizeBytes });
      expect(res.status).toBe(400);
      expect(res.body.error.message).toContain('sizeBytes');
    }
  });

  it('returns 400 naming the field for missing or wrong-typed fields', async () => {
    const cases: Array<[unknown, string]> = [
      [{ storagePoolId: fastPool, name: 'x' }, 'replicaId'],
      [{ replicaId, storagePoolId: fastPool, name: 42 }, 'name'],
      [{ replicaId, storagePoolId: 'nope', name: 'x' }, 'storagePoolId'],
      [{ replicaId, storagePoolId: fastPool, name: 'x', qos: { iops: -1 } }, 'qos.iops'],
      [{ replicaId, storagePoolId: fastPool, name: 'x', extra: 1 }, 'extra'],
    ];
    for (const [body, field] of cases) {
      const res = await t.json('POST', '/api/v1/clones', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.message).toContain(field);
    }
    const bad = await t.json('POST', '/api/v1/clones', '{"replicaId":');
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('INVALID_JSON');
  });

  it('returns 404 for unknown replicas, pools and clones and 409 for a taken name', async () => {
    const unknown = '00000000-0000-4000-8000-000000000000';
    expect((await t.json('POST', '/api/v1/clones', { replicaId: unknown, storagePoolId: fastPool, name: 'y' })).status).toBe(404);
    expect((await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: unknown, name: 'y' })).status).toBe(404);
    expect((await t.json('GET', `/api/v1/clones/${unknown}`)).status).toBe(404);
    expect((await t.json('GET', '/api/v1/clones/not-a-uuid')).status).toBe(404);
    expect((await t.json('DELETE', `/api/v1/clones/${unknown}`)).status).toBe(404);
    expect((await t.json('POST', `/api/v1/clones/${unknown}/reset`)).status).toBe(404);
    const dup = await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: 'desk-001' });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe('NAME_TAKEN');
  });

  it('refuses to delete a replica or a storage pool while clones depend on them', async () => {
    const del = await t.json('DELETE', `/api/v1/replicas/${replicaId}`);
    expect(del.status).toBe(409);
    expect(del.body.error.code).toBe('REPLICA_IN_USE');
    expect(del.body.error.details.clones.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining(['desk-001', 'desk-002']));
    const pool = await t.json('DELETE', `/api/v1/storage-pools/${fastPool}`);
    expect(pool.status).toBe(409);
    expect(pool.body.error.code).toBe('STORAGE_POOL_IN_USE');
  });

  it('resets a clone and deletes it', async () => {
    const c = await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: 'desk-003' });
    const reset = await t.json('POST', `/api/v1/clones/${c.body.id}/reset`);
    expect(reset.status).toBe(200);
    expect(reset.body.uniqueBytes).toBe(0);
    expect((await t.json('DELETE', `/api/v1/clones/${c.body.id}`)).status).toBe(204);
    expect((await t.json('GET', `/api/v1/clones/${c.body.id}`)).status).toBe(404);
  });

  it('keeps clones across a restart and removes nothing of them', async () => {
    const before = (await t.json('GET', '/api/v1/clones')).body.map((c: { id: string }) => c.id).sort();
    await t.stop();
    await t.restart();
    const after = (await t.json('GET', '/api/v1/clones')).body as Array<{ id: string; state: string }>;
    expect(after.map((c) => c.id).sort()).toEqual(before);
    expect(after.every((c) => c.state === 'ready')).toBe(true);
  });

  it('deleting the template does not affect its replica or clones', async () => {
    expect((await t.json('DELETE', `/api/v1/templates/${templateId}`)).status).toBe(204);
    const replica = await t.json('GET', `/api/v1/replicas/${replicaId}`);
    expect(replica.body.state).toBe('ready');
    const c = await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: 'desk-after-template' });
    expect(c.status).toBe(201);
  });

  it('refuses clones of a replica that is not ready with 409', async () => {
    const tpl = await t.json('POST', '/api/v1/templates', { name: 'other' });
    const img = path.join(t.dataDir, 'other.img');
    writeFileSync(img, Buffer.alloc(64 * MiB, 1));
    const v = await t.json('POST', `/api/v1/templates/${tpl.body.id}/versions`, { sourcePath: img, format: 'raw' });
    const r = await t.json('POST', '/api/v1/replicas', { templateVersionId: v.body.id, storagePoolId: capacityPool });
    const c = await t.json('POST', '/api/v1/clones', { replicaId: r.body.replica.id, storagePoolId: fastPool, name: 'too-early' });
    // The promotion may already have finished on a fast machine; then the clone is legitimately created.
    if (c.status !== 201) {
      expect(c.status).toBe(409);
      expect(c.body.error.code).toBe('REPLICA_NOT_READY');
    }
    await t.waitForJob(r.body.job.id);
  });
});
