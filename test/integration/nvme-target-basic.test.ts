import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CNS, DISCOVERY_NQN } from '../../src/nvmeof/protocol/constants.ts';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { nguidFor, Target } from '../../src/nvmeof/target/target.ts';
import { TcpListener } from '../../src/nvmeof/transport/tcp-listener.ts';
import { MemoryBackend } from '../fixtures/memory-backend.ts';

const SUBNQN = 'nqn.2026-11.io.thicket:test';
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555';

describe('NVMe/TCP target with the TypeScript host', () => {
  let target: Target;
  let listener: TcpListener;
  const backend = new MemoryBackend(1024, (lba, b) => b.fill(lba & 0xff));
  const uuid = randomUUID();

  beforeAll(async () => {
    target = new Target({ ioPort: 0 });
    listener = new TcpListener(target);
    await listener.listen({ host: '127.0.0.1', ioPort: 0, discoveryPort: 0 });
    target.addSubsystem(SUBNQN);
    target.setHosts(SUBNQN, [HOSTNQN]);
    target.addNamespace(SUBNQN, { nsid: 1, uuid, nguid: nguidFor(uuid), backend, visibleTo: null });
  });
  afterAll(async () => {
    target.close();
    await listener.close();
  });

  for (const digests of [false, true]) {
    it(`connects, identifies and moves data (digests ${digests ? 'on' : 'off'})`, async () => {
      const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: listener.ioPort, subnqn: SUBNQN, hostnqn: HOSTNQN, ioQueues: 2, hdgst: digests, ddgst: digests });
      try {
        const ctrl = await host.identify(CNS.Controller);
        expect(ctrl.readUInt16LE(78)).toBe(host.cntlid);
        expect(await host.activeNamespaces()).toEqual([1]);
        const ns = await host.identify(CNS.Namespace, 1);
        expect(Number(ns.readBigUInt64LE(0))).toBe(1024);
        const r = await host.read(1, 5, 2);
        expect(r.subarray(0, 4096).every((x) => x === 5)).toBe(true);
        const small = randomBytes(4096);
        await host.write(1, 10, small);
        expect((await host.read(1, 10, 1)).equals(small)).toBe(true);
        const big = randomBytes(1024 * 1024);
        await host.write(1, 100, big);
        expect((await host.read(1, 100, 256)).equals(big)).toBe(true);
        await host.flush(1);
        await host.deallocate(1, [{ slba: 100, nlb: 8 }]);
        expect((await host.read(1, 100, 1)).every((x) => x === 0)).toBe(true);
      } finally {
        await host.close();
      }
    });
  }

  it('lists the subsystem in the discovery log for an allowed host only', async () => {
    const d = await NvmeTcpHost.connect({ address: '127.0.0.1', port: listener.discoveryPort, subnqn: DISCOVERY_NQN, hostnqn: HOSTNQN, katoMs: 0 });
    const log = await d.discoveryLog();
    expect(log.map((e) => e.subnqn)).toEqual([SUBNQN]);
    expect(log[0].traddr).toBe('127.0.0.1');
    await d.close();
    const other = await NvmeTcpHost.connect({ address: '127.0.0.1', port: listener.discoveryPort, subnqn: DISCOVERY_NQN, hostnqn: 'nqn.2014-08.org.nvmexpress:uuid:99999999-2222-3333-4444-555555555555', katoMs: 0 });
    expect(await other.discoveryLog()).toEqual([]);
    await other.close();
  });

  it('refuses a host that is not allowed', async () => {
    await expect(
      NvmeTcpHost.connect({ address: '127.0.0.1', port: listener.ioPort, subnqn: SUBNQN, hostnqn: 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000009', hostid: randomBytes(16) }),
    ).rejects.toThrow(/SCT 1, SC 0x84/);
  });
});
