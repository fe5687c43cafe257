// The target's listening sockets: the I/O port (subsystems and the discovery NQN) and the discovery port.
import net from 'node:net';
import type { Target } from '../target/target.ts';
import { TcpQueue, type TcpQueueOptions } from './tcp-queue.ts';

export interface ListenOptions {
  host: string;
  ioPort: number;
  discoveryPort: number;
  maxh2cdata?: number;
  setupTimeoutMs?: number;
  log?: TcpQueueOptions['log'];
}

export class TcpListener {
  readonly queues = new Set<TcpQueue>();
  #servers: net.Server[] = [];
  #target: Target;
  ioPort = 0;
  discoveryPort = 0;

  constructor(target: Target) {
    this.#target = target;
  }

  async listen(options: ListenOptions): Promise<void> {
    const make = (discoveryOnly: boolean) =>
      net.createServer({ noDelay: true }, (socket) => {
        const q = new TcpQueue(socket, this.#target, { maxh2cdata: options.maxh2cdata, setupTimeoutMs: options.setupTimeoutMs, discoveryOnly, log: options.log });
        this.queues.add(q);
        socket.on('close', () => this.queues.delete(q));
      });
    const listenOn = (server: net.Server, port: number) =>
      new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: options.host, port }, () => {
          server.off('error', reject);
          resolve((server.address() as net.AddressInfo).port);
        });
      });
    const io = make(false);
    this.ioPort = await listenOn(io, options.ioPort);
    this.#servers.push(io);
    this.#target.setIoPort(this.ioPort);
    if (options.discoveryPort === 0 || options.discoveryPort !== options.ioPort) {
      const disc = make(true);
      this.discoveryPort = await listenOn(disc, options.discoveryPort);
      this.#servers.push(disc);
    }
  }

  async close(): Promise<void> {
    for (const q of this.queues) q.socket.destroy();
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.#servers = [];
  }
}
