// Storage pools through the HTTP API on both databases: the default pools, adding a pool (and every way a
// path can be unusable), lookups, and deletion refused while the pool holds a replica.
import { execFile } from 'node:child_process';
import { chmod, mkdir, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';
import {
  defaultPools,
  exists,
  halfZeroImage,
  mountSmallTmpfs,
  promoteAndWait,
  replicaFile,
  TempDirs,
  templateWithVersion,
  uniqueName,
} from '../helpers/registry-fixtures.ts';

const execFileAsync = promisify(execFile);

const USAGE_FIELDS = ['capacityBytes', 'usedBytes', 'freeBytes', 'replicaBytes', 'cloneBytes'] as const;

interface ReadOnlyDir {
  path: string;
  how: string;
  release(): Promise<void>;
}

async function writeFails(dir: string): Promise<boolean> {
  try {
    await writeFile(path.join(dir, '.probe'), '');
    return false;
  } catch {
    return true;
  }
}

/**
 * A directory the server process really cannot write to. Tests run as root, which ignores mode bits, so
 * for root the directory becomes a read-only tmpfs mount point (or, without CAP_SYS_ADMIN, an immutable
 * directory via chattr +i). Returns undefined when none of that is possible here.
 */
async function makeReadOnlyDir(parent: string): Promise<ReadOnlyDir | undefined> {
  const dir = path.join(parent, 'read-only');
  await mkdir(dir);
  if (process.getuid?.() !== 0) {
    await chmod(dir, 0o555);
    if (await writeFails(dir)) return { path: dir, how: 'chmod 0555', release: () => chmod(dir, 0o755) };
    return undefined;
  }
  try {
    await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', dir]);
    if (await writeFails(dir)) return { path: dir, how: 'read-only tmpfs mount', release: async () => void (await execFileAsync('umount', [dir])) };
    await execFileAsync('umount', [dir]);
  } catch {
    // no CAP_SYS_ADMIN: try the immutable attribute instead
  }
  try {
    await execFileAsync('chattr', ['+i', dir]);
    if (await writeFails(dir)) return { path: dir, how: 'chattr +i', release: async () => void (await execFileAsync('chattr', ['-i', dir])) };
    await execFileAsync('chattr', ['-i', dir]);
  } catch {
    // filesystem without attributes
  }
  return undefined;
}

describe.each(DATABASE_KINDS)('storage pools (%s)', (kind) => {
  let t: TestThicket;
  const temp = new TempDirs();

  beforeAll(async () => {
    t = await startTestThicket(kind);
  });
  afterAll(async () => {
    await t?.destroy();
    await temp.cleanup();
  });

  it('lists the fast and capacity pools created on first start, with tiers, paths and usage', async () => {
    const { status, body } = await t.json('GET', '/api/v1/storage-pools');
    expect(status).toBe(200);
    expect(Array.isArray(body)).toBe(true);
    const byName = new Map(body.map((p: any) => [p.name, p]));
    for (const name of ['fast', 'capacity']) {
      const pool: any = byName.get(name);
      expect(pool, `pool ${name}`).toBeDefined();
      expect(pool.tier).toBe(name);
      expect(pool.path).toBe(path.join(t.dataDir, 'pools', name));
      expect(pool.id).toMatch(/^[0-9a-f-]{36}$/);
      expect((await stat(pool.path)).isDirectory()).toBe(true);
      expect((await stat(path.join(pool.path, 'replicas'))).isDirectory()).toBe(true);
      expect((await stat(path.join(pool.path, 'clones'))).isDirectory()).toBe(true);
      for (const field of USAGE_FIELDS) expect(typeof pool.usage[field], `${name}.usage.${field}`).toBe('number');
      expect(pool.usage.capacityBytes).toBeGreaterThan(0);
      expect(pool.usage.freeBytes).toBeGreaterThan(0);
      expect(pool.usage.freeBytes).toBeLessThanOrEqual(pool.usage.capacityBytes);
      expect(pool.usage.usedBytes).toBeGreaterThan(0);
      expect(pool.usage.usedBytes).toBeLessThanOrEqual(pool.usage.capacityBytes);
      expect(pool.usage.replicaBytes).toBe(0);
      expect(pool.usage.cloneBytes).toBe(0);
    }
  });

  it('returns one pool with its usage by id', async () => {
    const { fast } = await defaultPools(t);
    const { status, body } = await t.json('GET', `/api/v1/storage-pools/${fast.id}`);
    expect(status).toBe(200);
    expect(body).toMatchObject({ id: fast.id, name: 'fast', tier: 'fast', path: fast.path });
    for (const field of USAGE_FIELDS) expect(typeof body.usage[field]).toBe('number');
  });

  it('adds a pool on a writable directory with 201 and prepares its replicas/ and clones/ directories', async () => {
    const dir = await temp.make();
    const name = uniqueName('pool');
    const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name, path: dir, tier: 'archive' });
    expect(status).toBe(201);
    expect(body).toMatchObject({ name, path: dir, tier: 'archive', replicaCount: 0, cloneCount: 0 });
    expect(body.id).toMatch(/^[0-9a-f-]{36}$/);
    for (const field of USAGE_FIELDS) expect(typeof body.usage[field]).toBe('number');
    expect(body.usage.capacityBytes).toBeGreaterThan(0);
    expect((await stat(path.join(dir, 'replicas'))).isDirectory()).toBe(true);
    expect((await stat(path.join(dir, 'clones'))).isDirectory()).toBe(true);

    const got = await t.json('GET', `/api/v1/storage-pools/${body.id}`);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ id: body.id, name, path: dir, tier: 'archive' });
    const list = await t.json('GET', '/api/v1/storage-pools');
    expect(list.body.map((p: any) => p.id)).toContain(body.id);
  });

  it('stores a pool path without its trailing slash', async () => {
    const dir = await temp.make();
    const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: `${dir}/`, tier: 'fast' });
    expect(status).toBe(201);
    expect(body.path).toBe(dir);
  });

  it('rejects a path that does not exist with 400 naming the path', async () => {
    const dir = await temp.make();
    const missing = path.join(dir, 'no-such-dir');
    const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: missing, tier: 'fast' });
    expect(status).toBe(400);
    expect(body.error.code).toBe('INVALID_STORAGE_POOL_PATH');
    expect(body.error.message).toMatch(/^path: .*does not exist/);
    expect(body.error.details).toMatchObject({ field: 'path', path: missing });
    expect(await exists(missing)).toBe(false);
  });

  it('rejects a path that is a file, not a directory, with 400', async () => {
    const dir = await temp.make();
    const file = path.join(dir, 'a-file');
    await writeFile(file, 'not a directory');
    const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: file, tier: 'fast' });
    expect(status).toBe(400);
    expect(body.error.code).toBe('INVALID_STORAGE_POOL_PATH');
    expect(body.error.message).toMatch(/not a directory/);
    expect(body.error.details.field).toBe('path');
  });

  it('rejects a relative path with 400', async () => {
    for (const relative of ['pools/extra', './pools', '../tmp', 'tmp']) {
      const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: relative, tier: 'fast' });
      expect(status, relative).toBe(400);
      expect(body.error.code).toBe('INVALID_STORAGE_POOL_PATH');
      expect(body.error.message).toMatch(/absolute/);
      expect(body.error.details.field).toBe('path');
    }
  });

  it('rejects a directory the appliance cannot write to with 400', async (ctx) => {
    const parent = await temp.make();
    const ro = await makeReadOnlyDir(parent);
    // Without root's mount/chattr and without an unprivileged user there is no honest read-only directory.
    if (!ro) ctx.skip();
    try {
      const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: ro!.path, tier: 'fast' });
      expect(status, ro!.how).toBe(400);
      expect(body.error.code).toBe('INVALID_STORAGE_POOL_PATH');
      expect(body.error.message).toMatch(/not writable/);
      expect(body.error.details.field).toBe('path');
      const list = await t.json('GET', '/api/v1/storage-pools');
      expect(list.body.map((p: any) => p.path)).not.toContain(ro!.path);
    } finally {
      await ro!.release();
    }
  });

  it('refuses a pool on a device too small to hold it without answering 500', async (ctx) => {
    const dir = await temp.make();
    const small = await mountSmallTmpfs(dir, 1024 * 1024);
    if (!small) ctx.skip();
    try {
      const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('tiny'), path: dir, tier: 'fast' });
      // A device that cannot take even the pool's own bookkeeping (the engine's journal) is refused.
      expect(status, JSON.stringify(body)).not.toBe(500);
      if (status !== 201) {
        expect(body.error.code).toBe('INSUFFICIENT_SPACE');
        expect(body.error.details.field).toBe('path');
        expect((await t.json('GET', '/api/v1/storage-pools')).body.map((p: any) => p.path)).not.toContain(dir);
      }
    } finally {
      await small!.release();
    }
  });

  it('rejects a second pool with the same name with 409 NAME_TAKEN', async () => {
    const name = uniqueName('pool');
    const first = await t.json('POST', '/api/v1/storage-pools', { name, path: await temp.make(), tier: 'fast' });
    expect(first.status).toBe(201);
    const second = await t.json('POST', '/api/v1/storage-pools', { name, path: await temp.make(), tier: 'fast' });
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe('NAME_TAKEN');
    expect(second.body.error.details.field).toBe('name');
    const defaults = await t.json('POST', '/api/v1/storage-pools', { name: 'fast', path: await temp.make(), tier: 'fast' });
    expect(defaults.status).toBe(409);
    expect(defaults.body.error.code).toBe('NAME_TAKEN');
  });

  it('rejects a pool on a path another pool uses or overlaps with 409', async () => {
    const dir = await temp.make();
    expect((await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: dir, tier: 'fast' })).status).toBe(201);
    const same = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: dir, tier: 'fast' });
    expect(same.status).toBe(409);
    expect(same.body.error.details.field).toBe('path');
    const inside = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: path.join(dir, 'replicas'), tier: 'fast' });
    expect(inside.status).toBe(409);
    expect(inside.body.error.details.field).toBe('path');
    const { fast } = await defaultPools(t);
    const parentOfDefault = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: path.dirname(fast.path), tier: 'fast' });
    expect(parentOfDefault.status).toBe(409);
  });

  it('rejects a pool reached through a symbolic link to another pool\'s directory with 409', async () => {
    // Two pools sharing a directory would each take the other's replica files for orphans at start-up.
    const { fast } = await defaultPools(t);
    const dir = await temp.make();
    const same = path.join(dir, 'link-to-fast');
    const inside = path.join(dir, 'link-to-fast-replicas');
    await symlink(fast.path, same);
    await symlink(path.join(fast.path, 'replicas'), inside);
    for (const p of [same, inside]) {
      const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: p, tier: 'fast' });
      expect(status, p).toBe(409);
      expect(body.error.code).toBe('CONFLICT');
      expect(body.error.details.field).toBe('path');
    }
  });

  it('rejects a pool inside Thicket\'s own data directory, except under pools/', async () => {
    for (const p of [t.dataDir, path.join(t.dataDir, 'templates'), path.join(t.dataDir, 'db')]) {
      await mkdir(p, { recursive: true });
      const { status, body } = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: p, tier: 'fast' });
      expect(status, p).toBeGreaterThanOrEqual(400);
      expect(status, p).toBeLessThan(500);
      expect(body.error.details.field).toBe('path');
      expect(await exists(path.join(p, 'replicas')), `${p}/replicas`).toBe(false);
    }
    const extra = path.join(t.dataDir, 'pools', 'extra');
    await mkdir(extra);
    const ok = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: extra, tier: 'archive' });
    expect(ok.status).toBe(201);
  });

  it('reports a pool whose directory has vanished with zero capacity instead of failing', async () => {
    const dir = await temp.make();
    const created = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: dir, tier: 'fast' });
    expect(created.status).toBe(201);
    await rm(dir, { recursive: true, force: true });
    const { status, body } = await t.json('GET', `/api/v1/storage-pools/${created.body.id}`);
    expect(status).toBe(200);
    expect(body.usage).toMatchObject({ capacityBytes: 0, freeBytes: 0 });
    expect((await t.json('GET', '/api/v1/storage-pools')).status).toBe(200);
    expect((await t.api(`/api/v1/storage-pools/${created.body.id}`, { method: 'DELETE' })).status).toBe(204);
  });

  it('rejects missing, wrong-typed and unknown fields with 400 naming the field', async () => {
    const dir = await temp.make();
    const cases: Array<[unknown, string]> = [
      [{ path: dir, tier: 'fast' }, 'name'],
      [{ name: uniqueName('p'), tier: 'fast' }, 'path'],
      [{ name: uniqueName('p'), path: dir }, 'tier'],
      [{ name: 42, path: dir, tier: 'fast' }, 'name'],
      [{ name: uniqueName('p'), path: ['/tmp'], tier: 'fast' }, 'path'],
      [{ name: uniqueName('p'), path: dir, tier: null }, 'tier'],
      [{ name: '', path: dir, tier: 'fast' }, 'name'],
      [{ name: 'has space', path: dir, tier: 'fast' }, 'name'],
      [{ name: 'x'.repeat(65), path: dir, tier: 'fast' }, 'name'],
      [{ name: uniqueName('p'), path: '', tier: 'fast' }, 'path'],
      [{ name: uniqueName('p'), path: dir, tier: 'FAST' }, 'tier'],
      [{ name: uniqueName('p'), path: dir, tier: 'fast', extra: 1 }, '(body)'],
      [[1, 2], '(body)'],
      ['"a string"', '(body)'],
    ];
    for (const [input, field] of cases) {
      const { status, body } = await t.json('POST', '/api/v1/storage-pools', input);
      expect(status, JSON.stringify(input)).toBe(400);
      expect(body.error.code).toBe('VALIDATION_FAILED');
      expect(body.error.details.map((d: any) => d.field), JSON.stringify(input)).toContain(field);
      expect(body.error.message).toContain(field);
    }
  });

  it('rejects malformed JSON with 400 INVALID_JSON', async () => {
    for (const text of ['{"name": "x",', 'not json', '']) {
      const { status, body } = await t.json('POST', '/api/v1/storage-pools', text === '' ? undefined : text);
      expect(status, text).toBe(400);
      expect(body.error.code).toBe('INVALID_JSON');
    }
  });

  it('answers 404 for an unknown pool id and for a malformed id', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid', '1', "'; DROP TABLE storage_pools; --"]) {
      const get = await t.json('GET', `/api/v1/storage-pools/${encodeURIComponent(id)}`);
      expect(get.status, id).toBe(404);
      expect(get.body.error.code).toBe('STORAGE_POOL_NOT_FOUND');
      const del = await t.json('DELETE', `/api/v1/storage-pools/${encodeURIComponent(id)}`);
      expect(del.status, id).toBe(404);
      expect(del.body.error.code).toBe('STORAGE_POOL_NOT_FOUND');
    }
    const { status } = await t.json('GET', '/api/v1/storage-pools');
    expect(status).toBe(200);
  });

  it('deletes an empty pool with 204; it is gone afterwards', async () => {
    const dir = await temp.make();
    const created = await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: dir, tier: 'fast' });
    expect(created.status).toBe(201);
    const res = await t.api(`/api/v1/storage-pools/${created.body.id}`, { method: 'DELETE' });
    expect(res.status).toBe(204);
    expect(await res.text()).toBe('');
    // Nothing Thicket made is left in the operator's directory (the engine's journal included).
    expect(await readdir(dir)).toEqual([]);
    expect((await t.json('GET', `/api/v1/storage-pools/${created.body.id}`)).status).toBe(404);
    const list = await t.json('GET', '/api/v1/storage-pools');
    expect(list.body.map((p: any) => p.id)).not.toContain(created.body.id);
    // The path is free again.
    expect((await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: dir, tier: 'fast' })).status).toBe(201);
  });

  it('refuses to delete a pool with 409 STORAGE_POOL_IN_USE while it holds a replica, and deletes it once empty', async () => {
    const dir = await temp.make();
    const pool = (await t.json('POST', '/api/v1/storage-pools', { name: uniqueName('pool'), path: dir, tier: 'capacity' })).body;
    const image = halfZeroImage(256 * 1024 + 100);
    const { version } = await templateWithVersion(t, image);
    const { job, replica } = await promoteAndWait(t, version.id, pool.id);
    expect(job.state).toBe('succeeded');
    expect(replica.state).toBe('ready');
    expect(await exists(replicaFile(dir, replica.id))).toBe(true);

    const usage = (await t.json('GET', `/api/v1/storage-pools/${pool.id}`)).body;
    expect(usage.replicaCount).toBe(1);
    expect(usage.usage.replicaBytes).toBe(version.sizeBytes);
    expect(usage.usage.cloneBytes).toBe(0);

    const refused = await t.json('DELETE', `/api/v1/storage-pools/${pool.id}`);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('STORAGE_POOL_IN_USE');
    expect(refused.body.error.details).toMatchObject({ replicas: 1, clones: 0 });
    expect((await t.json('GET', `/api/v1/storage-pools/${pool.id}`)).status).toBe(200);
    expect(await exists(replicaFile(dir, replica.id))).toBe(true);

    expect((await t.api(`/api/v1/replicas/${replica.id}`, { method: 'DELETE' })).status).toBe(204);
    const emptied = (await t.json('GET', `/api/v1/storage-pools/${pool.id}`)).body;
    expect(emptied.replicaCount).toBe(0);
    expect(emptied.usage.replicaBytes).toBe(0);
    const deleted = await t.api(`/api/v1/storage-pools/${pool.id}`, { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    expect((await t.json('GET', `/api/v1/storage-pools/${pool.id}`)).status).toBe(404);
  });
});
