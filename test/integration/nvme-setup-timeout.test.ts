// Connections that never finish their setup (ICReq, then Fabrics Connect) are closed after a while, so a
// peer opening silent sockets cannot hold them forever; connected queues are not affected.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { startTestTarget, HOSTNQN, SUBNQN, type TestTarget } from '../fixtures/nvme-target.ts';
import { icReq } from '../fixtures/pdu-builder.ts';

const SETUP_MS = 400;

function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function open(port: number): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', () => {});
  s.on('data', () => {});
  await new Promise<void>((resolve) => s.once('connect', () => resolve()));
  return s;
}

describe('NVMe/TCP connection setup timeout', () => {
  let t: TestTarget;
  beforeAll(async () => {
    t = await startTestTarget({ namespaces: [1], setupTimeoutMs: SETUP_MS });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('closes a connection that never sends ICReq', async () => {
    const s = await open(t.ioPort);
    expect(await closedWithin(s, SETUP_MS * 5)).toBe(true);
  });

  it('closes a connection that sends ICReq but never connects, on the discovery port too', async () => {
    for (const port of [t.ioPort, t.discoveryPort]) {
      const s = await open(port);
      s.write(icReq());
      expect(await closedWithin(s, SETUP_MS * 5)).toBe(true);
    }
  });

  it('leaves a connected host alone past the timeout', async () => {
    const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.ioPort, subnqn: SUBNQN, hostnqn: HOSTNQN });
    try {
      await new Promise((r) => setTimeout(r, SETUP_MS * 3));
      const data = Buffer.alloc(4096, 0x42);
      await host.write(1, 9, data);
      expect((await host.read(1, 9, 1)).equals(data)).toBe(true);
    } finally {
      await host.close();
    }
  });
});
