// Replicas through the HTTP API on both databases: promotion to a sparse, read-only, checksummed file;
// verification (and corruption detection); moves between pools; deletion refused while clones reference
// the replica; cancellation of a promotion; and every kind of bad input.
import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, open, readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';
import {
  collectEvents,
  createTemplate,
  defaultPools,
  exists,
  halfZeroImage,
  insertCloneRow,
  mountSmallTmpfs,
  paddedSha256,
  pollUntil,
  promoteAndWait,
  replicaFile,
  roundUp4k,
  sha256File,
  TempDirs,
  templateWithVersion,
  uniqueName,
  uploadVersion,
  withDirectDb,
  writeRandomImage,
  type Pools,
} from '../helpers/registry-fixtures.ts';

const UNKNOWN_UUID = '00000000-0000-4000-8000-000000000000';
const MALFORMED_IDS = ['not-a-uuid', '42', '00000000-0000-4000-8000-00000000000g', "1' OR '1'='1"];

/** Every file in the pool's replicas/ directory that belongs to `replicaId`. */
async function replicaFilesIn(poolPath: string, replicaId: string): Promise<string[]> {
  return (await readdir(path.join(poolPath, 'replicas'))).filter((f) => f.startsWith(replicaId)).sort();
}

describe.each(DATABASE_KINDS)('replicas (%s)', (kind) => {
  let t: TestThicket;
  let pools: Pools;
  const temp = new TempDirs();

  beforeAll(async () => {
    t = await startTestThicket(kind);
    pools = await defaultPools(t);
  });
  afterAll(async () => {
    await t?.destroy();
    await temp.cleanup();
  });

  describe('promotion', () => {
    const image = halfZeroImage(8 * 1024 * 1024 + 3000);
    let version: any;
    let template: any;
    let promoted: { replica: any; job: any };
    let finishedJob: any;

    beforeAll(async () => {
      ({ template, version } = await templateWithVersion(t, image));
      const { status, body } = await t.json('POST', '/api/v1/replicas', { templateVersionId: version.id, storagePoolId: pools.fast.id });
      expect(status).toBe(202);
      promoted = body;
      finishedJob = await t.waitForJob(body.job.id);
    });

    it('answers 202 with the replica in state creating and its promote job', () => {
      expect(promoted.replica).toMatchObject({
        templateVersionId: version.id,
        storagePoolId: pools.fast.id,
        state: 'creating',
        sizeBytes: roundUp4k(image.length),
        sha256: paddedSha256(image),
        cloneCount: 0,
      });
      expect(promoted.job).toMatchObject({ kind: 'replica.promote', resourceId: promoted.replica.id });
      expect(['queued', 'running']).toContain(promoted.job.state);
    });

    it('finishes the job as succeeded with full progress and a per-item result', () => {
      expect(finishedJob.state).toBe('succeeded');
      expect(finishedJob.error).toBeNull();
      expect(finishedJob.progress).toEqual({ done: roundUp4k(image.length), total: roundUp4k(image.length) });
      expect(finishedJob.results).toEqual([{ item: promoted.replica.id, status: 'succeeded' }]);
    });

    it('shows the replica ready with {id, templateVersionId, storagePoolId, state, sizeBytes, sha256, cloneCount}', async () => {
      const { status, body } = await t.json('GET', `/api/v1/replicas/${promoted.replica.id}`);
      expect(status).toBe(200);
      expect(body).toMatchObject({
        id: promoted.replica.id,
        templateVersionId: version.id,
        storagePoolId: pools.fast.id,
        state: 'ready',
        sizeBytes: roundUp4k(image.length),
        sha256: paddedSha256(image),
        cloneCount: 0,
      });
      for (const [field, type] of Object.entries({ id: 'string', templateVersionId: 'string', storagePoolId: 'string', state: 'string', sizeBytes: 'number', sha256: 'string', cloneCount: 'number' })) {
        expect(typeof body[field], field).toBe(type);
      }
    });

    it('lists the replica, also filtered by pool and by template', async () => {
      const all = await t.json('GET', '/api/v1/replicas');
      expect(all.status).toBe(200);
      expect(all.body.map((r: any) => r.id)).toContain(promoted.replica.id);
      const byPool = await t.json('GET', `/api/v1/replicas?storagePoolId=${pools.fast.id}`);
      expect(byPool.body.map((r: any) => r.id)).toContain(promoted.replica.id);
      expect(byPool.body.every((r: any) => r.storagePoolId === pools.fast.id)).toBe(true);
      const otherPool = await t.json('GET', `/api/v1/replicas?storagePoolId=${pools.capacity.id}`);
      expect(otherPool.body.map((r: any) => r.id)).not.toContain(promoted.replica.id);
      const byTemplate = await t.json('GET', `/api/v1/replicas?templateId=${template.id}`);
      expect(byTemplate.body.map((r: any) => r.id)).toEqual([promoted.replica.id]);
    });

    it('writes <pool>/replicas/<id>.img read-only (0444), sparse, with the version sha256, and no partial file', async () => {
      const file = replicaFile(pools.fast.path, promoted.replica.id);
      const s = await stat(file);
      expect(s.mode & 0o777).toBe(0o444);
      expect(s.size).toBe(roundUp4k(image.length));
      // Half of the 4 KiB blocks are zero and must not have been written.
      expect(s.blocks * 512).toBeLessThan(s.size * 0.6);
      expect(await sha256File(file)).toBe(paddedSha256(image));
      expect(await replicaFilesIn(pools.fast.path, promoted.replica.id)).toEqual([`${promoted.replica.id}.img`, `${promoted.replica.id}.json`]);
    });

    it('counts the replica in its pool usage', async () => {
      const pool = (await t.json('GET', `/api/v1/storage-pools/${pools.fast.id}`)).body;
      expect(pool.replicaCount).toBeGreaterThanOrEqual(1);
      expect(pool.usage.replicaBytes).toBeGreaterThanOrEqual(roundUp4k(image.length));
    });

    it('publishes replica.ready on the event stream', async () => {
      const events = await collectEvents(t, (e) => e.type === 'replica.ready' && e.replicaId === promoted.replica.id);
      const ready = events.find((e) => e.type === 'replica.ready' && e.replicaId === promoted.replica.id);
      expect(ready).toMatchObject({ storagePoolId: pools.fast.id, sha256: paddedSha256(image), sizeBytes: roundUp4k(image.length) });
      expect(typeof ready.seq).toBe('number');
      expect(events.some((e) => e.type === 'job.succeeded' && e.jobId === promoted.job.id)).toBe(true);
    });

    it('accepts upper-case UUIDs for the version and the pool', async () => {
      const { status, body } = await t.json('POST', '/api/v1/replicas', {
        templateVersionId: version.id.toUpperCase(),
        storagePoolId: pools.capacity.id.toUpperCase(),
      });
      expect(status).toBe(202);
      expect(body.replica).toMatchObject({ templateVersionId: version.id, storagePoolId: pools.capacity.id });
      expect((await t.waitForJob(body.job.id)).state).toBe('succeeded');
      expect((await t.api(`/api/v1/replicas/${body.replica.id}`, { method: 'DELETE' })).status).toBe(204);
    });
  });

  describe('verification', () => {
    it('verifies an intact replica: the job succeeds and the replica stays ready', async () => {
      const image = halfZeroImage(1024 * 1024);
      const { version } = await templateWithVersion(t, image);
      const { replica } = await promoteAndWait(t, version.id, pools.fast.id);
      const { status, body } = await t.json('POST', `/api/v1/replicas/${replica.id}/verify`);
      expect(status).toBe(202);
      expect(body.job).toMatchObject({ kind: 'replica.verify', resourceId: replica.id });
      const job = await t.waitForJob(body.job.id);
      expect(job.state).toBe('succeeded');
      expect(job.results).toEqual([{ item: replica.id, status: 'succeeded' }]);
      expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).body).toMatchObject({ state: 'ready', error: null });
    });

    it('marks a tampered replica corrupt: the verify job fails and replica.corrupt is published', async () => {
      const image = halfZeroImage(1024 * 1024);
      const { version } = await templateWithVersion(t, image);
      const { replica } = await promoteAndWait(t, version.id, pools.fast.id);
      const file = replicaFile(pools.fast.path, replica.id);

      // Flip one byte in a data block.
      await chmod(file, 0o644);
      const fh = await open(file, 'r+');
      const original = Buffer.alloc(1);
      try {
        await fh.read(original, 0, 1, 100);
        await fh.write(Buffer.from([original[0] ^ 0xff]), 0, 1, 100);
      } finally {
        await fh.close();
      }
      await chmod(file, 0o444);

      const { body } = await t.json('POST', `/api/v1/replicas/${replica.id}/verify`);
      const job = await t.waitForJob(body.job.id);
      expect(job.state).toBe('failed');
      expect(job.error).toMatchObject({ code: 'REPLICA_CORRUPT', details: { expected: paddedSha256(image) } });
      expect(job.error.details.actual).not.toBe(paddedSha256(image));
      expect(job.results).toEqual([expect.objectContaining({ item: replica.id, status: 'failed' })]);

      const after = (await t.json('GET', `/api/v1/replicas/${replica.id}`)).body;
      expect(after.state).toBe('corrupt');
      expect(after.error).toMatch(/sha256/);
      // The recorded checksum is the version's, not the damaged file's.
      expect(after.sha256).toBe(paddedSha256(image));

      const events = await collectEvents(t, (e) => e.type === 'replica.corrupt' && e.replicaId === replica.id);
      const corrupt = events.find((e) => e.type === 'replica.corrupt' && e.replicaId === replica.id);
      expect(corrupt).toMatchObject({ expected: paddedSha256(image), actual: job.error.details.actual });
      expect(events.some((e) => e.type === 'job.failed' && e.jobId === job.id)).toBe(true);

      // A corrupt replica cannot be moved.
      const move = await t.json('POST', `/api/v1/replicas/${replica.id}/move`, { storagePoolId: pools.capacity.id });
      expect(move.status).toBe(409);
      expect(move.body.error.code).toBe('REPLICA_NOT_READY');

      // Repaired on disk, a second verification makes it ready again.
      await chmod(file, 0o644);
      const fh2 = await open(file, 'r+');
      try {
        await fh2.write(original, 0, 1, 100);
      } finally {
        await fh2.close();
      }
      await chmod(file, 0o444);
      const again = await t.json('POST', `/api/v1/replicas/${replica.id}/verify`);
      expect(again.status).toBe(202);
      expect((await t.waitForJob(again.body.job.id)).state).toBe('succeeded');
      expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).body).toMatchObject({ state: 'ready', error: null });
    });

    it('marks a replica whose file vanished corrupt', async () => {
      const { version } = await templateWithVersion(t, halfZeroImage(64 * 1024));
      const { replica } = await promoteAndWait(t, version.id, pools.fast.id);
      await unlink(replicaFile(pools.fast.path, replica.id));
      const { body } = await t.json('POST', `/api/v1/replicas/${replica.id}/verify`);
      const job = await t.waitForJob(body.job.id);
      expect(job.state).toBe('failed');
      expect(job.error.code).toBe('REPLICA_CORRUPT');
      const after = (await t.json('GET', `/api/v1/replicas/${replica.id}`)).body;
      expect(after.state).toBe('corrupt');
      expect(after.error).toMatch(/cannot read/);
    });
  });

  it('fails a promotion to a full pool with INSUFFICIENT_SPACE: replica failed, no file left', async (ctx) => {
    const dir = await temp.make();
    const small = await mountSmallTmpfs(dir, 128 * 1024 * 1024);
    if (!small) ctx.skip();
    try {
      const pool = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('tiny'), path: dir, tier: 'fast' });
      expect(pool.status, JSON.stringify(pool.body)).toBe(201);
      // Whatever the pool itself keeps there, the image is 8 MiB larger than the room left.
      const free = (await t.json('GET', `/api/v1/storage-pools/${pool.body.id}`)).body.usage.freeBytes;
      expect(free).toBeLessThan(128 * 1024 * 1024);
      const { version } = await templateWithVersion(t, randomBytes(roundUp4k(free) + 8 * 1024 * 1024));
      const { job, replica } = await promoteAndWait(t, version.id, pool.body.id);
      expect(job.state).toBe('failed');
      expect(job.error.code).toBe('INSUFFICIENT_SPACE');
      expect(replica.state).toBe('failed');
      expect(replica.error).toMatch(/INSUFFICIENT_SPACE/);
      expect(await replicaFilesIn(dir, replica.id)).toEqual([]);
      expect((await t.json('GET', `/api/v1/storage-pools/${pool.body.id}`)).body.usage.replicaBytes).toBe(0);
      expect((await t.api(`/api/v1/replicas/${replica.id}`, { method: 'DELETE' })).status).toBe(204);
      expect((await t.api(`/api/v1/storage-pools/${pool.body.id}`, { method: 'DELETE' })).status).toBe(204);
    } finally {
      await small!.release();
    }
  }, 120_000);

  describe('moves', () => {
    it('moves a replica to the other pool: the file moves, the old one is gone, storagePoolId changes, sha256 stays', async () => {
      const image = halfZeroImage(2 * 1024 * 1024 + 10);
      const { version } = await templateWithVersion(t, image);
      const { replica } = await promoteAndWait(t, version.id, pools.fast.id);
      const from = replicaFile(pools.fast.path, replica.id);
      const to = replicaFile(pools.capacity.path, replica.id);
      expect(await exists(from)).toBe(true);
      expect(await exists(to)).toBe(false);

      const { status, body } = await t.json('POST', `/api/v1/replicas/${replica.id}/move`, { storagePoolId: pools.capacity.id });
      expect(status).toBe(202);
      expect(body.job).toMatchObject({ kind: 'replica.move', resourceId: replica.id });
      const job = await t.waitForJob(body.job.id);
      expect(job.state).toBe('succeeded');

      const after = (await t.json('GET', `/api/v1/replicas/${replica.id}`)).body;
      expect(after).toMatchObject({ id: replica.id, storagePoolId: pools.capacity.id, state: 'ready', sha256: paddedSha256(image), sizeBytes: replica.sizeBytes });
      expect(await replicaFilesIn(pools.fast.path, replica.id)).toEqual([]);
      expect(await replicaFilesIn(pools.capacity.path, replica.id)).toEqual([`${replica.id}.img`, `${replica.id}.json`]);
      const s = await stat(to);
      expect(s.mode & 0o777).toBe(0o444);
      expect(s.blocks * 512).toBeLessThan(s.size * 0.6);
      expect(await sha256File(to)).toBe(paddedSha256(image));

      // And back again; a verification afterwards succeeds.
      const back = await t.json('POST', `/api/v1/replicas/${replica.id}/move`, { storagePoolId: pools.fast.id });
      expect((await t.waitForJob(back.body.job.id)).state).toBe('succeeded');
      expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).body.storagePoolId).toBe(pools.fast.id);
      expect(await exists(to)).toBe(false);
      const verify = await t.json('POST', `/api/v1/replicas/${replica.id}/verify`);
      expect((await t.waitForJob(verify.body.job.id)).state).toBe('succeeded');
    });

    it('refuses a move to the pool the replica is already on with 409, and to an unknown pool with 404', async () => {
      const { version } = await templateWithVersion(t, halfZeroImage(64 * 1024));
      const { replica } = await promoteAndWait(t, version.id, pools.fast.id);
      const same = await t.json('POST', `/api/v1/replicas/${replica.id}/move`, { storagePoolId: pools.fast.id });
      expect(same.status).toBe(409);
      expect(same.body.error.details.field).toBe('storagePoolId');
      const unknown = await t.json('POST', `/api/v1/replicas/${replica.id}/move`, { storagePoolId: UNKNOWN_UUID });
      expect(unknown.status).toBe(404);
      expect(unknown.body.error.code).toBe('STORAGE_POOL_NOT_FOUND');
      for (const [input, field] of [
        [{}, 'storagePoolId'],
        [{ storagePoolId: 'fast' }, 'storagePoolId'],
        [{ storagePoolId: 3 }, 'storagePoolId'],
        [{ storagePoolId: pools.capacity.id, force: true }, '(body)'],
      ] as const) {
        const res = await t.json('POST', `/api/v1/replicas/${replica.id}/move`, input);
        expect(res.status, JSON.stringify(input)).toBe(400);
        expect(res.body.error.details.map((d: any) => d.field)).toContain(field);
      }
      expect((await t.json('POST', `/api/v1/replicas/${replica.id}/move`, '{oops')).body.error.code).toBe('INVALID_JSON');
      expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).body.storagePoolId).toBe(pools.fast.id);
    });
  });

  describe('deletion', () => {
    it('returns 409 REPLICA_IN_USE listing the clones while clones reference the replica, and deletes it once they are gone', async () => {
      const { version } = await templateWithVersion(t, halfZeroImage(256 * 1024));
      const { replica } = await promoteAndWait(t, version.id, pools.fast.id);
      const cloneName = uniqueName('desktop');
      const clone = await withDirectDb(t, (db) => insertCloneRow(db, replica, cloneName));
      expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).body.cloneCount).toBe(1);

      const res = await t.api(`/api/v1/replicas/${replica.id}`, { method: 'DELETE' });
      expect(res.status).toBe(409);
      const body = await res.json();
      expect(body).toEqual({
        error: {
          code: 'REPLICA_IN_USE',
          message: expect.any(String),
          details: { clones: [{ id: clone.id, name: cloneName }], cloneCount: 1 },
        },
      });
      expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).body.state).toBe('ready');
      expect(await exists(replicaFile(pools.fast.path, replica.id))).toBe(true);

      // The pool holding the clone cannot be removed either.
      const poolDelete = await t.json('DELETE', `/api/v1/storage-pools/${pools.fast.id}`);
      expect(poolDelete.status).toBe(409);
      expect(poolDelete.body.error.code).toBe('STORAGE_POOL_IN_USE');

      // Past the 1,000 clones the refusal lists by name, the message and cloneCount still count them all.
      const many = Array.from({ length: 1004 }, (_, i) => ({
        id: randomUUID(),
        name: `${cloneName}-${String(i).padStart(4, '0')}`,
        replica_id: replica.id,
        storage_pool_id: replica.storagePoolId,
        size_bytes: replica.sizeBytes,
        state: 'ready' as const,
      }));
      await withDirectDb(t, (db) => db.insertInto('clones').values(many).execute());
      const crowded = await t.json('DELETE', `/api/v1/replicas/${replica.id}`);
      expect(crowded.status).toBe(409);
      expect(crowded.body.error.details.cloneCount).toBe(1005);
      expect(crowded.body.error.details.clones).toHaveLength(1000);
      expect(crowded.body.error.message).toContain('1005 clone(s)');
      await withDirectDb(t, (db) => db.deleteFrom('clones').where('id', 'in', many.map((c) => c.id)).execute());

      await withDirectDb(t, (db) => db.deleteFrom('clones').where('id', '=', clone.id).execute());
      const ok = await t.api(`/api/v1/replicas/${replica.id}`, { method: 'DELETE' });
      expect(ok.status).toBe(204);
      expect(await replicaFilesIn(pools.fast.path, replica.id)).toEqual([]);
    });

    it('deletes an unused replica with 204 and removes its files', async () => {
      const { version } = await templateWithVersion(t, halfZeroImage(256 * 1024));
      const { replica } = await promoteAndWait(t, version.id, pools.capacity.id);
      expect(await exists(replicaFile(pools.capacity.path, replica.id))).toBe(true);
      const res = await t.api(`/api/v1/replicas/${replica.id}`, { method: 'DELETE' });
      expect(res.status).toBe(204);
      expect(await replicaFilesIn(pools.capacity.path, replica.id)).toEqual([]);
      expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).status).toBe(404);
      expect((await t.json('GET', '/api/v1/replicas')).body.map((r: any) => r.id)).not.toContain(replica.id);
      const again = await t.json('DELETE', `/api/v1/replicas/${replica.id}`);
      expect(again.status).toBe(404);
      expect(again.body.error.code).toBe('REPLICA_NOT_FOUND');
    });
  });

  describe('bad input', () => {
    let version: any;
    beforeAll(async () => {
      ({ version } = await templateWithVersion(t, halfZeroImage(4096)));
    });

    it('rejects missing, wrong-typed, non-UUID and unknown promote fields with 400 naming the field', async () => {
      const pool = pools.fast.id;
      const cases: Array<[unknown, string]> = [
        [{ storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: version.id }, 'storagePoolId'],
        [{}, 'templateVersionId'],
        [{ templateVersionId: 1, storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: null, storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: true, storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: [version.id], storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: { id: version.id }, storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: version.id, storagePoolId: 7 }, 'storagePoolId'],
        [{ templateVersionId: 'v1', storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: `${version.id}x`, storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: ` ${version.id}`, storagePoolId: pool }, 'templateVersionId'],
        [{ templateVersionId: version.id, storagePoolId: 'fast' }, 'storagePoolId'],
        [{ templateVersionId: version.id, storagePoolId: pool, name: 'extra' }, '(body)'],
        [[version.id, pool], '(body)'],
        ['"a string"', '(body)'],
        ['42', '(body)'],
        ['null', '(body)'],
      ];
      for (const [input, field] of cases) {
        const body = typeof input === 'string' ? input : JSON.stringify(input);
        const res = await t.json('POST', '/api/v1/replicas', body);
        expect(res.status, body).toBe(400);
        expect(res.body.error.code, body).toBe('VALIDATION_FAILED');
        expect(res.body.error.details.map((d: any) => d.field), body).toContain(field);
        expect(res.body.error.message, body).toContain(field);
      }
      // A "__proto__" key (which JSON.stringify of an object literal would drop) is just an unknown field.
      const proto = await t.json('POST', '/api/v1/replicas', `{"templateVersionId":"${version.id}","storagePoolId":"${pool}","__proto__":{"x":1}}`);
      expect(proto.status).toBe(400);
      expect(proto.body.error.message).toMatch(/__proto__/);
      expect((await t.json('GET', '/api/v1/replicas')).body.filter((r: any) => r.templateVersionId === version.id)).toEqual([]);
    });

    it('rejects malformed JSON with 400 INVALID_JSON', async () => {
      for (const text of ['{', '{"templateVersionId": }', "{'a': 1}", 'undefined', '']) {
        const res = await t.json('POST', '/api/v1/replicas', text === '' ? undefined : text);
        expect(res.status, text).toBe(400);
        expect(res.body.error.code).toBe('INVALID_JSON');
      }
    });

    it('rejects a JSON body over 1 MiB with 413', async () => {
      const res = await t.json('POST', '/api/v1/replicas', JSON.stringify({ templateVersionId: version.id, storagePoolId: pools.fast.id, pad: 'x'.repeat(1024 * 1024) }));
      expect(res.status).toBe(413);
      expect(res.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    });

    it('answers 404 naming the unknown template version or storage pool', async () => {
      const noVersion = await t.json('POST', '/api/v1/replicas', { templateVersionId: UNKNOWN_UUID, storagePoolId: pools.fast.id });
      expect(noVersion.status).toBe(404);
      expect(noVersion.body.error).toMatchObject({ code: 'TEMPLATE_VERSION_NOT_FOUND', details: { field: 'templateVersionId' } });
      const noPool = await t.json('POST', '/api/v1/replicas', { templateVersionId: version.id, storagePoolId: UNKNOWN_UUID });
      expect(noPool.status).toBe(404);
      expect(noPool.body.error).toMatchObject({ code: 'STORAGE_POOL_NOT_FOUND', details: { field: 'storagePoolId' } });
    });

    it('answers 404 REPLICA_NOT_FOUND for unknown and malformed replica ids on every replica route', async () => {
      for (const id of [UNKNOWN_UUID, ...MALFORMED_IDS]) {
        const p = `/api/v1/replicas/${encodeURIComponent(id)}`;
        for (const [method, suffix, body] of [
          ['GET', '', undefined],
          ['DELETE', '', undefined],
          ['POST', '/verify', undefined],
          ['POST', '/move', { storagePoolId: pools.capacity.id }],
        ] as const) {
          const res = await t.json(method, `${p}${suffix}`, body);
          expect(res.status, `${method} ${id}${suffix}`).toBe(404);
          expect(res.body.error.code).toBe('REPLICA_NOT_FOUND');
        }
      }
    });

    it('rejects bad list filters with 400 naming the parameter', async () => {
      for (const [query, field] of [
        ['storagePoolId=fast', 'storagePoolId'],
        ['templateId=1', 'templateId'],
        ['state=ready', '(query)'],
      ] as const) {
        const res = await t.json('GET', `/api/v1/replicas?${query}`);
        expect(res.status, query).toBe(400);
        expect(res.body.error.details.map((d: any) => d.field)).toContain(field);
      }
    });

    it('answers 404 for unknown and malformed job ids and 409 when cancelling a finished job', async () => {
      for (const id of [UNKNOWN_UUID, ...MALFORMED_IDS]) {
        const get = await t.json('GET', `/api/v1/jobs/${encodeURIComponent(id)}`);
        expect(get.status, id).toBe(404);
        expect(get.body.error.code).toBe('JOB_NOT_FOUND');
        const cancel = await t.json('POST', `/api/v1/jobs/${encodeURIComponent(id)}/cancel`);
        expect(cancel.status, id).toBe(404);
        expect(cancel.body.error.code).toBe('JOB_NOT_FOUND');
      }
      const { job } = await promoteAndWait(t, version.id, pools.fast.id);
      const cancel = await t.json('POST', `/api/v1/jobs/${job.id}/cancel`);
      expect(cancel.status).toBe(409);
      expect(cancel.body.error.code).toBe('JOB_FINISHED');
    });

    it('never answers 500 to any of a range of hostile requests, and keeps serving', async () => {
      const bodies: Array<string | undefined> = [
        undefined,
        '',
        '{',
        '[]',
        '{}',
        'null',
        '0',
        '"x"',
        '{"templateVersionId":"' + '0'.repeat(10_000) + '"}',
        '[' .repeat(5000) + ']'.repeat(5000),
        '{"storagePoolId":{"$ne":null}}',
        '{"storagePoolId":"00000000-0000-4000-8000-000000000000","templateVersionId":"00000000-0000-4000-8000-000000000000"}',
        '{"constructor":{"prototype":{"x":1}}}',
        '\u0000\u0001\u0002',
        '\uFEFF{}',
        '{"a":"\uD800"}',
      ];
      const routes: Array<[string, string]> = [
        ['POST', '/api/v1/replicas'],
        ['POST', `/api/v1/replicas/${UNKNOWN_UUID}/move`],
        ['POST', `/api/v1/replicas/${UNKNOWN_UUID}/verify`],
        ['POST', '/api/v1/storage-pools'],
        ['POST', '/api/v1/templates'],
        ['POST', `/api/v1/templates/${version.templateId}/versions`],
        ['POST', `/api/v1/jobs/${UNKNOWN_UUID}/cancel`],
        ['PUT', '/api/v1/replicas'],
        ['PATCH', `/api/v1/replicas/${UNKNOWN_UUID}`],
      ];
      const seen: string[] = [];
      for (const [method, route] of routes) {
        for (const body of bodies) {
          const res = await t.api(route, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body });
          const text = await res.text();
          seen.push(`${method} ${route} ${String(body).slice(0, 30)} -> ${res.status}`);
          expect(res.status, `${method} ${route} ${String(body).slice(0, 40)}: ${text.slice(0, 200)}`).toBeLessThan(500);
          expect(() => JSON.parse(text), `${method} ${route}: error bodies are JSON`).not.toThrow();
        }
      }
      expect(seen.length).toBe(routes.length * bodies.length);
      expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
      // Nothing was created from any of it.
      expect((await t.json('GET', `/api/v1/templates/${version.templateId}`)).body.versions).toHaveLength(1);
    });
  });

  describe('cancellation', () => {
    const BIG = 256 * 1024 * 1024;
    let bigVersion: any;

    beforeAll(async () => {
      const dir = await temp.make();
      const file = path.join(dir, 'big.raw');
      const digest = await writeRandomImage(file, BIG);
      const template = await createTemplate(t);
      const res = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: file, format: 'raw' });
      expect(res.status).toBe(201);
      expect(res.body.sha256).toBe(digest);
      bigVersion = res.body;
      await unlink(file);
    }, 120_000);

    async function expectRolledBack(replicaId: string, jobId: string, poolPath: string) {
      const job = await t.waitForJob(jobId, 60_000);
      expect(job.state).toBe('cancelled');
      expect(job.error).toMatchObject({ code: 'JOB_CANCELLED' });
      expect(job.cancelRequested).toBe(true);
      const replica = (await t.json('GET', `/api/v1/replicas/${replicaId}`)).body;
      expect(replica.state).toBe('failed');
      expect(replica.error).toMatch(/JOB_CANCELLED/);
      expect(await replicaFilesIn(poolPath, replicaId)).toEqual([]);
      return { job, replica };
    }

    it('cancels a running promotion: job cancelled, replica failed, no partial file left', async () => {
      const { status, body } = await t.json('POST', '/api/v1/replicas', { templateVersionId: bigVersion.id, storagePoolId: pools.fast.id });
      expect(status).toBe(202);
      const replicaId = body.replica.id;
      await pollUntil(async () => (await t.json('GET', `/api/v1/jobs/${body.job.id}`)).body.state === 'running', { what: 'promotion running', intervalMs: 5 });

      // While the promotion runs, the replica is busy for every other operation.
      for (const [method, suffix, input] of [
        ['POST', '/verify', undefined],
        ['POST', '/move', { storagePoolId: pools.capacity.id }],
        ['DELETE', '', undefined],
      ] as const) {
        const res = await t.json(method, `/api/v1/replicas/${replicaId}${suffix}`, input);
        expect([409], `${method} ${suffix}: ${JSON.stringify(res.body)}`).toContain(res.status);
        expect(['REPLICA_BUSY', 'REPLICA_NOT_READY']).toContain(res.body.error.code);
      }

      const cancel = await t.json('POST', `/api/v1/jobs/${body.job.id}/cancel`);
      expect(cancel.status).toBe(202);
      expect(cancel.body).toMatchObject({ id: body.job.id, cancelRequested: true });
      const { job } = await expectRolledBack(replicaId, body.job.id, pools.fast.path);
      expect(job.progress.done).toBeLessThan(BIG);

      const again = await t.json('POST', `/api/v1/jobs/${body.job.id}/cancel`);
      expect(again.status).toBe(409);
      expect(again.body.error.code).toBe('JOB_FINISHED');
      // A failed replica cannot be verified or moved, holds no pool space, and can be deleted.
      expect((await t.json('POST', `/api/v1/replicas/${replicaId}/verify`)).status).toBe(409);
      expect((await t.json('POST', `/api/v1/replicas/${replicaId}/move`, { storagePoolId: pools.capacity.id })).status).toBe(409);
      expect((await t.api(`/api/v1/replicas/${replicaId}`, { method: 'DELETE' })).status).toBe(204);

      const events = await collectEvents(t, (e) => e.type === 'job.cancelled' && e.jobId === body.job.id);
      expect(events.some((e) => e.type === 'replica.failed' && e.replicaId === replicaId)).toBe(true);
    }, 180_000);

    it('cancels a queued promotion at once while the runner is busy with others', async () => {
      const started: any[] = [];
      for (const pool of [pools.fast, pools.capacity]) {
        const res = await t.json('POST', '/api/v1/replicas', { templateVersionId: bigVersion.id, storagePoolId: pool.id });
        expect(res.status).toBe(202);
        started.push({ ...res.body, pool });
      }
      await pollUntil(
        async () => {
          const states = await Promise.all(started.map(async (s) => (await t.json('GET', `/api/v1/jobs/${s.job.id}`)).body.state));
          return states.every((s) => s === 'running');
        },
        { what: 'both promotions running', intervalMs: 5 },
      );
      // The runner runs two jobs at a time, so this third one waits in the queue.
      const queued = await t.json('POST', '/api/v1/replicas', { templateVersionId: bigVersion.id, storagePoolId: pools.fast.id });
      expect(queued.status).toBe(202);
      const cancel = await t.json('POST', `/api/v1/jobs/${queued.body.job.id}/cancel`);
      expect(cancel.status).toBe(202);
      expect(cancel.body).toMatchObject({ state: 'cancelled', cancelRequested: true });
      await expectRolledBack(queued.body.replica.id, queued.body.job.id, pools.fast.path);

      for (const s of started) expect((await t.json('POST', `/api/v1/jobs/${s.job.id}/cancel`)).status).toBe(202);
      for (const s of started) await expectRolledBack(s.replica.id, s.job.id, s.pool.path);
      const jobs = await t.json('GET', '/api/v1/jobs?state=queued,running');
      expect(jobs.body).toEqual([]);
    }, 180_000);

    it('a promotion whose template is deleted meanwhile ends ready and intact, or failed with no file', async () => {
      const { status, body } = await t.json('POST', '/api/v1/replicas', { templateVersionId: bigVersion.id, storagePoolId: pools.capacity.id });
      expect(status).toBe(202);
      await pollUntil(async () => (await t.json('GET', `/api/v1/jobs/${body.job.id}`)).body.state === 'running', { what: 'promotion running', intervalMs: 5 });
      expect((await t.api(`/api/v1/templates/${bigVersion.templateId}`, { method: 'DELETE' })).status).toBe(204);
      const job = await t.waitForJob(body.job.id, 60_000);
      const replica = (await t.json('GET', `/api/v1/replicas/${body.replica.id}`)).body;
      if (job.state === 'succeeded') {
        // The copy already had the source open: it finishes and must be exactly the version.
        expect(replica.state).toBe('ready');
        expect(await sha256File(replicaFile(pools.capacity.path, replica.id))).toBe(bigVersion.sha256);
      } else {
        expect(job.state).toBe('failed');
        expect(replica.state).toBe('failed');
        expect(await replicaFilesIn(pools.capacity.path, replica.id)).toEqual([]);
      }
      expect((await t.api(`/api/v1/replicas/${replica.id}`, { method: 'DELETE' })).status).toBe(204);
    }, 180_000);
  });

  it('refuses with 507 a promotion that would take a pool past its configured capacity, naming the numbers', async () => {
    const dir = await temp.make();
    const created = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('budget'), path: dir, tier: 'capacity', capacityBytes: 256 * 1024 * 1024 });
    expect(created.status).toBe(201);
    // 300 MiB, almost all zero: its sparse file is small, but the pool counts replicas at their size.
    const big = Buffer.alloc(300 * 1024 * 1024);
    big.fill(7, 0, 4096);
    const { version } = await templateWithVersion(t, big);
    const res = await t.json('POST', '/api/v1/replicas', { templateVersionId: version.id, storagePoolId: created.body.id });
    expect(res.status).toBe(507);
    expect(res.body.error.code).toBe('INSUFFICIENT_SPACE');
    expect(res.body.error.details).toMatchObject({ capacityBytes: 256 * 1024 * 1024, neededBytes: 300 * 1024 * 1024 });
    const listed = (await t.json('GET', `/api/v1/replicas?storagePoolId=${created.body.id}`)).body;
    expect(listed).toEqual([]);
    expect((await t.api(`/api/v1/storage-pools/${created.body.id}`, { method: 'DELETE' })).status).toBe(204);
  });
});
