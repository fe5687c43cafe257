// Web UI benchmark (issue 6): the pool page of a 2,000-desktop pool in Debian's chromium, measured in
// the page (web/src/perf.ts): time to render the desktops once their list has arrived, the DOM it
// costs, and the main-thread time to apply 2,000 desktop.state events, delivered two ways:
//  - 2,000 separate events of one desktop each (the page's worst case: one message per change),
//    published on the server's event bus and streamed over the real WebSocket;
//  - 2,000 state changes through the API (POST .../desktops/:name/state), which the server batches.
//
//   npm run bench:ui [-- --size 2000]
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { PoolPagePerf as Perf } from '../../web/src/perf.ts';
import { launchChromium } from '../helpers/browser.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const args = process.argv.slice(2);
const sizeArg = args.indexOf('--size');
const SIZE = sizeArg >= 0 ? Number(args[sizeArg + 1]) : 2000;

async function waitJob(t: TestThicket, id: string): Promise<void> {
  const job = await t.waitForJob(id, 600_000);
  if (job.state !== 'succeeded') throw new Error(`job ${id} ${job.state}: ${JSON.stringify(job.error)}`);
}

const t = await startTestThicket('pglite', { logLevel: 'silent' });
const browser = await launchChromium();
try {
  const img = path.join(t.dataDir, 'golden.img');
  writeFileSync(img, Buffer.alloc(16 * 1024 * 1024, 1));
  const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string }>;
  const fast = pools.find((p) => p.name === 'fast')!.id;
  const tpl = (await t.json('POST', '/api/v1/templates', { name: 'golden' })).body.id;
  const v = (await t.json('POST', `/api/v1/templates/${tpl}/versions`, { sourcePath: img, format: 'raw' })).body.id;
  const r = (await t.json('POST', '/api/v1/replicas', { templateVersionId: v, storagePoolId: fast })).body;
  await waitJob(t, r.job.id);
  const created = (await t.json('POST', '/api/v1/desktop-pools', { name: 'bench', replicaId: r.replica.id, storagePoolId: fast, size: SIZE, namePattern: 'vdi-{n:0000}', hostIds: [] })).body;
  await waitJob(t, created.job.id);
  const poolId: string = created.pool.id;
  const desktops = (await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body as Array<{ name: string; cloneId: string }>;

  const context = await browser.newContext({ baseURL: t.url, viewport: { width: 1280, height: 900 } });
  const signIn = await context.request.post('/api/v1/session', { data: { token: t.token } });
  if (signIn.status() !== 201) throw new Error(`sign-in failed: ${signIn.status()}`);
  const page = await context.newPage();
  const perf = () => page.evaluate(() => ({ ...(window as unknown as { __thicketPerf: Perf }).__thicketPerf }));
  const until = async (pred: (p: Perf) => boolean, what: string, timeoutMs = 60_000): Promise<Perf> => {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
      const p = await perf().catch(() => undefined);
      if (p && pred(p)) return p;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`timed out waiting for ${what}`);
  };

  const rows: Array<[string, string]> = [];
  // Render: three cold loads of the pool page; the median is reported.
  const renders: number[] = [];
  let loaded: Perf | undefined;
  for (let i = 0; i < 3; i++) {
    await page.goto(`/pools/${poolId}`);
    loaded = await until((p) => p.renderMs !== undefined && p.desktopsRendered === SIZE, 'the grid');
    renders.push(loaded.renderMs!);
  }
  renders.sort((a, b) => a - b);
  const navToGrid = await page.evaluate(() => performance.now());
  rows.push([`render ${SIZE} desktops (list received → grid committed), median of 3`, `${renders[1].toFixed(1)} ms`]);
  rows.push(['grid cells in the DOM', `${loaded!.domCells} of ${SIZE}`]);
  rows.push(['page load → grid ready (last load, incl. API requests)', `${navToGrid.toFixed(0)} ms`]);

  // 2,000 separate single-desktop events through the real event stream.
  await page.evaluate(() => Object.assign((window as unknown as { __thicketPerf: Perf }).__thicketPerf, { eventsApplied: 0, desktopChangesApplied: 0, applyMs: 0, frames: 0, maxFrameMs: 0 }));
  const started = performance.now();
  for (const d of desktops) t.instance.events.emit('desktop.state', { poolId, desktops: [{ name: d.name, cloneId: d.cloneId, state: 'in-use' }] });
  const single = await until((p) => p.desktopChangesApplied >= SIZE, `${SIZE} single events`);
  const singleWall = performance.now() - started;
  rows.push([`apply ${SIZE} single-desktop events: main-thread time (all frames)`, `${single.applyMs.toFixed(1)} ms in ${single.frames} frames`]);
  rows.push(['  longest frame', `${single.maxFrameMs.toFixed(1)} ms`]);
  rows.push(['  events received by the page', String(single.eventsApplied)]);
  rows.push(['  wall time, first publish → last applied (server included)', `${singleWall.toFixed(0)} ms`]);

  // 2,000 changes through the API: what an operator's fleet actually produces. (The events above did not
  // touch the database, where every desktop is still available: each request below is a real change.)
  await page.evaluate(() => Object.assign((window as unknown as { __thicketPerf: Perf }).__thicketPerf, { eventsApplied: 0, desktopChangesApplied: 0, applyMs: 0, frames: 0, maxFrameMs: 0 }));
  const apiStarted = performance.now();
  const queue = desktops.map((d) => d.name);
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let n = queue.pop(); n !== undefined; n = queue.pop()) {
        const res = await t.api(`/api/v1/desktop-pools/${poolId}/desktops/${n}/state`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ state: 'in-use' }) });
        if (!res.ok) throw new Error(`state change failed: ${res.status} ${await res.text()}`);
      }
    }),
  );
  const batched = await until((p) => p.desktopChangesApplied >= SIZE, `${SIZE} API state changes`);
  const apiWall = performance.now() - apiStarted;
  rows.push([`apply ${SIZE} API state changes: main-thread time (all frames)`, `${batched.applyMs.toFixed(1)} ms in ${batched.frames} frames`]);
  rows.push(['  longest frame', `${batched.maxFrameMs.toFixed(1)} ms`]);
  rows.push(['  desktop.state events received (server batches per 100 ms)', String(batched.eventsApplied)]);
  rows.push(['  wall time, first request → last applied (API included)', `${apiWall.toFixed(0)} ms`]);

  const available = await page.getByRole('progressbar', { name: 'Desktops available' }).getAttribute('aria-valuenow');
  if (available !== '0') throw new Error(`progress bar shows ${available} available, expected 0 (all in use)`);

  console.log(`\nUI benchmark: pool page with ${SIZE} desktops (chromium ${browser.version()})\n`);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, val] of rows) console.log(`${k.padEnd(w)}  ${val}`);
  await context.close();
} finally {
  await browser.close();
  await t.destroy();
}
