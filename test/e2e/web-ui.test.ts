// The web UI end to end in a real Chromium against a real Thicket: the operator's whole path from
// sign-in to deleting a pool, with screenshots of every page in .test-results/screenshots/.
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, screenshot, watchPageErrors } from '../helpers/browser.ts';
import { startSshd } from '../helpers/sshd.ts';
import { freePort } from '../helpers/thicket-process.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const POOL_SIZE = 200;

describe('web UI in Chromium', () => {
  let t: TestThicket;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let errors: string[];
  let tmp: string;
  let imagePath: string;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'thicket-ui-'));
    // 24 MiB with data in the first and last MiB: big enough for the upload bar to move.
    const image = Buffer.alloc(24 * 1024 * 1024);
    randomBytes(1024 * 1024).copy(image, 0);
    randomBytes(1024 * 1024).copy(image, image.length - 1024 * 1024);
    imagePath = path.join(tmp, 'golden.raw');
    await writeFile(imagePath, image);
    [t, browser] = await Promise.all([startTestThicket('pglite'), launchChromium()]);
    context = await browser.newContext({ baseURL: t.url, viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
    page = await context.newPage();
    errors = watchPageErrors(page);
  }, 180_000);

  afterAll(async () => {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await t?.destroy();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('refuses a wrong token with the API message and signs in with the admin token', async () => {
    await page.goto('/');
    await expect.poll(() => page.getByRole('heading', { name: 'Sign in to Thicket' }).isVisible()).toBe(true);
    await page.getByLabel('Token').fill('not-the-token-at-all');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('the token is not valid');
    await screenshot(page, '01-sign-in-refused');
    await page.getByLabel('Token').fill(t.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('heading', { name: 'Dashboard' }).isVisible()).toBe(true);
    // The token is not kept anywhere page scripts can read; the session is an HttpOnly cookie.
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
    expect(stored).not.toContain(t.token);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'thicket_session');
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    await expect.poll(() => page.locator('header [role="status"]').textContent(), { timeout: 10_000 }).toBe('Live');
    await expect.poll(() => page.getByRole('meter').count()).toBeGreaterThanOrEqual(2);
    await screenshot(page, '02-dashboard');
  });

  it('creates a template and uploads a version with the progress bar reaching 100 %', async () => {
    await page.getByRole('link', { name: 'Templates' }).click();
    await page.getByLabel('Name').fill('win11-golden');
    await page.getByRole('button', { name: 'Create template' }).click();
    await expect.poll(() => page.getByRole('heading', { name: 'win11-golden' }).isVisible()).toBe(true);
    for (const label of ['Template', 'Image file', 'Format']) expect(await page.getByLabel(label).count(), `${label}: ${await page.getByLabel(label).evaluateAll((els) => els.map((e) => e.outerHTML.slice(0, 120)).join(' | '))}`).toBe(1);
    await page.getByLabel('Image file').setInputFiles(imagePath);
    await page.getByRole('button', { name: 'Upload' }).click();
    const bar = page.getByRole('progressbar', { name: 'Upload progress' });
    await expect.poll(() => bar.getAttribute('aria-valuenow'), { timeout: 30_000 }).toBe('100');
    expect(await bar.getAttribute('aria-valuemax')).toBe('100');
    expect(await bar.getAttribute('aria-valuetext')).toContain('24.0 MiB of 24.0 MiB');
    await expect.poll(() => page.getByText('Uploaded version 1').isVisible()).toBe(true);
    await expect.poll(() => page.getByRole('cell', { name: 'v1', exact: true }).isVisible()).toBe(true);
    await screenshot(page, '03-templates');
  });

  it('promotes the version to a replica on a storage pool', async () => {
    await page.getByRole('link', { name: 'Replicas' }).click();
    await page.getByLabel('Template version').selectOption({ label: 'win11-golden v1' });
    const pools = await t.json<Array<{ id: string; name: string }>>('GET', '/api/v1/storage-pools');
    const fast = pools.body.find((p) => p.name === 'fast')!;
    await page.getByLabel('Storage pool').selectOption(fast.id);
    await page.getByRole('button', { name: 'Promote' }).click();
    await expect.poll(() => page.locator('tbody tr').filter({ hasText: 'win11-golden v1' }).locator('.badge').textContent(), { timeout: 60_000 }).toBe('ready');
    // With a replica row (and its move menu) on the page, the promote form's fields stay the only matches.
    for (const label of ['Template version', 'Storage pool']) expect(await page.getByLabel(label).count(), label).toBe(1);
    expect(await page.getByRole('button', { name: 'Delete', exact: true }).count()).toBe(1);
    await screenshot(page, '04-replicas');
  });

  let poolId: string;
  it(`creates a pool of ${POOL_SIZE} desktops and watches the progress bar and the grid reach ${POOL_SIZE} available`, async () => {
    await page.getByRole('link', { name: 'Desktop pools' }).click();
    for (const label of ['Replica', 'Storage pool', 'Size', 'Name pattern', 'Hosts']) expect(await page.getByLabel(label).count(), label).toBe(1);
    // Hints are descriptions, not part of the names: the labels match exactly.
    for (const label of ['Name', 'Replica', 'Storage pool', 'Size', 'Name pattern', 'Hosts']) expect(await page.getByLabel(label, { exact: true }).count(), label).toBe(1);
    await page.getByLabel('Name', { exact: true }).fill('lab');
    await page.getByLabel('Replica').selectOption({ label: 'win11-golden v1 (fast)' });
    await page.getByLabel('Size').fill(String(POOL_SIZE));
    await page.getByLabel('Name pattern').fill('lab-{n:000}');
    // The preview follows the pattern as it is typed, before anything is created.
    await expect.poll(() => page.locator('#name-preview').textContent()).toContain('lab-001, lab-002, lab-003, …, lab-200');
    await page.getByLabel('Name pattern').fill('lab-{x}');
    await expect.poll(() => page.locator('#name-preview').textContent()).toContain('exactly one {n}');
    await page.getByLabel('Name pattern').fill('lab-{n:000}');
    await screenshot(page, '05-pool-create-form');
    await page.getByRole('button', { name: 'Create pool' }).click();
    await page.waitForURL(/\/pools\/[0-9a-f-]{36}$/);
    poolId = page.url().split('/').pop()!;
    const bar = page.getByRole('progressbar', { name: 'Desktops available' });
    await expect.poll(() => bar.getAttribute('aria-valuenow'), { timeout: 60_000 }).toBe(String(POOL_SIZE));
    expect(await bar.getAttribute('aria-valuemax')).toBe(String(POOL_SIZE));
    await expect.poll(() => page.locator('.grid [data-state="available"]').count()).toBe(POOL_SIZE);
    await screenshot(page, '06-pool-ready');
  });

  it('labels the pool page fields so each name finds one field (Size, Replica)', async () => {
    for (const label of ['Size', 'Replica']) expect(await page.getByLabel(label).count(), label).toBe(1);
  });

  it('refreshes the pool and sees every desktop come back available', async () => {
    await page.getByRole('button', { name: 'Refresh', exact: true }).click();
    await expect.poll(() => page.getByRole('status').filter({ hasText: 'Refresh started' }).count()).toBe(1);
    await expect.poll(async () => (await t.json('GET', `/api/v1/jobs?resourceId=${poolId}&kind=desktop-pool.refresh`)).body[0]?.state, { timeout: 60_000 }).toBe('succeeded');
    await expect.poll(() => page.locator('.grid [data-state="available"]').count(), { timeout: 20_000 }).toBe(POOL_SIZE);
    await screenshot(page, '07-pool-refreshed');
  });

  it('adds a nightly schedule to the pool, shows its next run, disables and removes it', async () => {
    await page.getByLabel('Cron').fill('0 30 2 * * *');
    await page.getByLabel('Time zone').fill('Europe/Berlin');
    await page.getByLabel('Desktops per wave').fill('25');
    await page.getByRole('button', { name: 'Add schedule' }).click();
    const row = page.locator('tr').filter({ hasText: '0 30 2 * * *' });
    await expect.poll(() => row.count()).toBe(1);
    const schedules = (await t.json('GET', '/api/v1/schedules')).body as Array<{ id: string; nextRunAt: string; waveSize: number; timezone: string }>;
    expect(schedules).toHaveLength(1);
    expect(schedules[0]).toMatchObject({ waveSize: 25, timezone: 'Europe/Berlin' });
    expect(await row.textContent()).toContain(new Date(schedules[0].nextRunAt).toLocaleString('en-US', { timeZone: 'UTC' }));
    await screenshot(page, '07b-pool-schedule');
    // An invalid expression is refused with the API's message, naming the field.
    await page.getByLabel('Cron').fill('61 * * * * *');
    await page.getByRole('button', { name: 'Add schedule' }).click();
    await expect.poll(() => page.getByRole('alert').filter({ hasText: 'cron' }).count()).toBe(1);
    await row.getByRole('button', { name: /^Disable schedule/ }).click();
    await expect.poll(() => row.textContent()).toContain('disabled');
    await row.getByRole('button', { name: /^Remove schedule/ }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Remove' }).click();
    await expect.poll(() => row.count()).toBe(0);
    expect((await t.json('GET', '/api/v1/schedules')).body).toHaveLength(0);
  });

  it('refuses to delete the replica and names the pool that holds it', async () => {
    await page.getByRole('link', { name: 'Replicas' }).click();
    await page.getByRole('row', { name: /win11-golden v1/ }).getByRole('button', { name: 'Delete', exact: true }).click();
    const alert = page.getByRole('alert');
    await expect.poll(() => alert.textContent()).toContain('desktop pool(s) lab');
    expect(await alert.getByRole('link', { name: 'lab' }).getAttribute('href')).toBe(`/pools/${poolId}`);
    await screenshot(page, '08-replica-delete-refused');
  });

  it('deletes the pool after confirmation', async () => {
    // A second tab on the same pool page learns of the deletion from the event stream.
    const other = await page.context().newPage();
    await other.goto(`/pools/${poolId}`);
    await expect.poll(() => other.getByRole('progressbar').isVisible()).toBe(true);
    await page.goto(`/pools/${poolId}`);
    // Escape cancels and gives the keyboard focus back to the button that opened the dialog.
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await expect.poll(() => page.getByRole('dialog').isVisible()).toBe(true);
    await page.keyboard.press('Escape');
    await expect.poll(() => page.evaluate(() => document.activeElement?.textContent?.trim())).toBe('Delete');
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    const dialog = page.getByRole('dialog');
    await expect.poll(() => dialog.isVisible()).toBe(true);
    await screenshot(page, '09-pool-delete-confirm');
    // While asking, "Delete" names only the dialog's button: the page's own is gone.
    expect(await page.getByRole('button', { name: 'Delete' }).count()).toBe(1);
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.waitForURL(/\/pools$/);
    await expect.poll(async () => (await t.json('GET', `/api/v1/desktop-pools/${poolId}`)).status, { timeout: 60_000 }).toBe(404);
    await expect.poll(() => page.getByRole('link', { name: 'lab' }).count()).toBe(0);
    await screenshot(page, '10-pools-after-delete');
    await expect.poll(() => other.getByRole('status').filter({ hasText: 'has been deleted' }).isVisible(), { timeout: 30_000 }).toBe(true);
    expect(await other.getByRole('button', { name: 'Refresh' }).count()).toBe(0);
    await other.close();
  });

  it('shows hosts and jobs pages: adds and removes a host, lists jobs with their results', async () => {
    await page.getByRole('link', { name: 'Hosts' }).click();
    await page.getByLabel('Name', { exact: true }).fill('hv-01');
    await page.getByLabel('Host NQN').fill('nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555');
    await page.getByRole('button', { name: 'Add host' }).click();
    await expect.poll(() => page.getByRole('cell', { name: 'hv-01', exact: true }).isVisible()).toBe(true);
    await screenshot(page, '11-hosts');
    await page.getByRole('row', { name: /hv-01/ }).getByRole('button', { name: 'Remove', exact: true }).click();
    await expect.poll(() => page.getByRole('cell', { name: 'hv-01', exact: true }).count()).toBe(0);
    // A hypervisor reached over SSH: the key is tested, its fingerprint shown and then pinned.
    const sshd = await startSshd();
    try {
      await page.getByLabel('Name', { exact: true }).fill('hv-ssh');
      await page.getByLabel('Host NQN').fill('nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-666666666666');
      await page.getByLabel('Hook type').selectOption('linux-nvme');
      await page.getByLabel('SSH address').fill(sshd.address);
      await page.getByLabel('SSH port').fill(String(sshd.port));
      await page.getByLabel('SSH user').fill(sshd.username);
      await page.getByLabel('Private key').fill(sshd.clientKey);
      await page.getByRole('button', { name: 'Add host' }).click();
      await expect.poll(() => page.getByRole('cell', { name: 'not pinned' }).count()).toBe(1);
      await page.getByRole('row', { name: /hv-ssh/ }).getByRole('button', { name: 'Test', exact: true }).click();
      const report = page.getByRole('region', { name: 'Test of hv-ssh' });
      await expect.poll(() => report.textContent(), { timeout: 20_000 }).toContain(sshd.hostKeyFingerprint);
      await screenshot(page, '11b-host-test');
      await report.getByRole('button', { name: 'Trust this key' }).click();
      await expect.poll(() => page.getByRole('cell', { name: sshd.hostKeyFingerprint }).count()).toBe(1);
      await page.getByRole('row', { name: /hv-ssh/ }).getByRole('button', { name: 'Remove', exact: true }).click();
      await expect.poll(() => page.getByRole('cell', { name: 'hv-ssh', exact: true }).count()).toBe(0);
    } finally {
      await sshd.stop();
    }
    // A failed job: verification of a replica whose file was damaged. Its error is readable at once.
    const [replica] = (await t.json<Array<{ id: string; storagePoolId: string }>>('GET', '/api/v1/replicas')).body;
    const pool = (await t.json<Array<{ id: string; path: string }>>('GET', '/api/v1/storage-pools')).body.find((p) => p.id === replica.storagePoolId)!;
    const file = path.join(pool.path, 'replicas', `${replica.id}.img`);
    const fd = await open(file, 'r+');
    try {
      await fd.write(Buffer.from('damaged'), 0, 7, 4096);
    } finally {
      await fd.close();
    }
    const verify = await t.json<{ job: { id: string } }>('POST', `/api/v1/replicas/${replica.id}/verify`);
    expect((await t.waitForJob(verify.body.job.id)).state).toBe('failed');
    await page.getByRole('link', { name: 'Jobs' }).click();
    await expect.poll(() => page.getByRole('cell', { name: 'desktop-pool.refresh' }).count()).toBeGreaterThan(0);
    // Each job says in words what it did and to what: the pool's creation is its provisioning.
    await expect.poll(() => page.getByRole('cell', { name: `Provision pool lab (${POOL_SIZE} desktops)` }).count()).toBe(1);
    await expect.poll(() => page.getByRole('cell', { name: 'Refresh pool lab' }).count()).toBeGreaterThan(0);
    await expect.poll(() => page.getByRole('cell', { name: /^Verify replica win11-golden v1$/ }).count()).toBeGreaterThan(0);
    await expect.poll(() => page.getByText(/REPLICA_CORRUPT: /).first().isVisible()).toBe(true);
    await screenshot(page, '12-jobs');
  });

  it('signs out, after which the API refuses the browser', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect.poll(() => page.getByRole('heading', { name: 'Sign in to Thicket' }).isVisible()).toBe(true);
    const status = await page.evaluate(async () => (await fetch('/api/v1/desktop-pools')).status);
    expect(status).toBe(401);
    expect(errors).toEqual([]);
  });

  it('refuses an API request without a session, and a state change without the CSRF token', async () => {
    const fresh = await browser.newContext({ baseURL: t.url });
    try {
      const res = await fresh.request.get('/api/v1/templates');
      expect(res.status()).toBe(401);
      // Signed in, but a request that does not echo the CSRF token (what a forged form would send).
      const signIn = await fresh.request.post('/api/v1/session', { data: { token: t.token } });
      expect(signIn.status()).toBe(201);
      const forged = await fresh.request.post('/api/v1/templates', { data: { name: 'forged' } });
      expect(forged.status()).toBe(403);
      expect((await forged.json()).error.code).toBe('CSRF_REJECTED');
    } finally {
      await fresh.close();
    }
  });
});

describe('web UI with a large pool and a lost connection', () => {
  const SIZE = 2000;
  let t: TestThicket;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let poolId: string;
  let names: string[];

  beforeAll(async () => {
    [t, browser] = await Promise.all([startTestThicket('pglite', { httpPort: await freePort() }), launchChromium()]);
    const img = path.join(t.dataDir, 'golden.img');
    await writeFile(img, Buffer.alloc(8 * 1024 * 1024, 7));
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string }>;
    const fast = pools.find((p) => p.name === 'fast')!.id;
    const tpl = (await t.json('POST', '/api/v1/templates', { name: 'big' })).body.id;
    const v = (await t.json('POST', `/api/v1/templates/${tpl}/versions`, { sourcePath: img, format: 'raw' })).body.id;
    const r = (await t.json('POST', '/api/v1/replicas', { templateVersionId: v, storagePoolId: fast })).body;
    expect((await t.waitForJob(r.job.id)).state).toBe('succeeded');
    const created = (await t.json('POST', '/api/v1/desktop-pools', { name: 'big', replicaId: r.replica.id, storagePoolId: fast, size: SIZE, namePattern: 'vdi-{n:0000}', hostIds: [] })).body;
    expect((await t.waitForJob(created.job.id, 120_000)).state).toBe('succeeded');
    poolId = created.pool.id;
    names = ((await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body as Array<{ name: string }>).map((d) => d.name);
    context = await browser.newContext({ baseURL: t.url, viewport: { width: 1280, height: 900 } });
    expect((await context.request.post('/api/v1/session', { data: { token: t.token } })).status()).toBe(201);
    page = await context.newPage();
  }, 240_000);

  afterAll(async () => {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await t?.destroy();
  });

  it(`renders only the visible part of a ${SIZE}-desktop grid and reaches the last desktop by scrolling`, async () => {
    await page.goto(`/pools/${poolId}`);
    const bar = page.getByRole('progressbar', { name: 'Desktops available' });
    await expect.poll(() => bar.getAttribute('aria-valuenow'), { timeout: 20_000 }).toBe(String(SIZE));
    const cells = await page.locator('.grid li').count();
    expect(cells).toBeGreaterThan(0);
    expect(cells).toBeLessThan(400);
    expect(await page.getByText('vdi-2000', { exact: true }).count()).toBe(0);
    await page.locator('.grid-scroll').evaluate((el) => el.scrollTo(0, el.scrollHeight));
    await expect.poll(() => page.getByText('vdi-2000', { exact: true }).count()).toBe(1);
    expect(await page.locator('.grid li').count()).toBeLessThan(400);
    await screenshot(page, '20-pool-2000-scrolled');
  });

  it('reconnects with ?since= after the server restarts and shows changes made while it was away', async () => {
    const sockets: string[] = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    // Make sure the page has a seq to resume from.
    await t.json('POST', `/api/v1/desktop-pools/${poolId}/desktops/${names[0]}/state`, { state: 'in-use' });
    await expect.poll(() => page.locator('.legend [data-state="in-use"] .count').textContent(), { timeout: 10_000 }).toBe('1');
    await t.stop();
    await expect.poll(() => page.locator('header [role="status"]').textContent(), { timeout: 10_000 }).toBe('Reconnecting…');
    // Let the page's retries back off, so the changes below happen before it is back.
    await new Promise((r) => setTimeout(r, 2500));
    await t.restart();
    for (const n of names.slice(1, 40)) expect((await t.json('POST', `/api/v1/desktop-pools/${poolId}/desktops/${n}/state`, { state: 'in-use' })).status).toBe(200);
    await expect.poll(() => page.locator('header [role="status"]').textContent(), { timeout: 20_000 }).toBe('Live');
    await expect.poll(() => page.locator('.legend [data-state="in-use"] .count').textContent(), { timeout: 10_000 }).toBe('40');
    expect(sockets.some((u) => /[?&]since=\d+/.test(u))).toBe(true);
  });
});
