// Hosts, subsystems and namespaces through the API, checked with the TypeScript NVMe/TCP host against
// the target of a whole Thicket, on both databases.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CNS, DISCOVERY_NQN } from '../../src/nvmeof/protocol/constants.ts';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const MiB = 1024 * 1024;
const HOST_A = 'nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001';
const HOST_B = 'nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002';

describe.each(DATABASE_KINDS)('exports over NVMe/TCP (%s)', (kind) => {
  let t: TestThicket;
  let replicaId: string;
  let fastPool: string;
  let image: Buffer;
  let hostA: string;
  let hostB: string;

  const connect = (subnqn: string, hostnqn = HOST_A) =>
    NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn, hostnqn, ioQueues: 2 });

  beforeAll(async () => {
    t = await startTestThicket(kind);
    image = randomBytes(2 * MiB);
    const img = path.join(t.dataDir, 'golden.img');
    writeFileSync(img, image);
    const tpl = await t.json('POST', '/api/v1/templates', { name: 'golden' });
    const v = await t.json('POST', `/api/v1/templates/${tpl.body.id}/versions`, { sourcePath: img, format: 'raw' });
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string }>;
    fastPool = pools.find((p) => p.name === 'fast')!.id;
    const r = await t.json('POST', '/api/v1/replicas', { templateVersionId: v.body.id, storagePoolId: pools.find((p) => p.name === 'capacity')!.id });
    await t.waitForJob(r.body.job.id);
    replicaId = r.body.replica.id;
    hostA = (await t.json('POST', '/api/v1/hosts', { name: 'hv-a', nqn: HOST_A })).body.id;
    hostB = (await t.json('POST', '/api/v1/hosts', { name: 'hv-b', nqn: HOST_B })).body.id;
  });

  afterAll(async () => {
    await t?.destroy();
  });

  it('rejects an invalid host NQN with 400 naming nqn', async () => {
    const res = await t.json('POST', '/api/v1/hosts', { name: 'bad', nqn: 'not-an-nqn' });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(/^nqn/);
  });

  it('exports clones that read the replica and keep their writes to themselves', async () => {
    const sub = await t.json('POST', '/api/v1/subsystems', { name: 'pool-1' });
    expect(sub.status).toBe(201);
    expect(sub.body.nqn).toBe('nqn.2026-11.io.thicket:pool-1');
    await t.json('POST', `/api/v1/subsystems/${sub.body.id}/hosts`, { hostId: hostA });
    const c1 = (await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: 'vm-1' })).body;
    const c2 = (await t.json('POST', '/api/v1/clones', { replicaId, storagePoolId: fastPool, name: 'vm-2' })).body;
    const n1 = await t.json('POST', `/api/v1/subsystems/${sub.body.id}/namespaces`, { cloneId: c1.id });
    const n2 = await t.json('POST', `/api/v1/subsystems/${sub.body.id}/namespaces`, { cloneId: c2.id });
    expect(n1.status).toBe(201);
    expect(n1.body).toMatchObject({ nsid: 1, uuid: c1.id });
    expect(n1.body.nguid).toMatch(/^[0-9a-f]{32}$/);
    expect(n2.body.nsid).toBe(2);

    const host = await connect(sub.body.nqn);
    try {
      expect(await host.activeNamespaces()).toEqual([1, 2]);
      const desc = await host.identify(CNS.NamespaceDescriptors, 1);
      expect(desc.subarray(4, 20).toString('hex')).toBe(c1.id.replace(/-/g, ''));
      for (const nsid of [1, 2]) expect((await host.read(nsid, 0, 256)).equals(image.subarray(0, MiB))).toBe(true);
      const data = randomBytes(64 * 1024);
      await host.write(1, 16, data);
      await host.flush(1);
      expect((await host.read(1, 16, 16)).equals(data)).toBe(true);
      expect((await host.read(2, 16, 16)).equals(image.subarray(16 * 4096, 32 * 4096))).toBe(true);
    } finally {
      await host.close();
    }
    const clone = await t.json('GET', `/api/v1/clones/${c1.id}`);
    expect(clone.body.uniqueBytes).toBe(64 * 1024);

    const del = await t.json('DELETE', `/api/v1/clones/${c1.id}`);
    expect(del.status).toBe(409);
    expect(del.body.error.code).toBe('CLONE_EXPORTED');
    const again = await t.json('POST', `/api/v1/subsystems/${sub.body.id}/namespaces`, { cloneId: c1.id });
    expect(again.status).toBe(409);
  });

  it('shows a subsystem only to allowed hosts in discovery and refuses others at connect', async () => {
    const list = (await t.json('GET', '/api/v1/subsystems')).body as Array<{ nqn: string }>;
    const d = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.discoveryPort, subnqn: DISCOVERY_NQN, hostnqn: HOST_A, katoMs: 0 });
    expect((await d.discoveryLog()).map((e) => e.subnqn)).toEqual(list.map((s) => s.nqn));
    await d.close();
    const e = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.discoveryPort, subnqn: DISCOVERY_NQN, hostnqn: HOST_B, katoMs: 0 });
    expect(await e.discoveryLog()).toEqual([]);
    await e.close();
    await expect(connect(list[0].nqn, HOST_B)).rejects.toThrow(/SC 0x84/);
  });

  it('keeps exports with the same ids across a restart', async () => {
    const sub = (await t.json('GET', '/api/v1/subsystems')).body[0];
    const before = (await t.json('GET', `/api/v1/subsystems/${sub.id}`)).body.namespaces;
    await t.stop();
    await t.restart();
    const after = (await t.json('GET', `/api/v1/subsystems/${sub.id}`)).body.namespaces;
    expect(after).toEqual(before);
    const host = await connect(sub.nqn);
    try {
      expect(await host.activeNamespaces()).toEqual(before.map((n: { nsid: number }) => n.nsid));
    } finally {
      await host.close();
    }
  });

  it('changes a host by PATCH: name and limit at once, its NQN only while no subsystem allows it', async () => {
    const nqnC = 'nqn.2014-08.org.nvmexpress:uuid:cccccccc-0000-4000-8000-000000000001';
    const nqnD = 'nqn.2014-08.org.nvmexpress:uuid:cccccccc-0000-4000-8000-000000000002';
    const h = (await t.json('POST', '/api/v1/hosts', { name: 'hv-c', nqn: nqnC })).body;
    const renamed = await t.json('PATCH', `/api/v1/hosts/${h.id}`, { name: 'hv-c2', maxDesktops: 40 });
    expect(renamed.status).toBe(200);
    expect(renamed.body).toMatchObject({ id: h.id, name: 'hv-c2', nqn: nqnC, maxDesktops: 40, ssh: null });
    expect((await t.json('GET', `/api/v1/hosts/${h.id}`)).body).toMatchObject({ name: 'hv-c2', maxDesktops: 40 });
    expect((await t.json('PATCH', `/api/v1/hosts/${h.id}`, { maxDesktops: null })).body.maxDesktops).toBeNull();
    // Bad input: nothing to change, an unknown field, an invalid NQN, a taken name, a hook type without SSH.
    for (const body of [{}, { colour: 'red' }, { nqn: 'not-an-nqn' }, { hookType: 'libvirt' }]) {
      const res = await t.json('PATCH', `/api/v1/hosts/${h.id}`, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.message.length).toBeGreaterThan(5);
    }
    expect((await t.json('PATCH', `/api/v1/hosts/${h.id}`, { name: 'hv-b' })).body.error.code).toBe('NAME_TAKEN');
    expect((await t.json('PATCH', '/api/v1/hosts/00000000-0000-4000-8000-000000000000', { name: 'x' })).status).toBe(404);
    // The NQN: free to change while no subsystem allows the host, refused once one does.
    expect((await t.json('PATCH', `/api/v1/hosts/${h.id}`, { nqn: nqnD })).body.nqn).toBe(nqnD);
    const sub = (await t.json('POST', '/api/v1/subsystems', { name: `patch-${kind}` })).body;
    expect((await t.json('POST', `/api/v1/subsystems/${sub.id}/hosts`, { hostId: h.id })).status).toBe(200);
    const refused = await t.json('PATCH', `/api/v1/hosts/${h.id}`, { nqn: nqnC });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('HOST_IN_USE');
    expect((await t.json('GET', `/api/v1/hosts/${h.id}`)).body.nqn).toBe(nqnD);
    expect((await t.json('PATCH', `/api/v1/hosts/${h.id}`, { name: 'hv-c3' })).status).toBe(200);
    expect((await t.json('DELETE', `/api/v1/subsystems/${sub.id}`)).status).toBe(204);
    expect((await t.json('DELETE', `/api/v1/hosts/${h.id}`)).status).toBe(204);
  });

  it('refuses to delete a host that is allowed somewhere, then disallows and deletes it', async () => {
    const sub = (await t.json('GET', '/api/v1/subsystems')).body[0];
    expect((await t.json('DELETE', `/api/v1/hosts/${hostA}`)).status).toBe(409);
    expect((await t.json('DELETE', `/api/v1/subsystems/${sub.id}/hosts/${hostA}`)).status).toBe(204);
    expect((await t.json('DELETE', `/api/v1/hosts/${hostA}`)).status).toBe(204);
  });
});
