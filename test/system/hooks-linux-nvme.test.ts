// The linux-nvme hook end to end: the QEMU guest runs dropbear (forwarded to a loopback port) and is
// registered as a hypervisor host; Thicket (a child process) provisions a pool on it, the attach hook runs
// inside the guest over SSH, connects the guest's kernel initiator to Thicket's target and links each
// namespace as /dev/thicket/<desktop>; the guest reads the replica's bytes there; deleting the pool runs
// the detach hook, which removes the links and disconnects.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Guest, randomHostNqn } from './guest/guest.ts';
import { freePort, ThicketProcess } from '../helpers/thicket-process.ts';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.sequential('linux-nvme hooks in the QEMU guest over SSH', { timeout: 600_000 }, () => {
  let guest: Guest;
  let thicket: ThicketProcess;
  let keyDir: string;
  const hostNqn = randomHostNqn();
  const image = randomBytes(4 * MiB);
  const ids: Record<string, any> = {};
  const api = (m: string, p: string, b?: unknown) => thicket.json(m, p, b);

  beforeAll(async () => {
    keyDir = mkdtempSync(path.join(os.tmpdir(), 'thicket-guest-key-'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(keyDir, 'id')]);
    ids.sshPort = await freePort();
    thicket = new ThicketProcess({ THICKET_NVME_ADVERTISE_ADDR: '10.0.2.2' });
    const [g] = await Promise.all([
      Guest.boot({ hostNqn, ssh: { port: ids.sshPort, authorizedKey: readFileSync(path.join(keyDir, 'id.pub'), 'utf8') } }),
      thicket.start(),
    ]);
    guest = g;
    const img = path.join(thicket.dataDir, 'golden.img');
    writeFileSync(img, image);
    const pools = (await api('GET', '/api/v1/storage-pools')).body;
    ids.fast = pools.find((p: any) => p.name === 'fast').id;
    const tpl = (await api('POST', '/api/v1/templates', { name: 'golden' })).body;
    const v = (await api('POST', `/api/v1/templates/${tpl.id}/versions`, { sourcePath: img, format: 'raw' })).body;
    const r = (await api('POST', '/api/v1/replicas', { templateVersionId: v.id, storagePoolId: pools.find((p: any) => p.name === 'capacity').id })).body;
    expect((await thicket.waitForJob(r.job.id)).state).toBe('succeeded');
    ids.replica = r.replica.id;
  }, 15 * 60_000);

  afterAll(async () => {
    await guest?.run('nvme disconnect-all', 30_000).catch(() => {});
    await guest?.shutdown();
    await thicket?.destroy();
    if (keyDir) rmSync(keyDir, { recursive: true, force: true });
  }, 60_000);

  it("reports the guest's host key, NQN and NVMe/TCP initiator, and is trusted by that fingerprint", async () => {
    const host = await api('POST', '/api/v1/hosts', {
      name: 'guest',
      nqn: hostNqn,
      ssh: { address: '127.0.0.1', port: ids.sshPort, username: 'root', privateKeyPath: path.join(keyDir, 'id') },
      hookType: 'linux-nvme',
    });
    expect(host.status).toBe(201);
    ids.host = host.body.id;
    const test = await api('POST', `/api/v1/hosts/${ids.host}/test`);
    expect(test.status).toBe(200);
    // The guest's own view of its key: the OpenSSH public key line dropbearkey prints.
    const pub = await guest.check('dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep ^ssh-ed25519', 30_000);
    const blob = Buffer.from(pub.trim().split(/\s+/)[1], 'base64');
    const fingerprint = `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
    expect(test.body).toMatchObject({ hostKey: { fingerprint, type: 'ssh-ed25519', pinned: false }, nqn: hostNqn, nqnMatches: true, nvmeCli: true, nvmeTcp: true });
    expect((await api('POST', `/api/v1/hosts/${ids.host}/trust`, { fingerprint })).status).toBe(200);
  });

  it('provisions a pool whose attach hook links every desktop in the guest, reading the replica', async () => {
    const created = await api('POST', '/api/v1/desktop-pools', { name: 'vdi', replicaId: ids.replica, storagePoolId: ids.fast, size: 2, namePattern: 'vdi-{n}', hostIds: [ids.host] });
    expect(created.status).toBe(202);
    ids.pool = created.body.pool.id;
    const job = await thicket.waitForJob(created.body.job.id, 300_000);
    expect(job.state, JSON.stringify(job.results)).toBe('succeeded');
    expect(job.phase).toBe('attach');
    const desktops = (await api('GET', `/api/v1/desktop-pools/${ids.pool}/desktops`)).body;
    expect(desktops).toHaveLength(2);
    for (const d of desktops) {
      expect(d, d.error ?? '').toMatchObject({ state: 'available', attached: true, hostId: ids.host, error: null });
      const out = await guest.check(`test -L /dev/thicket/${d.name} && cat /sys/block/$(basename $(readlink -f /dev/thicket/${d.name}))/uuid && dd if=/dev/thicket/${d.name} bs=1M count=4 iflag=direct 2>/dev/null | sha256sum`, 60_000);
      const [uuid, sum] = out.trim().split('\n');
      expect(uuid).toBe(d.uuid);
      expect(sum.split(' ')[0]).toBe(sha(image));
    }
    const ctrls = await guest.check(`grep -l ${desktops[0].subsystemNqn} /sys/class/nvme/nvme*/subsysnqn | wc -l`, 30_000);
    expect(Number(ctrls.trim())).toBe(1);
  });

  it('a refresh detaches nothing: the link stays and reads the replica again after a write', async () => {
    const [d] = (await api('GET', `/api/v1/desktop-pools/${ids.pool}/desktops`)).body;
    await guest.check(`dd if=/dev/urandom of=/dev/thicket/${d.name} bs=1M count=1 oflag=direct conv=fsync 2>/dev/null`, 60_000);
    const dirty = await guest.check(`dd if=/dev/thicket/${d.name} bs=1M count=4 iflag=direct 2>/dev/null | sha256sum`, 60_000);
    expect(dirty.split(' ')[0]).not.toBe(sha(image));
    const refresh = await api('POST', `/api/v1/desktop-pools/${ids.pool}/refresh`, {});
    expect((await thicket.waitForJob(refresh.body.job.id, 120_000)).state).toBe('succeeded');
    const out = await guest.check(`test -L /dev/thicket/${d.name} && echo 1 > /proc/sys/vm/drop_caches; dd if=/dev/thicket/${d.name} bs=1M count=4 iflag=direct 2>/dev/null | sha256sum`, 60_000);
    expect(out.split(' ')[0]).toBe(sha(image));
  });

  it('deleting the pool runs the detach hook: links gone, subsystem disconnected', async () => {
    const desktops = (await api('GET', `/api/v1/desktop-pools/${ids.pool}/desktops`)).body;
    const del = await api('DELETE', `/api/v1/desktop-pools/${ids.pool}`);
    expect(del.status).toBe(202);
    const job = await thicket.waitForJob(del.body.job.id, 300_000);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    for (const d of desktops) expect((await guest.run(`test -e /dev/thicket/${d.name} || test -L /dev/thicket/${d.name}`, 30_000)).code).not.toBe(0);
    const left = await guest.check(`cat /sys/class/nvme/nvme*/subsysnqn 2>/dev/null | grep -c ${desktops[0].subsystemNqn} || true`, 30_000);
    expect(left.trim()).toBe('0');
  });
});
