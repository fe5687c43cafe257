// The QEMU test guest itself: it boots (KVM, else TCG), has the tools and modules the NVMe/TCP system
// tests need, reaches the host's loopback, and its kernel initiator works end to end against the
// guest's own kernel target (nvmet-tcp on the guest's loopback), which checks nvme-cli, fio (with
// verify), mkfs.ext4, mount and blkdiscard without depending on Thicket's target.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Guest, randomHostNqn } from './guest/guest.ts';

// One guest for the whole file; tests run in order against it. Booting may include building the
// guest (apt-get, first run on a machine: a minute or two) and a stalled KVM attempt before TCG.
const BOOT_TIMEOUT_MS = 15 * 60_000;
const TEST_TIMEOUT_MS = 5 * 60_000;

describe.sequential('QEMU test guest', { timeout: TEST_TIMEOUT_MS }, () => {
  let guest: Guest;
  const hostNqn = randomHostNqn();

  beforeAll(async () => {
    guest = await Guest.boot({ hostNqn });
    console.info(`test guest: kernel ${guest.kernelVersion} under ${guest.accel}, booted in ${guest.bootMs} ms (${guest.totalBootMs} ms in all)`);
  }, BOOT_TIMEOUT_MS);

  afterAll(async () => {
    await guest?.shutdown();
  }, 30_000);

  it('runs Debian cloud kernel with the host NQN from the command line', async () => {
    const r = await guest.run('uname -r; cat /etc/nvme/hostnqn /etc/nvme/hostid', 10_000);
    expect(r.code).toBe(0);
    const [kver, nqn, hostId] = r.stdout.trim().split('\n');
    expect(kver).toBe(guest.kernelVersion);
    expect(kver).toMatch(/-cloud-amd64$/);
    expect(nqn).toBe(hostNqn);
    expect(hostNqn).toContain(`:uuid:${hostId}`);
  });

  it('reports exit codes, stdout and stderr separately, and kills a command at its timeout', async () => {
    expect(await guest.run('echo out; echo err >&2; exit 3', 10_000)).toMatchObject({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    const bytes = await guest.run("printf '\\000\\377\\200abc'", 10_000);
    expect([...bytes.stdoutBytes]).toEqual([0, 255, 128, 97, 98, 99]);
    const quoted = `it's "quoted" $HOME \\ ${'x'.repeat(3000)}`;
    expect((await guest.run(`cat <<'EOF'\n${quoted}\nEOF`, 10_000)).stdout).toBe(`${quoted}\n`);
    const t0 = Date.now();
    const slow = await guest.run('sleep 30 & sleep 30; echo never', 2_000);
    expect(slow.code).toBe(137);
    expect(slow.stdout).toBe('');
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect((await guest.run('echo still here', 10_000)).stdout).toBe('still here\n');
  });

  it('has nvme-tcp loaded and modprobe working', async () => {
    const r = await guest.run('modprobe nvme-tcp && modprobe nvme-fabrics && test -d /sys/module/nvme_tcp && test -c /dev/nvme-fabrics && echo ok', 30_000);
    expect(r).toMatchObject({ code: 0, stdout: 'ok\n' });
  });

  it('has nvme-cli, fio, mkfs.ext4 and blkdiscard', async () => {
    const nvme = await guest.run('nvme version', 10_000);
    expect(nvme.code).toBe(0);
    expect(nvme.stdout).toMatch(/nvme version \d+\.\d+/);
    const fio = await guest.run('fio --version', 10_000);
    expect(fio.code).toBe(0);
    expect(fio.stdout).toMatch(/^fio-\d+\.\d+/);
    const mkfs = await guest.run('mkfs.ext4 -V', 10_000);
    expect(mkfs.code).toBe(0);
    expect(mkfs.stdout + mkfs.stderr).toMatch(/mke2fs \d+\.\d+/);
    const blkdiscard = await guest.run('blkdiscard -V', 10_000);
    expect(blkdiscard.code).toBe(0);
    expect(blkdiscard.stdout).toMatch(/util-linux/);
  });

  it('reaches a TCP server on the host loopback at 10.0.2.2, which sees it as 127.0.0.1', async () => {
    const peers: string[] = [];
    const received: string[] = [];
    const server = net.createServer((socket) => {
      peers.push(socket.remoteAddress ?? '');
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => received.push(d));
      socket.on('error', () => {});
      socket.end('hello\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const r = await guest.run(`echo from-guest | busybox nc -w 5 10.0.2.2 ${port}`, 20_000);
      expect(r.stdout).toBe('hello\n');
      expect(r.code).toBe(0);
      expect(peers).toEqual(['127.0.0.1']);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('connects to its own kernel NVMe/TCP target and runs fio verify, mkfs.ext4 and blkdiscard on it', async () => {
    const subnqn = 'nqn.2026-11.io.thicket:guest-selftest';
    const setup = `
set -e
modprobe nvmet-tcp
truncate -s 64M /run/ns.img
losetup /dev/loop0 /run/ns.img
S=/sys/kernel/config/nvmet
mkdir $S/subsystems/${subnqn}
echo 1 > $S/subsystems/${subnqn}/attr_allow_any_host
mkdir $S/subsystems/${subnqn}/namespaces/1
echo /dev/loop0 > $S/subsystems/${subnqn}/namespaces/1/device_path
echo 1 > $S/subsystems/${subnqn}/namespaces/1/enable
mkdir $S/ports/1
echo tcp > $S/ports/1/addr_trtype
echo ipv4 > $S/ports/1/addr_adrfam
echo 127.0.0.1 > $S/ports/1/addr_traddr
echo 4420 > $S/ports/1/addr_trsvcid
ln -s $S/subsystems/${subnqn} $S/ports/1/subsystems/${subnqn}
`;
    await guest.check(setup, 30_000);
    const discover = await guest.check('nvme discover -t tcp -a 127.0.0.1 -s 4420', 30_000);
    expect(discover).toContain(`subnqn:  ${subnqn}`);

    await guest.check(`nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${subnqn} --hdr-digest --data-digest`, 30_000);
    const dev = (
      await guest.check(
        `for i in $(seq 1 100); do for d in /sys/class/nvme/nvme*; do [ "$(cat $d/subsysnqn 2>/dev/null)" = "${subnqn}" ] && for n in /dev/\${d##*/}n1 /dev/\${d##*/}c*n1; do [ -b $n ] && { echo $n; exit 0; }; done; done; sleep 0.1; done; exit 1`,
        30_000,
      )
    ).trim();
    expect(dev).toMatch(/^\/dev\/nvme\d+(c\d+)?n1$/);
    expect(await guest.check(`nvme list`, 20_000)).toContain(dev);
    const ctrl = dev.replace(/(c\d+)?n1$/, '').replace(/^\/dev\//, '');
    expect(await guest.check(`cat /sys/class/nvme/${ctrl}/transport /sys/class/nvme/${ctrl}/hostnqn`, 10_000)).toBe(`tcp\n${hostNqn}\n`);

    const fio = await guest.check(
      `fio --name=verify --filename=${dev} --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bs=4k --bsrange=4k-1m --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=terse`,
      180_000,
    );
    expect(fio.split(';')[2]).toBe('verify');
    expect(fio.split(';')[4]).toBe('0'); // error field

    await guest.check(`blkdiscard ${dev} && blkdiscard -z -o 0 -l 1048576 ${dev}`, 60_000);
    expect(await guest.check(`dd if=${dev} bs=1M count=1 iflag=direct 2>/dev/null | sha256sum`, 30_000)).toMatch(
      /^30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58 /, // 1 MiB of zeroes
    );

    await guest.check(
      `set -e
mkfs.ext4 -q -F ${dev}
mkdir -p /mnt/t && mount ${dev} /mnt/t
head -c 1048576 /dev/urandom > /mnt/t/f && sha256sum /mnt/t/f > /run/f.sum
sync && umount /mnt/t
mount ${dev} /mnt/t && sha256sum -c /run/f.sum && umount /mnt/t`,
      120_000,
    );
    await guest.check('nvme disconnect-all', 30_000);
  });
});
