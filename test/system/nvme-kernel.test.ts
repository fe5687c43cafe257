// Thicket's NVMe/TCP target against the real Linux host driver (nvme-tcp, nvme-cli, fio, ext4) in a QEMU
// guest. Thicket runs as a child process on the host; the guest reaches its loopback at 10.0.2.2.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ThicketProcess } from '../helpers/thicket-process.ts';
import { Guest, randomHostNqn } from './guest/guest.ts';

const MiB = 1024 * 1024;
const BOOT_TIMEOUT_MS = 15 * 60_000;
const TEST_TIMEOUT_MS = 6 * 60_000;

// Shell functions available to every guest command: find a namespace's block device by its UUID.
const SH = `
dev_for() { for d in /sys/block/nvme*; do n=\${d##*/}; case $n in *c*) continue;; esac; [ -r $d/uuid ] || continue; [ "$(cat $d/uuid)" = "$1" ] && { echo /dev/$n; return 0; }; done; return 1; }
wait_dev() { i=0; while [ $i -lt $2 ]; do dev_for $1 && return 0; sleep 0.5; i=$((i+1)); done; return 1; }
wait_gone() { i=0; while [ $i -lt $2 ]; do dev_for $1 >/dev/null || return 0; sleep 0.5; i=$((i+1)); done; return 1; }
`;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.sequential('NVMe/TCP target with the Linux kernel initiator', { timeout: TEST_TIMEOUT_MS }, () => {
  let guest: Guest;
  let thicket: ThicketProcess;
  const hostNqn = randomHostNqn();
  const otherNqn = randomHostNqn();
  const image = randomBytes(8 * MiB);
  const ids: Record<string, any> = {};
  let subA: { id: string; nqn: string };
  let subB: { id: string; nqn: string };

  const g = (script: string, timeoutMs = 60_000) => guest.check(`${SH}\n${script}`, timeoutMs);
  const gr = (script: string, timeoutMs = 60_000) => guest.run(`${SH}\n${script}`, timeoutMs);
  const api = (m: string, p: string, b?: unknown) => thicket.json(m, p, b);
  const connectCmd = (nqn: string, extra = '') =>
    `nvme connect -t tcp -a 10.0.2.2 -s ${thicket.nvmePort} -n ${nqn} --reconnect-delay=1 --ctrl-loss-tmo=120 ${extra}`;

  async function clone(name: string): Promise<any> {
    const c = await api('POST', '/api/v1/clones', { replicaId: ids.replica, storagePoolId: ids.fast, name, sizeBytes: 64 * MiB });
    expect(c.status).toBe(201);
    return c.body;
  }

  beforeAll(async () => {
    thicket = new ThicketProcess({ THICKET_NVME_ADVERTISE_ADDR: '10.0.2.2' });
    const [g0] = await Promise.all([Guest.boot({ hostNqn }), thicket.start()]);
    guest = g0;
    const img = path.join(thicket.dataDir, 'golden.img');
    writeFileSync(img, image);
    const pools = (await api('GET', '/api/v1/storage-pools')).body;
    ids.fast = pools.find((p: any) => p.name === 'fast').id;
    ids.capacity = pools.find((p: any) => p.name === 'capacity').id;
    const tpl = (await api('POST', '/api/v1/templates', { name: 'golden' })).body;
    const v = (await api('POST', `/api/v1/templates/${tpl.id}/versions`, { sourcePath: img, format: 'raw' })).body;
    const r = (await api('POST', '/api/v1/replicas', { templateVersionId: v.id, storagePoolId: ids.capacity })).body;
    expect((await thicket.waitForJob(r.job.id)).state).toBe('succeeded');
    ids.replica = r.replica.id;
    ids.replicaPath = path.join(pools.find((p: any) => p.name === 'capacity').path, 'replicas', `${ids.replica}.img`);
    ids.host = (await api('POST', '/api/v1/hosts', { name: 'guest', nqn: hostNqn })).body.id;
    ids.other = (await api('POST', '/api/v1/hosts', { name: 'other', nqn: otherNqn })).body.id;
    subA = (await api('POST', '/api/v1/subsystems', { name: 'sys-a' })).body;
    subB = (await api('POST', '/api/v1/subsystems', { name: 'sys-b' })).body;
    await api('POST', `/api/v1/subsystems/${subA.id}/hosts`, { hostId: ids.host });
    await api('POST', `/api/v1/subsystems/${subB.id}/hosts`, { hostId: ids.other });
    ids.c1 = await clone('c1');
    ids.c2 = await clone('c2');
    for (const c of [ids.c1, ids.c2]) expect((await api('POST', `/api/v1/subsystems/${subA.id}/namespaces`, { cloneId: c.id })).status).toBe(201);
  }, BOOT_TIMEOUT_MS);

  afterAll(async () => {
    await guest?.run('nvme disconnect-all', 30_000).catch(() => {});
    await guest?.shutdown();
    await thicket?.destroy();
  }, 60_000);

  it('discovery lists exactly the subsystems allowed to the host, at the advertised address', async () => {
    const out = await g(`nvme discover -t tcp -a 10.0.2.2 -s ${thicket.discoveryPort}`);
    expect(out).toContain(subA.nqn);
    expect(out).not.toContain(subB.nqn);
    expect(out).toMatch(/traddr:\s+10\.0\.2\.2/);
    expect(out).toContain(`trsvcid: ${thicket.nvmePort}`);
  });

  it('refuses a host that is not allowed', async () => {
    const r = await gr(`${connectCmd(subA.nqn, `--hostnqn=${otherNqn}`)}`);
    expect(r.code).not.toBe(0);
  });

  it('connects, and nvme list / id-ctrl / id-ns are sane', async () => {
    await g(connectCmd(subA.nqn));
    const devs = await g(`wait_dev ${ids.c1.id} 40 && wait_dev ${ids.c2.id} 40`);
    expect(devs.trim().split('\n')).toHaveLength(2);
    const list = await g('nvme list');
    expect(list).toContain('Thicket');
    const ctrl = await g(`nvme id-ctrl $(dev_for ${ids.c1.id})`);
    expect(ctrl).toMatch(/mn\s+:\s+Thicket/);
    expect(ctrl).toContain(subA.nqn);
    const ns = await g(`nvme id-ns $(dev_for ${ids.c1.id})`);
    expect(ns).toMatch(/nsze\s+:\s+0x4000/); // 64 MiB in 4 KiB blocks
    expect(ns).toMatch(/lbads:12/);
  });

  it('every clone reads back the replica, and zeroes past its end', async () => {
    for (const c of [ids.c1, ids.c2]) {
      const out = await g(`d=$(dev_for ${c.id}); dd if=$d bs=1M count=8 iflag=direct 2>/dev/null | sha256sum; dd if=$d bs=1M skip=8 count=8 iflag=direct 2>/dev/null | sha256sum`);
      const [a, b] = out.trim().split('\n').map((l) => l.split(' ')[0]);
      expect(a).toBe(sha(image));
      expect(b).toBe(sha(Buffer.alloc(8 * MiB)));
    }
  });

  it('a write to one clone never shows in another or in the replica', async () => {
    const before = sha(readFileSync(ids.replicaPath));
    await g(`d=$(dev_for ${ids.c1.id}); dd if=/dev/urandom of=/tmp/w bs=1M count=1 2>/dev/null; dd if=/tmp/w of=$d bs=1M count=1 oflag=direct conv=fsync 2>/dev/null`);
    const out = await g(`dd if=$(dev_for ${ids.c1.id}) of=/tmp/r bs=1M count=1 iflag=direct 2>/dev/null; cmp /tmp/r /tmp/w && echo same; dd if=$(dev_for ${ids.c2.id}) bs=1M count=8 iflag=direct 2>/dev/null | sha256sum`);
    expect(out).toContain('same');
    expect(out).toContain(sha(image));
    expect(sha(readFileSync(ids.replicaPath))).toBe(before);
  });

  it('fio random writes with crc32c verify, 4 KiB to 1 MiB requests (R2T path)', async () => {
    await g(`fio --name=v --filename=$(dev_for ${ids.c1.id}) --rw=randwrite --bsrange=4k-1m --size=24m --offset=32m --direct=1 --ioengine=psync --iodepth=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 >/tmp/fio.log 2>&1 || { cat /tmp/fio.log; exit 1; }`, 300_000);
  });

  it('blkdiscard and blkdiscard -z leave zeroes', async () => {
    const out = await g(`d=$(dev_for ${ids.c2.id}); blkdiscard -o 0 -l 4194304 $d && dd if=$d bs=1M count=4 iflag=direct 2>/dev/null | sha256sum; blkdiscard -z -o 4194304 -l 4194304 $d && dd if=$d bs=1M skip=4 count=4 iflag=direct 2>/dev/null | sha256sum`);
    const zero4 = sha(Buffer.alloc(4 * MiB));
    expect(out.trim().split('\n').map((l) => l.split(' ')[0])).toEqual([zero4, zero4]);
  });

  it('mkfs.ext4, mount, write, sync, unmount, remount and read back', async () => {
    const out = await g(`d=$(dev_for ${ids.c1.id}); mkfs.ext4 -q -F $d && mkdir -p /mnt/a && mount $d /mnt/a && for i in 1 2 3; do dd if=/dev/urandom of=/mnt/a/f$i bs=64k count=8 2>/dev/null; done && (cd /mnt/a && sha256sum f1 f2 f3 > /tmp/sums) && sync && umount /mnt/a && mount $d /mnt/a && (cd /mnt/a && sha256sum -c /tmp/sums)`, 180_000);
    expect(out).toContain('f3: OK');
  });

  it('hot-adds and hot-removes namespaces while connected', async () => {
    ids.c3 = await clone('c3');
    const ns = (await api('POST', `/api/v1/subsystems/${subA.id}/namespaces`, { cloneId: ids.c3.id })).body;
    await g(`wait_dev ${ids.c3.id} 60`);
    expect((await api('DELETE', `/api/v1/subsystems/${subA.id}/namespaces/${ns.nsid}`)).status).toBe(204);
    await g(`wait_gone ${ids.c3.id} 60`);
  });

  it('after kill -9 and a restart, the guest reconnects and synced data is there', async () => {
    await g('echo durable-$RANDOM > /mnt/a/marker && cp /mnt/a/marker /tmp/marker && sync');
    await thicket.kill9();
    await thicket.start();
    // The kernel reconnects on its own (reconnect-delay 1 s); the file system then works again.
    const out = await g('i=0; while [ $i -lt 90 ]; do cat /mnt/a/marker >/dev/null 2>&1 && echo 3 > /proc/sys/vm/drop_caches && cmp /mnt/a/marker /tmp/marker && echo back && break; sleep 1; i=$((i+1)); done', 150_000);
    expect(out).toContain('back');
    await g('umount /mnt/a');
  });

  it('connects with header and data digests', async () => {
    await g('nvme disconnect-all');
    await g(connectCmd(subA.nqn, '--hdr-digest --data-digest'));
    const out = await g(`wait_dev ${ids.c2.id} 40 >/dev/null; d=$(dev_for ${ids.c2.id}); dd if=$d bs=1M skip=8 count=8 iflag=direct 2>/dev/null | sha256sum; dd if=/dev/urandom of=/tmp/x bs=256k count=4 2>/dev/null; dd if=/tmp/x of=$d bs=256k seek=64 oflag=direct 2>/dev/null; dd if=$d of=/tmp/y bs=256k skip=64 count=4 iflag=direct 2>/dev/null; cmp /tmp/x /tmp/y && echo same`);
    expect(out).toContain(sha(Buffer.alloc(8 * MiB)));
    expect(out).toContain('same');
    await g('nvme disconnect-all');
  });

  it("sees a desktop pool's namespaces appear as it grows and vanish when it is deleted", async () => {
    const created = (await api('POST', '/api/v1/desktop-pools', { name: 'vdi', replicaId: ids.replica, storagePoolId: ids.fast, size: 3, namePattern: 'vdi-{n}', hostIds: [ids.host] })).body;
    expect((await thicket.waitForJob(created.job.id)).state).toBe('succeeded');
    const nqn = created.pool.subsystems?.[0]?.nqn ?? 'nqn.2026-11.io.thicket:vdi';
    await g(connectCmd(nqn));
    const first = (await api('GET', `/api/v1/desktop-pools/${created.pool.id}/desktops`)).body;
    for (const d of first) await g(`wait_dev ${d.uuid} 40`);
    const grow = (await api('PATCH', `/api/v1/desktop-pools/${created.pool.id}`, { size: 6 })).body;
    expect((await thicket.waitForJob(grow.job.id)).state).toBe('succeeded');
    const all = (await api('GET', `/api/v1/desktop-pools/${created.pool.id}/desktops`)).body;
    for (const d of all) await g(`wait_dev ${d.uuid} 60`);
    const del = (await api('DELETE', `/api/v1/desktop-pools/${created.pool.id}`)).body;
    expect((await thicket.waitForJob(del.job.id)).state).toBe('succeeded');
    for (const d of all) await g(`wait_gone ${d.uuid} 60`);
    await gr('nvme disconnect-all');
  });
});
