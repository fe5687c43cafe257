// Worker for the burst benchmark: reads 4 KiB blocks from one namespace in a loop on its own thread, so
// the latencies measured are the target's, not the benchmark's own event loop's.
import { parentPort, workerData } from 'node:worker_threads';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';

const { port, subnqn, hostnqn } = workerData as { port: number; subnqn: string; hostnqn: string };
const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port, subnqn, hostnqn });
let running = false;
let latencies: number[] = [];

parentPort!.on('message', async (msg: 'start' | 'stop' | 'close') => {
  if (msg === 'start') {
    latencies = [];
    running = true;
    for (let i = 0; i < 10_000_000 && running; i++) {
      const t0 = performance.now();
      await host.read(1, (i * 7) % 256, 1);
      latencies.push((performance.now() - t0) * 1000);
    }
  } else if (msg === 'stop') {
    running = false;
    await new Promise((r) => setTimeout(r, 5));
    parentPort!.postMessage(latencies);
  } else {
    await host.close();
    process.exit(0);
  }
});
parentPort!.postMessage('ready');
