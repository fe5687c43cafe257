// The `thicket` CLI against a running Thicket: every command group, --json output and the exit code of
// a failed job.
import { execFile } from 'node:child_process';
import { chmodSync, closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../../src/thicket.ts';
import { cliRunner } from '../helpers/cli.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const execFileAsync = promisify(execFile);

describe('thicket CLI', () => {
  let t: TestThicket;
  const ids: Record<string, string> = {};

  const { cli, json } = cliRunner(() => t);

  beforeAll(async () => {
    t = await startTestThicket('pglite');
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('prints help for everything and for one command', async () => {
    const { stdout } = await execFileAsync(path.join(ROOT, 'node_modules/.bin/node'), [path.join(ROOT, 'bin/thicket.js'), '--help']);
    for (const group of ['templates', 'versions', 'replicas', 'storage-pools', 'clones', 'hosts', 'subsystems', 'pools', 'jobs']) expect(stdout).toContain(`thicket ${group} `);
    const one = await cli('pools', 'create', '--help');
    expect(one.out).toMatch(/usage: thicket pools create NAME/);
  });

  it('refuses an unknown command with exit code 2', async () => {
    expect((await cli('frobnicate')).code).toBe(2);
  });

  it('manages storage pools, templates, versions, replicas and clones', async () => {
    const pools = await json('storage-pools', 'list');
    ids.fast = pools.find((p: any) => p.name === 'fast').id;
    ids.capacity = pools.find((p: any) => p.name === 'capacity').id;
    const human = await cli('storage-pools', 'list');
    expect(human.out).toMatch(/^ID\s+NAME\s+TIER/);
    const tpl = await json('templates', 'create', 'golden', '--description', 'test image');
    ids.template = tpl.id;
    const img = path.join(t.dataDir, 'cli.img');
    writeFileSync(img, Buffer.alloc(3 * 1024 * 1024 + 5, 7));
    const v = await json('versions', 'add', tpl.id, img);
    expect(v).toMatchObject({ version: 1, sizeBytes: 3 * 1024 * 1024 + 4096, format: 'raw' });
    const promoted = await json('replicas', 'promote', v.id, ids.capacity);
    expect(promoted.job.state).toBe('succeeded');
    expect(promoted.replica.state).toBe('ready'); // read again after the job, not the 'creating' snapshot
    ids.replica = promoted.replica.id;
    expect((await json('replicas', 'show', ids.replica)).state).toBe('ready');
    const clone = await json('clones', 'create', ids.replica, ids.fast, 'cli-clone', '--iops', '100');
    expect(clone.qos.iops).toBe(100);
    expect((await json('clones', 'qos', clone.id, '--iops', 'none')).qos.iops).toBeNull();
    expect((await json('clones', 'list')).map((c: any) => c.name)).toContain('cli-clone');
    const refused = await cli('replicas', 'delete', ids.replica);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('REPLICA_IN_USE');
    expect((await cli('clones', 'delete', clone.id)).code).toBe(0);
  });

  it('manages hosts, subsystems and exports', async () => {
    const host = await json('hosts', 'create', 'hv', 'nqn.2014-08.org.nvmexpress:uuid:eeeeeeee-0000-4000-8000-000000000005', '--max-desktops', '12');
    ids.host = host.id;
    expect(host.maxDesktops).toBe(12);
    const updated = await json('hosts', 'update', host.id, '--name', 'hv-renamed', '--max-desktops', 'none');
    expect(updated).toMatchObject({ id: host.id, name: 'hv-renamed', maxDesktops: null });
    expect((await cli('hosts', 'update', host.id)).code).not.toBe(0);
    await json('hosts', 'update', host.id, '--name', 'hv');
    const sub = await json('subsystems', 'create', 'cli-sub');
    expect(sub.nqn).toBe('nqn.2026-11.io.thicket:cli-sub');
    await json('subsystems', 'allow', sub.id, host.id);
    const clone = await json('clones', 'create', ids.replica, ids.fast, 'cli-export');
    const ns = await json('subsystems', 'export', sub.id, clone.id);
    expect(ns.nsid).toBe(1);
    expect((await json('subsystems', 'show', sub.id)).namespaces).toHaveLength(1);
    await json('subsystems', 'unexport', sub.id, '1');
    await json('subsystems', 'disallow', sub.id, host.id);
    await json('subsystems', 'delete', sub.id);
    await json('clones', 'delete', clone.id);
  });

  it('runs desktop pools and jobs, and exits 1 when a job fails', async () => {
    const created = await json('pools', 'create', 'cli-pool', '--replica', ids.replica, '--storage-pool', ids.fast, '--size', '5', '--pattern', 'd-{n:00}', '--hosts', ids.host);
    expect(created.job.state).toBe('succeeded');
    expect(created.pool.desktops.total).toBe(5);
    const poolId = created.pool.id;
    expect((await json('pools', 'desktops', poolId)).map((d: any) => d.name)).toEqual(['d-01', 'd-02', 'd-03', 'd-04', 'd-05']);
    expect((await json('pools', 'state', poolId, 'd-01', 'in-use')).state).toBe('in-use');
    expect((await json('pools', 'refresh', poolId)).job.state).toBe('succeeded');
    const resized = await json('pools', 'resize', poolId, '3');
    expect(resized.job.state).toBe('succeeded');
    expect(resized.pool.desktops.total).toBe(3);
    expect((await json('pools', 'show', poolId)).size).toBe(3);
    expect((await json('jobs', 'list')).length).toBeGreaterThan(0);
    const failedPool = await cli('pools', 'create', 'cli-pool', '--replica', ids.replica, '--storage-pool', ids.fast, '--size', '1', '--pattern', 'x-{n}', '--json');
    expect(failedPool.code).toBe(1);
    expect(JSON.parse(failedPool.out).error.code).toBe('NAME_TAKEN');
    // A verification of a replica whose file was damaged fails: the CLI exits 1.
    const pools = await json('storage-pools', 'list');
    const capacityPath = pools.find((p: any) => p.id === ids.capacity).path;
    const file = path.join(capacityPath, 'replicas', `${ids.replica}.img`);
    chmodSync(file, 0o644);
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.from('damage'), 0, 6, 12345);
    closeSync(fd);
    const verify = await cli('replicas', 'verify', ids.replica, '--json');
    expect(verify.code).toBe(1);
    expect(JSON.parse(verify.out).job).toMatchObject({ state: 'failed', error: { code: 'REPLICA_CORRUPT' } });
    expect((await json('pools', 'delete', poolId)).job.state).toBe('succeeded');
  });
});
