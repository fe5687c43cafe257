// Hooks through a real OpenSSH server on loopback, on both databases: host key reporting and pinning, a
// changed host key refused, unsafe names rejected, real hook runs whose failure leaves desktops failed
// with the hook's stderr, placement across hosts with maxDesktops, the host callback token, refresh on
// logoff, and the libvirt domain XML validated and started with virsh's test driver through sshd.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { SshSession } from '../../src/hooks/ssh-session.ts';
import { HookTemplates } from '../../src/hooks/render.ts';
import { ROOT } from '../../src/thicket.ts';
import { run as runCli } from '../../src/cli/main.ts';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startSshd, type TestSshd } from '../helpers/sshd.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const MiB = 1024 * 1024;
const nqn = (n: number) => `nqn.2014-08.org.nvmexpress:uuid:dddddddd-0000-4000-8000-${String(n).padStart(12, '0')}`;
// Whether this machine has the kernel's NVMe/TCP initiator: then the attach hook really connects to the
// target on 127.0.0.1; without it, the hook fails with its own clear message.
const HAS_INITIATOR = existsSync('/dev/nvme-fabrics');

describe.each(DATABASE_KINDS)('hypervisor hooks over SSH (%s)', (kind) => {
  let t: TestThicket;
  let sshd: TestSshd;
  let replicaId: string;
  let fastPool: string;
  const image = randomBytes(MiB);
  const ssh = () => ({ address: sshd.address, port: sshd.port, username: sshd.username, privateKey: sshd.clientKey });

  async function waitJob(id: string) {
    return t.waitForJob(id, 120_000);
  }

  beforeAll(async () => {
    sshd = await startSshd();
    t = await startTestThicket(kind, { nvmeAdvertiseAddr: '127.0.0.1' });
    const img = path.join(t.dataDir, 'golden.img');
    writeFileSync(img, image);
    const tpl = await t.json('POST', '/api/v1/templates', { name: 'golden' });
    const v = await t.json('POST', `/api/v1/templates/${tpl.body.id}/versions`, { sourcePath: img, format: 'raw' });
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string }>;
    fastPool = pools.find((p) => p.name === 'fast')!.id;
    const r = await t.json('POST', '/api/v1/replicas', { templateVersionId: v.body.id, storagePoolId: pools.find((p) => p.name === 'capacity')!.id });
    expect((await waitJob(r.body.job.id)).state).toBe('succeeded');
    replicaId = r.body.replica.id;
  });

  afterAll(async () => {
    await t?.destroy();
    await sshd?.stop();
  });

  it('stores the private key encrypted and never returns it', async () => {
    const res = await t.json('POST', '/api/v1/hosts', { name: 'hv-key', nqn: nqn(1), ssh: ssh(), hookType: 'linux-nvme' });
    expect(res.status).toBe(201);
    expect(res.body.ssh).toEqual({ address: '127.0.0.1', port: sshd.port, username: sshd.username, privateKey: 'stored', privateKeyPath: null });
    const keyBody = sshd.clientKey.split('\n')[1];
    for (const body of [res.body, (await t.json('GET', `/api/v1/hosts/${res.body.id}`)).body, (await t.json('GET', '/api/v1/hosts')).body]) {
      expect(JSON.stringify(body)).not.toContain(keyBody);
    }
    const row = await t.json('DELETE', `/api/v1/hosts/${res.body.id}`);
    expect(row.status).toBe(204);
  });

  it('rejects a key that is not a private key, and both or neither of privateKey and privateKeyPath', async () => {
    const pub = readFileSync(`${sshd.clientKeyPath}.pub`, 'utf8');
    const bad = await t.json('POST', '/api/v1/hosts', { name: 'hv-bad', nqn: nqn(2), ssh: { ...ssh(), privateKey: pub } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/^ssh\.privateKey: /);
    const both = await t.json('POST', '/api/v1/hosts', { name: 'hv-bad', nqn: nqn(2), ssh: { ...ssh(), privateKeyPath: sshd.clientKeyPath } });
    expect(both.status).toBe(400);
    const missing = await t.json('POST', '/api/v1/hosts', { name: 'hv-bad', nqn: nqn(2), ssh: { ...ssh(), privateKey: undefined, privateKeyPath: '/nonexistent/key' } });
    expect(missing.status).toBe(400);
    expect(missing.body.error.message).toMatch(/cannot read \/nonexistent\/key/);
  });

  it('reports the host key fingerprint, the NQN and the tools before the key is pinned', async () => {
    const h = (await t.json('POST', '/api/v1/hosts', { name: 'hv-1', nqn: nqn(3), ssh: { ...ssh(), privateKey: undefined, privateKeyPath: sshd.clientKeyPath } })).body;
    const res = await t.json('POST', `/api/v1/hosts/${h.id}/test`);
    expect(res.status).toBe(200);
    expect(res.body.hostKey).toEqual({ fingerprint: sshd.hostKeyFingerprint, type: 'ssh-ed25519', pinned: false, matches: null });
    const localNqn = existsSync('/etc/nvme/hostnqn') ? readFileSync('/etc/nvme/hostnqn', 'utf8').trim() : null;
    expect(res.body.nqn).toBe(localNqn);
    expect(res.body.nqnMatches).toBe(false);
    expect(res.body.nvmeCli).toBe(existsSync('/usr/sbin/nvme'));
    expect(typeof res.body.nvmeTcp).toBe('boolean');
    expect(res.body.virsh).toBeNull();
  });

  it('refuses a malformed fingerprint, and pins a good one', async () => {
    const h = (await t.json('GET', '/api/v1/hosts')).body.find((x: any) => x.name === 'hv-1');
    expect((await t.json('POST', `/api/v1/hosts/${h.id}/trust`, { fingerprint: 'MD5:aa:bb' })).status).toBe(400);
    const ok = await t.json('POST', `/api/v1/hosts/${h.id}/trust`, { fingerprint: sshd.hostKeyFingerprint });
    expect(ok.status).toBe(200);
    expect(ok.body.hostKeyFingerprint).toBe(sshd.hostKeyFingerprint);
    const test = await t.json('POST', `/api/v1/hosts/${h.id}/test`);
    expect(test.body.hostKey).toMatchObject({ pinned: true, matches: true });
  });

  it('rejects pool, desktop and host names with shell metacharacters', async () => {
    const h = (await t.json('GET', '/api/v1/hosts')).body.find((x: any) => x.name === 'hv-1');
    for (const name of ['p;reboot', 'p$(id)', 'p`id`', "p'x"]) {
      const res = await t.json('POST', '/api/v1/desktop-pools', { name, replicaId, storagePoolId: fastPool, size: 1, namePattern: 'd-{n}', hostIds: [h.id] });
      expect(res.status, name).toBe(400);
    }
    for (const namePattern of ['d;reboot-{n}', '$(id)-{n}', 'd-{n}`id`', 'd/../{n}']) {
      const res = await t.json('POST', '/api/v1/desktop-pools', { name: 'safe', replicaId, storagePoolId: fastPool, size: 1, namePattern, hostIds: [h.id] });
      expect(res.status, namePattern).toBe(400);
      expect(res.body.error.message).toMatch(/namePattern/);
    }
    expect((await t.json('POST', '/api/v1/hosts', { name: 'h;id', nqn: nqn(9), ssh: ssh() })).status).toBe(400);
    expect((await t.json('POST', '/api/v1/hosts', { name: 'h9', nqn: nqn(9), ssh: { ...ssh(), address: '127.0.0.1;id' } })).status).toBe(400);
  });

  it('runs the attach hook through sshd; a hook that fails leaves the desktop failed with its stderr', async () => {
    const h = (await t.json('GET', '/api/v1/hosts')).body.find((x: any) => x.name === 'hv-1');
    const res = await t.json('POST', '/api/v1/desktop-pools', { name: 'lab', replicaId, storagePoolId: fastPool, size: 2, namePattern: 'lab-{n}', hostIds: [h.id] });
    expect(res.status).toBe(202);
    const job = await waitJob(res.body.job.id);
    expect(job.state).toBe('succeeded');
    const desktops = (await t.json('GET', `/api/v1/desktop-pools/${res.body.pool.id}/desktops`)).body;
    expect(desktops.map((d: any) => d.hostId)).toEqual([h.id, h.id]);
    if (HAS_INITIATOR) {
      for (const d of desktops) expect(d).toMatchObject({ state: 'available', attached: true, error: null });
    } else {
      for (const d of desktops) {
        expect(d).toMatchObject({ state: 'failed', attached: false });
        expect(d.error).toMatch(/^HOOK_FAILED: thicket: the NVMe\/TCP initiator is not available/);
      }
      expect(job.results.filter((r: any) => r.status === 'failed').map((r: any) => r.item).sort()).toEqual(['lab-1', 'lab-2']);
      expect((await t.json('GET', `/api/v1/desktop-pools/${res.body.pool.id}`)).body.error).toMatch(/2 desktop\(s\) failed to attach/);
    }
    expect(job.phase).toBe('attach');
  });

  it('takes reports from a host only with its own token, for desktops placed on it; refreshOnLogoff resets the clone on vm-stopped', async () => {
    const pool = (await t.json('GET', '/api/v1/desktop-pools')).body.find((p: any) => p.name === 'lab');
    expect((await t.json('PATCH', `/api/v1/desktop-pools/${pool.id}`, { refreshOnLogoff: true })).status).toBe(200);
    const h = (await t.json('GET', '/api/v1/hosts')).body.find((x: any) => x.name === 'hv-1');
    const other = (await t.json('POST', '/api/v1/hosts', { name: 'hv-2', nqn: nqn(4), ssh: ssh() })).body;
    const script = t.instance.hooks.runner.qemuHookScript({ ...other, hook_type: 'libvirt' } as never);
    const otherToken = /THICKET_HOST_TOKEN='([^']+)'/.exec(script)![1];
    const token = /THICKET_HOST_TOKEN='([^']+)'/.exec(t.instance.hooks.runner.qemuHookScript({ id: h.id } as never))![1];
    const post = (tok: string, p: string, body: unknown) =>
      fetch(`${t.url}${p}`, { method: 'POST', headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const statePath = `/api/v1/desktop-pools/${pool.id}/desktops/lab-1/state`;
    expect((await post(otherToken, statePath, { event: 'vm-started' })).status).toBe(403);
    expect((await fetch(`${t.url}/api/v1/hosts`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    expect((await post(token, `/api/v1/desktop-pools/${pool.id}/refresh`, {})).status).toBe(401);

    // A write to the desktop's namespace, then the host reports the VM stopped: the clone is reset.
    const desktop = (await t.json('GET', `/api/v1/desktop-pools/${pool.id}/desktops`)).body.find((d: any) => d.name === 'lab-1');
    const nvme = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: desktop.subsystemNqn, hostnqn: h.nqn, ioQueues: 1 });
    try {
      await nvme.write(desktop.nsid, 0, Buffer.alloc(4096, 0xab));
      expect((await nvme.read(desktop.nsid, 0, 1)).equals(Buffer.alloc(4096, 0xab))).toBe(true);
      const started = await post(token, statePath, { event: 'vm-started' });
      expect(started.status).toBe(200);
      expect((await started.json()).power).toBe('running');
      const stopped = await post(token, statePath, { event: 'vm-stopped' });
      expect(stopped.status).toBe(200);
      expect(await stopped.json()).toMatchObject({ state: 'available', power: 'stopped' });
      expect((await nvme.read(desktop.nsid, 0, 1)).equals(image.subarray(0, 4096))).toBe(true);
    } finally {
      await nvme.close();
    }
    expect((await t.json('POST', statePath, { event: 'session-started' })).body.state).toBe('in-use');
    expect((await t.json('POST', statePath, { state: 'available', event: 'vm-started' })).status).toBe(400);
    expect((await t.json('DELETE', `/api/v1/hosts/${other.id}`)).status).toBe(204);
  });

  it('refuses a host whose key fingerprint does not match the pinned one', async () => {
    const h = (await t.json('GET', '/api/v1/hosts')).body.find((x: any) => x.name === 'hv-1');
    const pinned = sshd.hostKeyFingerprint;
    const fresh = await sshd.replaceHostKey();
    expect(fresh).not.toBe(pinned);
    const test = await t.json('POST', `/api/v1/hosts/${h.id}/test`);
    expect(test.status).toBe(409);
    expect(test.body.error).toMatchObject({ code: 'HOST_KEY_MISMATCH', details: { presented: fresh, pinned } });
    const pool = (await t.json('GET', '/api/v1/desktop-pools')).body.find((p: any) => p.name === 'lab');
    const grow = await t.json('PATCH', `/api/v1/desktop-pools/${pool.id}`, { size: 3 });
    expect((await waitJob(grow.body.job.id)).state).toBe('succeeded');
    const d3 = (await t.json('GET', `/api/v1/desktop-pools/${pool.id}/desktops`)).body.find((d: any) => d.name === 'lab-3');
    expect(d3.state).toBe('failed');
    expect(d3.error).toMatch(/^HOST_KEY_MISMATCH: the host presented key SHA256:/);
    // Trusting the new key makes the host usable again.
    expect((await t.json('POST', `/api/v1/hosts/${h.id}/trust`, { fingerprint: fresh })).status).toBe(200);
    expect((await t.json('POST', `/api/v1/hosts/${h.id}/test`)).status).toBe(200);
  });

  it('refuses to run hooks on a host whose key is not pinned', async () => {
    const h = (await t.json('POST', '/api/v1/hosts', { name: 'hv-unpinned', nqn: nqn(5), ssh: ssh() })).body;
    const res = await t.json('POST', '/api/v1/desktop-pools', { name: 'unpinned', replicaId, storagePoolId: fastPool, size: 1, namePattern: 'u-{n}', hostIds: [h.id] });
    expect((await waitJob(res.body.job.id)).state).toBe('succeeded');
    const [d] = (await t.json('GET', `/api/v1/desktop-pools/${res.body.pool.id}/desktops`)).body;
    expect(d.state).toBe('failed');
    expect(d.error).toMatch(/^HOST_KEY_NOT_PINNED: the host key \(SHA256:.{43}\) is not pinned/);
    // The message says exactly what to call: this host's trust URL and the key it saw.
    expect(d.error).toContain(`POST /api/v1/hosts/${h.id}/trust {"fingerprint": "${sshd.hostKeyFingerprint}"}`);
    const del = await t.json('DELETE', `/api/v1/desktop-pools/${res.body.pool.id}`);
    expect((await waitJob(del.body.job.id)).state).toBe('succeeded');
    expect((await t.json('DELETE', `/api/v1/hosts/${h.id}`)).status).toBe(204);
  });

  it('changes SSH settings by PATCH: the pin stays for the same address and port, goes for another; desktops keep their hooks', async () => {
    const h = (await t.json('POST', '/api/v1/hosts', { name: `hv-patch-${kind}`, nqn: nqn(21), ssh: ssh() })).body;
    expect((await t.json('POST', `/api/v1/hosts/${h.id}/trust`, { fingerprint: sshd.hostKeyFingerprint })).status).toBe(200);
    // Same endpoint, the key now read from a file: still the same machine, the pin stays.
    const sameEndpoint = await t.json('PATCH', `/api/v1/hosts/${h.id}`, { ssh: { ...ssh(), privateKey: undefined, privateKeyPath: sshd.clientKeyPath } });
    expect(sameEndpoint.status).toBe(200);
    expect(sameEndpoint.body).toMatchObject({ hostKeyFingerprint: sshd.hostKeyFingerprint, hookType: 'linux-nvme', ssh: { privateKey: null, privateKeyPath: sshd.clientKeyPath } });
    expect((await t.json('POST', `/api/v1/hosts/${h.id}/test`)).status).toBe(200);
    // Another port may be another machine: the pin goes, hooks refuse until it is trusted again.
    const moved = await t.json('PATCH', `/api/v1/hosts/${h.id}`, { ssh: { ...ssh(), port: sshd.port + 1 } });
    expect(moved.body).toMatchObject({ hostKeyFingerprint: null, ssh: { port: sshd.port + 1, privateKey: 'stored' } });
    const back = await t.json('PATCH', `/api/v1/hosts/${h.id}`, { ssh: ssh() });
    expect(back.body.hostKeyFingerprint).toBeNull();
    // A desktop placed on the host (its attach failed: the key is not pinned) keeps the host's hooks.
    const name = `patch${kind === 'pglite' ? 'a' : 'b'}`;
    const pool = await t.json('POST', '/api/v1/desktop-pools', { name, replicaId, storagePoolId: fastPool, size: 1, namePattern: `${name}-{n}`, hostIds: [h.id] });
    expect((await waitJob(pool.body.job.id)).state).toBe('succeeded');
    for (const body of [{ ssh: null }, { hookType: 'libvirt' }]) {
      const res = await t.json('PATCH', `/api/v1/hosts/${h.id}`, body);
      expect(res.status, JSON.stringify(body)).toBe(409);
      expect(res.body.error).toMatchObject({ code: 'HOST_IN_USE', details: { desktops: 1 } });
    }
    expect((await waitJob((await t.json('DELETE', `/api/v1/desktop-pools/${pool.body.pool.id}`)).body.job.id)).state).toBe('succeeded');
    const plain = await t.json('PATCH', `/api/v1/hosts/${h.id}`, { ssh: null });
    expect(plain.body).toMatchObject({ ssh: null, hookType: null, hostKeyFingerprint: null });
    expect((await t.json('POST', `/api/v1/hosts/${h.id}/test`)).body.error.code).toBe('HOST_HAS_NO_SSH');
    expect((await t.json('DELETE', `/api/v1/hosts/${h.id}`)).status).toBe(204);
  });

  it('reports a private key file that became unreadable as a problem of this node (409), not an unreachable host', async () => {
    const keyPath = path.join(t.dataDir, `moved-key-${kind}`);
    writeFileSync(keyPath, readFileSync(sshd.clientKeyPath), { mode: 0o600 });
    const h = (await t.json('POST', '/api/v1/hosts', { name: `hv-keyfile-${kind}`, nqn: nqn(7), ssh: { ...ssh(), privateKey: undefined, privateKeyPath: keyPath } })).body;
    rmSync(keyPath);
    const test = await t.json('POST', `/api/v1/hosts/${h.id}/test`);
    expect(test.status).toBe(409);
    expect(test.body.error.code).toBe('SSH_KEY_UNREADABLE');
    expect(test.body.error.message).toContain(`cannot read the private key ${keyPath}`);
    expect((await t.json('DELETE', `/api/v1/hosts/${h.id}`)).status).toBe(204);
  });

  it('attaches a desktop whose attach failed when its pool is refreshed (never available without it), and detaches it on delete', async () => {
    const h = (await t.json('POST', '/api/v1/hosts', { name: 'hv-late', nqn: nqn(6), ssh: ssh() })).body;
    const name = `late${kind === 'pglite' ? 'a' : 'b'}`;
    const res = await t.json('POST', '/api/v1/desktop-pools', { name, replicaId, storagePoolId: fastPool, size: 1, namePattern: `${name}-{n}`, hostIds: [h.id] });
    expect((await waitJob(res.body.job.id)).state).toBe('succeeded');
    const poolId = res.body.pool.id;
    const desktop = async () => (await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body[0];
    expect(await desktop()).toMatchObject({ state: 'failed', attached: false });
    const refresh = async () => waitJob((await t.json('POST', `/api/v1/desktop-pools/${poolId}/refresh`, {})).body.job.id);

    // The host is still unusable: the refresh's attach fails again, and the desktop stays failed.
    let job = await refresh();
    expect(job.results.find((r: any) => r.item === `${name}-1`)).toMatchObject({ status: 'failed', error: expect.stringMatching(/^attach: HOST_KEY_NOT_PINNED/) });
    expect(await desktop()).toMatchObject({ state: 'failed', attached: false });

    // With the key pinned, the refresh's attach reaches the host.
    expect((await t.json('POST', `/api/v1/hosts/${h.id}/trust`, { fingerprint: sshd.hostKeyFingerprint })).status).toBe(200);
    job = await refresh();
    if (HAS_INITIATOR) {
      expect(await desktop()).toMatchObject({ state: 'available', attached: true, error: null });
    } else {
      expect(await desktop()).toMatchObject({ state: 'failed', attached: false });
      expect((await desktop()).error).toMatch(/^HOOK_FAILED: thicket: the NVMe\/TCP initiator is not available/);
    }

    // Delete runs the detach hook for every placed desktop, also one never attached: a half-done attach
    // may have left its link (here one made by hand) on the host.
    const link = `/dev/thicket/${name}-1`;
    if (!HAS_INITIATOR) {
      mkdirSync('/dev/thicket', { recursive: true });
      rmSync(link, { force: true });
      symlinkSync('/dev/null', link);
    }
    const del = await t.json('DELETE', `/api/v1/desktop-pools/${poolId}`);
    expect((await waitJob(del.body.job.id)).state).toBe('succeeded');
    expect(() => lstatSync(link)).toThrow();
    expect((await t.json('DELETE', `/api/v1/hosts/${h.id}`)).status).toBe(204);
  });

  it('spreads desktops evenly across hosts within maxDesktops, and fails a grow beyond them', async () => {
    const mk = async (name: string, n: number) =>
      (await t.json('POST', '/api/v1/hosts', { name, nqn: nqn(n), ssh: ssh(), maxDesktops: 2 })).body;
    const a = await mk('hv-a', 6);
    const b = await mk('hv-b', 7);
    const res = await t.json('POST', '/api/v1/desktop-pools', { name: 'spread', replicaId, storagePoolId: fastPool, size: 3, namePattern: 's-{n}', hostIds: [a.id, b.id] });
    expect((await waitJob(res.body.job.id)).state).toBe('succeeded');
    const placed = (await t.json('GET', `/api/v1/desktop-pools/${res.body.pool.id}/desktops`)).body.map((d: any) => d.hostId);
    expect(placed.filter((x: string) => x === a.id)).toHaveLength(2);
    expect(placed.filter((x: string) => x === b.id)).toHaveLength(1);
    const grow = await t.json('PATCH', `/api/v1/desktop-pools/${res.body.pool.id}`, { size: 5 });
    const failed = await waitJob(grow.body.job.id);
    expect(failed.state).toBe('failed');
    expect(failed.error.code).toBe('HOSTS_FULL');
    expect((await t.json('GET', `/api/v1/desktop-pools/${res.body.pool.id}`)).body.desktops.total).toBe(3);
    const del = await t.json('DELETE', `/api/v1/desktop-pools/${res.body.pool.id}`);
    expect((await waitJob(del.body.job.id)).state).toBe('succeeded');
  });

  it('refuses to place a desktop on a host where another pool already has a desktop of that name', async () => {
    const h = (await t.json('POST', '/api/v1/hosts', { name: 'hv-names', nqn: nqn(19), ssh: ssh() })).body;
    const first = await t.json('POST', '/api/v1/desktop-pools', { name: 'names-a', replicaId, storagePoolId: fastPool, size: 1, namePattern: 'same-{n}', hostIds: [h.id] });
    expect((await waitJob(first.body.job.id)).state).toBe('succeeded');
    const second = await t.json('POST', '/api/v1/desktop-pools', { name: 'names-b', replicaId, storagePoolId: fastPool, size: 1, namePattern: 'same-{n}', hostIds: [h.id] });
    const failed = await waitJob(second.body.job.id);
    expect(failed.state).toBe('failed');
    expect(failed.error.code).toBe('NAME_TAKEN');
    expect(failed.error.message).toContain('/dev/thicket/<name>');
    for (const p of [first, second]) {
      const del = await t.json('DELETE', `/api/v1/desktop-pools/${p.body.pool.id}`);
      expect((await waitJob(del.body.job.id)).state).toBe('succeeded');
    }
    expect((await t.json('DELETE', `/api/v1/hosts/${h.id}`)).status).toBe(204);
  });

  it('the CLI registers an SSH host, shows its key and pins it', async () => {
    const out: string[] = [];
    const cli = (...argv: string[]) => runCli([...argv, '--url', t.url, '--token', t.token, '--json'], (s) => out.push(s), (s) => out.push(s));
    expect(await cli('hosts', 'create', 'hv-cli', nqn(8), '--ssh', `${sshd.username}@127.0.0.1:${sshd.port}`, '--key-path', sshd.clientKeyPath, '--hook-type', 'libvirt'), out.join('\n')).toBe(0);
    const host = JSON.parse(out.pop()!);
    expect(host).toMatchObject({ hookType: 'libvirt', ssh: { address: '127.0.0.1', port: sshd.port, privateKeyPath: sshd.clientKeyPath } });
    expect(await cli('hosts', 'test', host.id), out.join('\n')).toBe(0);
    const report = JSON.parse(out.pop()!);
    expect(report.hostKey.fingerprint).toBe(sshd.hostKeyFingerprint);
    // virsh is installed here, but no libvirtd answers qemu:///system: the probe says so.
    expect(report.virsh).toBe(false);
    expect(await cli('hosts', 'trust', host.id, report.hostKey.fingerprint)).toBe(0);
    expect(JSON.parse(out.pop()!).hostKeyFingerprint).toBe(sshd.hostKeyFingerprint);
    expect((await t.json('DELETE', `/api/v1/hosts/${host.id}`)).status).toBe(204);
  });

  it('renders a domain XML that virt-xml-validate accepts and that defines and starts under virsh test:///default through sshd', async () => {
    const templates = new HookTemplates(path.join(ROOT, 'templates'));
    const xml = templates.domainXml({ domain: 'lab--lab-1', uuid: '6f1c2a40-0000-4000-8000-0000000000aa', poolId: '6f1c2a40-0000-4000-8000-0000000000bb', desktop: 'lab-1', vcpus: 2, memoryMiB: 512, disk: '/dev/thicket/lab-1', network: 'default' });
    const session = await SshSession.connect({ address: sshd.address, port: sshd.port, username: sshd.username, privateKey: sshd.clientKey, pinnedFingerprint: sshd.hostKeyFingerprint });
    try {
      const script = `set -eu
f=$(mktemp)
cat >"$f" <<'THICKET_XML_EOF'
${xml}
THICKET_XML_EOF
virt-xml-validate "$f" domain 2>&1
virsh -q -c test:///default "define $f; start lab--lab-1; domstate lab--lab-1; dumpxml lab--lab-1"
rm -f "$f"`;
      const r = await session.exec('/bin/sh -s', { stdin: script, timeoutMs: 60_000 });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/validates/);
      expect(r.stdout).toMatch(/^running$/m);
      expect(r.stdout).toContain("<source dev='/dev/thicket/lab-1'/>");
      expect(r.stdout).toMatch(/thicket:desktop[^>]*name=["']lab-1["']/);
    } finally {
      session.close();
    }
  });
});

describe('the libvirt hooks', () => {
  it('are valid sh and end with exit status checks', () => {
    for (const f of ['attach', 'detach', 'stop', 'start', 'restart', 'qemu-hook']) execFileSync('/bin/sh', ['-n', path.join(ROOT, 'templates/hooks/libvirt', `${f}.sh`)]);
  });
});
