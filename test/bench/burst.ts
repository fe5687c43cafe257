// Burst provisioning benchmark (issue 5): time from POST to job success for desktop pools of 1,000 and
// 10,000 desktops (clones created, exported, visible to a connected TypeScript host) on PGlite and on
// PostgreSQL; refresh of a 1,000-desktop pool; deleting it; and the p99 of 4 KiB reads on an exported
// clone while a 1,000-desktop burst runs, against the same reads on an idle system.
//
//   npm run bench:burst [-- --sizes 1000,10000 --db pglite,postgres]
import { writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { NvmeTcpHost } from '../../src/nvmeof/host/nvme-tcp-host.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const sizes = arg('sizes', '1000,10000').split(',').map(Number);
const dbs = arg('db', 'pglite,postgres').split(',') as Array<'pglite' | 'postgres'>;
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:dddddddd-0000-4000-8000-000000000004';

async function waitJob(t: TestThicket, id: string, timeoutMs = 300_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 1_000_000 && Date.now() < deadline; i++) {
    const { body } = await t.json('GET', `/api/v1/jobs/${id}`);
    if (body.state !== 'queued' && body.state !== 'running') return body;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('job did not finish');
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function run(kind: 'pglite' | 'postgres'): Promise<void> {
  const t = await startTestThicket(kind, { logLevel: 'silent' });
  try {
    const img = path.join(t.dataDir, 'golden.img');
    writeFileSync(img, Buffer.alloc(16 * 1024 * 1024, 1));
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string }>;
    const fast = pools.find((p) => p.name === 'fast')!.id;
    const tpl = (await t.json('POST', '/api/v1/templates', { name: 'golden' })).body.id;
    const v = (await t.json('POST', `/api/v1/templates/${tpl}/versions`, { sourcePath: img, format: 'raw' })).body.id;
    const r = (await t.json('POST', '/api/v1/replicas', { templateVersionId: v, storagePoolId: pools.find((p) => p.name === 'capacity')!.id })).body;
    await waitJob(t, r.job.id);
    const hostId = (await t.json('POST', '/api/v1/hosts', { name: 'bench-host', nqn: HOSTNQN })).body.id;

    // A small pool whose clone is read during the bursts.
    const probePool = (await t.json('POST', '/api/v1/desktop-pools', { name: 'probe', replicaId: r.replica.id, storagePoolId: fast, size: 1, namePattern: 'p-{n}', hostIds: [hostId] })).body;
    await waitJob(t, probePool.job.id);
    const probe = new Worker(new URL('./probe-reader.ts', import.meta.url), { workerData: { port: t.instance.nvmePort, subnqn: 'nqn.2026-11.io.thicket:probe', hostnqn: HOSTNQN } });
    await new Promise((r) => probe.once('message', r));
    const measure = async <T>(fn: () => Promise<T>): Promise<{ result: T; latencies: number[] }> => {
      probe.postMessage('start');
      const result = await fn();
      const latencies = await new Promise<number[]>((r) => {
        probe.once('message', r);
        probe.postMessage('stop');
      });
      return { result, latencies };
    };
    const idle = (await measure(() => new Promise((r) => setTimeout(r, 1500)))).latencies;

    for (const size of sizes) {
      const name = `burst-${size}`;
      // The host connects before the pool exists, to the subsystem the pool will create first, as a
      // hypervisor would; the namespaces then appear without a reconnect.
      const t0 = performance.now();
      let res: any;
      const { result: job, latencies: duringLat } = await measure(async () => {
        res = (await t.json('POST', '/api/v1/desktop-pools', { name, replicaId: r.replica.id, storagePoolId: fast, size, namePattern: 'vm-{n:00000}', hostIds: [hostId] })).body;
        return waitJob(t, res.job.id);
      });
      const provisionMs = performance.now() - t0;
      if (job.state !== 'succeeded') throw new Error(`provision failed: ${JSON.stringify(job.error)}`);
      const host = await NvmeTcpHost.connect({ address: '127.0.0.1', port: t.instance.nvmePort, subnqn: `nqn.2026-11.io.thicket:${name}`, hostnqn: HOSTNQN });
      const visible = (await host.activeNamespaces()).length;
      await host.close();
      const visibleMs = performance.now() - t0;

      const t1 = performance.now();
      const refresh = (await t.json('POST', `/api/v1/desktop-pools/${res.pool.id}/refresh`, {})).body;
      const rj = await waitJob(t, refresh.job.id);
      const refreshMs = performance.now() - t1;

      const t2 = performance.now();
      const del = (await t.json('DELETE', `/api/v1/desktop-pools/${res.pool.id}`)).body;
      const dj = await waitJob(t, del.job.id);
      const deleteMs = performance.now() - t2;

      console.log(
        `${kind.padEnd(8)} ${String(size).padStart(6)} desktops: provision ${provisionMs.toFixed(0)} ms (${(size / (provisionMs / 1000)).toFixed(0)}/s), ` +
          `visible to a host ${visibleMs.toFixed(0)} ms (${visible} namespaces in the first subsystem), refresh ${refreshMs.toFixed(0)} ms (${rj.state}), delete ${deleteMs.toFixed(0)} ms (${dj.state})`,
      );
      if (size === 1000 && duringLat.length > 10) {
        const p99Idle = pct(idle, 99);
        const p99Burst = pct(duringLat, 99);
        console.log(
          `${kind.padEnd(8)} 4 KiB read latency on an exported clone: idle p50 ${pct(idle, 50).toFixed(0)} µs p99 ${p99Idle.toFixed(0)} µs; during the 1,000 burst p50 ${pct(duringLat, 50).toFixed(0)} µs p99 ${p99Burst.toFixed(0)} µs (${duringLat.length} reads); ratio ${(p99Burst / p99Idle).toFixed(2)}`,
        );
      }
    }
    probe.postMessage('close');
  } finally {
    await t.destroy();
  }
}

for (const kind of dbs) await run(kind);
process.exit(0);
