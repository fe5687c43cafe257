// A replica moves to another storage pool while its clones serve reads and writes over NVMe/TCP.
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const MiB = 1024 * 1024;
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:feedface-0000-4000-8000-000000000006';

describe('replica move under live clones', () => {
  let t: TestThicket;
  beforeAll(async () => {
    t = await startTestThicket('pglite');
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('keeps every clone reading the same bytes and keeping its writes while the replica moves', async () => {
    const image = randomBytes(32 * MiB);
    const img = path.join(t.dataDir, 'g.img');
    writeFileSync(img, image);
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as any[];
    const fast = pools.find((p) => p.name === 'fast');
    const cap = pools.find((p) => p.name === 'capacity');
    const tpl = (await t.json('POST', '/api/v1/templates', { name: 'g' })).body;
    const v = (await t.json('POST', `/api/v1/templates/${tpl.id}/versions`, { sourcePath: img, format: 'raw' })).body;
    const r = (await t.json('POST', '/api/v1/replicas', { templateVersionId: v.id, storagePoolId: cap.id })).body;
    await t.waitForJob(r.job.id);
    const host = (await t.json('POST', '/api/v1/hosts', { name: 'h', nqn: HOSTNQN })).body;
    const sub = (await t.json('POST', '/api/v1/subsystems', { name: 'move' })).body;
    await t.json('POST', `/api/v1/subsystems/${sub.id}/hosts`, { hostId: host.id });
    const clones = [];
    for (const name of ['m1', 'm2']) {
      const c = (await t.json('POST', '/api/v1/clones', { replicaId: r.replica.id, storagePoolId: fast.id, name })).body;
      await t.json('POST', `/api/v1/subsystems/${sub.id}/namespaces`, { cloneId: c.id });
      clones.push(c);
    }
    const nvme = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: sub.nqn, hostnqn: HOSTNQN, ioQueues: 2 });
    const written = new Map<number, Buffer>();
    let stop = false;
    let ops = 0;
    const io = (async () => {
      for (let i = 0; i < 1_000_000 && !stop; i++) {
        const lba = (i * 97) % 8192;
        if (i % 3 === 0) {
          const data = randomBytes(4096);
          await nvme.write(1, lba, data);
          written.set(lba, data);
        } else {
          const got = await nvme.read(2, lba, 1);
          expect(got.equals(image.subarray(lba * 4096, (lba + 1) * 4096))).toBe(true);
        }
        ops++;
      }
    })();
    const move = (await t.json('POST', `/api/v1/replicas/${r.replica.id}/move`, { storagePoolId: fast.id })).body;
    const job = await t.waitForJob(move.job.id, 60_000);
    await new Promise((res) => setTimeout(res, 200));
    stop = true;
    await io;
    expect(job.state).toBe('succeeded');
    expect(ops).toBeGreaterThan(10);
    expect((await t.json('GET', `/api/v1/replicas/${r.replica.id}`)).body.storagePoolId).toBe(fast.id);
    expect(existsSync(path.join(cap.path, 'replicas', `${r.replica.id}.img`))).toBe(false);
    for (const [lba, data] of written) expect((await nvme.read(1, lba, 1)).equals(data)).toBe(true);
    expect((await nvme.read(2, 0, 256)).equals(image.subarray(0, MiB))).toBe(true);
    await nvme.close();
  });
});
