// Runs the real process (node src/main.ts), kills it with SIGKILL at awkward moments and checks what the
// next start makes of the leftovers.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../../src/thicket.ts';
import { createTestDatabase, DATABASE_KINDS, type TestDatabase } from '../helpers/databases.ts';

const NODE = path.join(ROOT, 'node_modules/.bin/node');
const MAIN = path.join(ROOT, 'src/main.ts');
const TOKEN = 'crash-test-admin-token-0123456789';
const IMAGE_BYTES = 512 * 1024 * 1024;
const SEGMENT = 64 * 1024;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** The parent's environment without anything that would configure the child by accident. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('THICKET_') || k === 'DATABASE_URL' || k.startsWith('VITEST') || k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  return env;
}

interface Proc {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
}

const children = new Set<ChildProcess>();

// Each child gets NVMe ports of its own so test files running in parallel never collide on 4420/8009.
// They are taken below the kernel's ephemeral range (32768-60999 here): a port in that range can be
// handed to any outgoing connection on the machine at any moment, and a listen on it then fails.
let nextNvmePort = 20000 + ((process.pid * 37) % 5000) * 2;

function run(env: NodeJS.ProcessEnv): Proc {
  const ports = { THICKET_NVME_PORT: String(nextNvmePort), THICKET_DISCOVERY_PORT: String(nextNvmePort + 1) };
  nextNvmePort += 2;
  const child = spawn(NODE, [MAIN], { cwd: ROOT, env: { ...baseEnv(), ...ports, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (b) => (out += b));
  child.stderr!.on('data', (b) => (out += b));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? signal ?? -1);
    }),
  );
  return { child, output: () => out, exited };
}

/** A Thicket process on a data directory (and optionally a PostgreSQL database), restartable. */
class ThicketProcess {
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  port = 0;
  proc: Proc | undefined;
  /** Output of every run so far, for failure messages. */
  log = '';

  constructor(dataDir: string, databaseUrl: string | undefined) {
    this.dataDir = dataDir;
    this.databaseUrl = databaseUrl;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(timeoutMs = 120_000): Promise<void> {
    this.port = await freePort();
    const proc = run({
      THICKET_DATA_DIR: this.dataDir,
      THICKET_HTTP_ADDR: `127.0.0.1:${this.port}`,
      THICKET_ADMIN_TOKEN: TOKEN,
      THICKET_LOG_LEVEL: 'info',
      ...(this.databaseUrl ? { DATABASE_URL: this.databaseUrl } : {}),
    });
    this.proc = proc;
    const deadline = Date.now() + timeoutMs;
    let exitCode: number | string | undefined;
    void proc.exited.then((c) => (exitCode = c));
    for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
      if (proc.output().includes('Thicket is running at')) return;
      if (exitCode !== undefined) break;
      await sleep(25);
    }
    this.log += proc.output();
    throw new Error(`Thicket did not start (exit ${exitCode}):\n${proc.output()}`);
  }

  async kill(): Promise<void> {
    const proc = this.proc!;
    proc.child.kill('SIGKILL');
    expect(await proc.exited).toBe('SIGKILL');
    this.log += proc.output();
    this.proc = undefined;
  }

  async stop(): Promise<number | string> {
    const proc = this.proc!;
    proc.child.kill('SIGTERM');
    const code = await Promise.race([proc.exited, sleep(20_000).then(() => 'timeout')]);
    if (code === 'timeout') proc.child.kill('SIGKILL');
    this.log += proc.output();
    this.proc = undefined;
    return code;
  }

  async json(method: string, pathname: string, body?: unknown): Promise<{ status: number; body: any }> {
    const res = await fetch(`${this.url}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function listFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

describe.each(DATABASE_KINDS)('crash recovery of the real process (%s)', (kind) => {
  let workDir: string;
  let image: string;
  let imageSha256: string;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'thicket-crash-'));
    // 512 MiB: 64 KiB segments alternating random and zero, so half the blocks are zero.
    image = path.join(workDir, 'golden.img');
    const hash = createHash('sha256');
    const fh = await open(image, 'w');
    try {
      const chunk = Buffer.alloc(4 * 1024 * 1024);
      for (let pos = 0; pos < IMAGE_BYTES; pos += chunk.length) {
        chunk.fill(0);
        for (let off = 0; off < chunk.length; off += 2 * SEGMENT) randomBytes(SEGMENT).copy(chunk, off);
        hash.update(chunk);
        await fh.write(chunk, 0, chunk.length, pos);
      }
    } finally {
      await fh.close();
    }
    imageSha256 = hash.digest('hex');
  }, 300_000);

  afterEach(async () => {
    for (const c of [...children]) c.kill('SIGKILL');
    for (const fn of cleanups.splice(0).reverse()) await fn().catch(() => {});
  });

  afterAll(async () => {
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  async function newThicket(): Promise<ThicketProcess> {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'thicket-crash-data-'));
    const db: TestDatabase = await createTestDatabase(kind);
    cleanups.push(async () => {
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    });
    return new ThicketProcess(dataDir, db.url);
  }

  it(
    'after SIGKILL in the middle of a promotion, the restarted process finishes or rolls back the replica and leaves no stray file',
    async () => {
      const t = await newThicket();
      await t.start();
      const template = await t.json('POST', '/api/v1/templates', { name: 'golden' });
      expect(template.status).toBe(201);
      const version = await t.json('POST', `/api/v1/templates/${template.body.id}/versions`, { sourcePath: image, format: 'raw' });
      expect(version.status, JSON.stringify(version.body)).toBe(201);
      expect(version.body).toMatchObject({ sizeBytes: IMAGE_BYTES, sha256: imageSha256 });
      const pools = await t.json('GET', '/api/v1/storage-pools');
      const pool = pools.body.find((p: any) => p.name === 'fast');
      const promoted = await t.json('POST', '/api/v1/replicas', { templateVersionId: version.body.id, storagePoolId: pool.id });
      expect(promoted.status).toBe(202);
      const replicaId: string = promoted.body.replica.id;
      const jobId: string = promoted.body.job.id;

      // Kill as soon as the job reports partial progress.
      let killedAt: any;
      const deadline = Date.now() + 30_000;
      for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
        const job = (await t.json('GET', `/api/v1/jobs/${jobId}`)).body;
        if (job.state === 'running' && job.progress.done > 0 && job.progress.done < job.progress.total) {
          killedAt = job;
          break;
        }
        expect(['queued', 'running'], `the job ended before it could be interrupted: ${JSON.stringify(job)}`).toContain(job.state);
        await sleep(5);
      }
      expect(killedAt, 'the job never reported partial progress').toBeDefined();
      await t.kill();

      // What the crash left: only this replica's files (normally just its partial copy).
      const replicasDir = path.join(pool.path, 'replicas');
      const leftAfterCrash = await listFiles(replicasDir);
      const own = [`${replicaId}.img.partial`, `${replicaId}.img`, `${replicaId}.json`];
      expect(leftAfterCrash.every((f) => own.includes(f)), leftAfterCrash.join(', ')).toBe(true);

      await t.start();
      const deadline2 = Date.now() + 90_000;
      let job: any;
      for (let i = 0; i < 10_000 && Date.now() < deadline2; i++) {
        job = (await t.json('GET', `/api/v1/jobs/${jobId}`)).body;
        const replica = (await t.json('GET', `/api/v1/replicas/${replicaId}`)).body;
        // At no moment after the restart is the replica ready with its job still unfinished.
        if (replica.state === 'ready') expect(['running', 'succeeded']).toContain(job.state);
        if (job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled') break;
        await sleep(100);
      }
      expect(['succeeded', 'failed'], `${JSON.stringify(job)}\n${t.log}`).toContain(job.state);
      // It really was interrupted and picked up again, not finished before the kill.
      expect(job.attempts).toBeGreaterThanOrEqual(2);

      const replica = (await t.json('GET', `/api/v1/replicas/${replicaId}`)).body;
      const files = await listFiles(replicasDir);
      const imagePath = path.join(replicasDir, `${replicaId}.img`);
      if (job.state === 'succeeded') {
        expect(replica).toMatchObject({ state: 'ready', sizeBytes: IMAGE_BYTES, sha256: imageSha256 });
        expect(files).toEqual([`${replicaId}.img`, `${replicaId}.json`]);
        const info = await stat(imagePath);
        expect(info.size).toBe(IMAGE_BYTES);
        expect(info.mode & 0o222, 'the replica file must be read-only').toBe(0);
        // Sparse: the zero half was not written (allow generous slack for file-system metadata).
        expect(info.blocks * 512).toBeLessThan(IMAGE_BYTES * 0.75);
        expect(await sha256File(imagePath)).toBe(version.body.sha256);
      } else {
        expect(replica.state).toBe('failed');
        expect(files).toEqual([]);
      }

      // Nothing under the pool that no replica row knows, on any pool.
      const rows = (await t.json('GET', '/api/v1/replicas')).body as Array<{ id: string; state: string }>;
      for (const p of pools.body) {
        for (const f of await listFiles(path.join(p.path, 'replicas'))) {
          expect(f).not.toMatch(/\.partial$/);
          const owner = rows.find((r) => f.startsWith(`${r.id}.`));
          expect(owner, `${f} in ${p.path} has no replica row`).toBeDefined();
          expect(owner!.state).not.toBe('failed');
        }
      }

      // A clean shutdown afterwards works and exits 0.
      expect(await t.stop()).toBe(0);
    },
    400_000,
  );

  it('after SIGKILL during a template upload, the restarted process leaves no orphan file under templates/', async () => {
    const t = await newThicket();
    await t.start();
    const template = await t.json('POST', '/api/v1/templates', { name: 'uploading' });
    const templateDir = path.join(t.dataDir, 'templates', template.body.id);

    // A slow, never-ending octet-stream upload: 1 MiB of non-zero bytes every 20 ms.
    const req = http.request(`${t.url}/api/v1/templates/${template.body.id}/versions?format=raw`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
    });
    req.on('error', () => {});
    req.on('response', (res) => res.resume());
    const chunk = Buffer.alloc(1024 * 1024, 0xab);
    let sending = true;
    const pump = (async () => {
      for (let i = 0; i < 3_000 && sending; i++) {
        // A killed server never drains: stop waiting when the request closes.
        if (!req.write(chunk)) await new Promise((r) => {
          req.once('drain', r);
          req.once('close', r);
        });
        await sleep(20);
      }
    })().catch(() => {});

    // Kill once the upload has landed in a temporary file.
    let partial: string | undefined;
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 2_000 && Date.now() < deadline && !partial; i++) {
      for (const f of await listFiles(templateDir)) {
        if ((await stat(path.join(templateDir, f))).size >= 4 * 1024 * 1024) partial = f;
      }
      if (!partial) await sleep(20);
    }
    expect(partial, 'the upload never reached the disk').toBeDefined();
    expect(partial!.startsWith('.')).toBe(true);
    await t.kill();
    sending = false;
    req.destroy();
    await Promise.race([pump, sleep(5_000)]);
    expect(await listFiles(templateDir)).toContain(partial);

    await t.start();
    expect(await listFiles(templateDir)).toEqual([]);
    const after = await t.json('GET', `/api/v1/templates/${template.body.id}`);
    expect(after.status).toBe(200);
    expect(after.body.versions).toEqual([]);
    // Nothing anywhere under templates/ that no row knows.
    for (const dir of await listFiles(path.join(t.dataDir, 'templates'))) {
      expect(dir).toBe(template.body.id);
    }
    // The template still works: a new upload is version 1.
    const ok = await fetch(`${t.url}/api/v1/templates/${template.body.id}/versions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(8192, 1),
    });
    expect(ok.status).toBe(201);
    expect((await ok.json()).version).toBe(1);
    expect(await t.stop()).toBe(0);
  }, 300_000);
});

describe('process start-up', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const c of [...children]) c.kill('SIGKILL');
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  async function dataDir(): Promise<string> {
    const d = await mkdtemp(path.join(os.tmpdir(), 'thicket-startup-'));
    dirs.push(d);
    return d;
  }

  it('a second process on the same embedded-database data directory refuses to start, naming the running one', async () => {
    const dir = await dataDir();
    const first = new ThicketProcess(dir, undefined);
    await first.start();
    try {
      const port = await freePort();
      const second = run({ THICKET_DATA_DIR: dir, THICKET_HTTP_ADDR: `127.0.0.1:${port}`, THICKET_ADMIN_TOKEN: TOKEN, THICKET_LOG_LEVEL: 'warn' });
      const code = await Promise.race([second.exited, sleep(30_000).then(() => 'timeout')]);
      expect(code, second.output()).toBe(1);
      expect(second.output()).toContain(`another Thicket process (pid ${first.proc!.child.pid}) is using the data directory ${dir}`);
      // The first one is unaffected.
      expect((await fetch(`${first.url}/healthz`)).status).toBe(200);
      expect((await first.json('GET', '/api/v1/storage-pools')).status).toBe(200);
    } finally {
      expect(await first.stop()).toBe(0);
    }
    // A clean stop releases the directory: the next start succeeds.
    await first.start();
    expect(await first.stop()).toBe(0);
  }, 300_000);

  it('of three processes started at the same moment on one fresh embedded-database data directory, exactly one runs', async () => {
    const dir = await dataDir();
    const ports = [await freePort(), await freePort(), await freePort()];
    const procs = ports.map((port) => run({ THICKET_DATA_DIR: dir, THICKET_HTTP_ADDR: `127.0.0.1:${port}`, THICKET_ADMIN_TOKEN: TOKEN, THICKET_LOG_LEVEL: 'warn' }));
    const deadline = Date.now() + 150_000;
    const exits: Array<number | string | undefined> = [undefined, undefined, undefined];
    procs.forEach((p, i) => void p.exited.then((c) => (exits[i] = c)));
    // Wait until one is serving and the two others have given up.
    for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
      const running = procs.filter((p) => p.output().includes('Thicket is running at')).length;
      if (running >= 1 && exits.filter((e) => e !== undefined).length >= 2) break;
      if (exits.every((e) => e !== undefined)) break;
      await sleep(50);
    }
    const outputs = procs.map((p) => p.output()).join('\n---\n');
    const winners = procs.filter((p, i) => exits[i] === undefined && p.output().includes('Thicket is running at'));
    expect(winners, outputs).toHaveLength(1);
    for (const [i, p] of procs.entries()) {
      if (p === winners[0]) continue;
      expect(exits[i], outputs).toBe(1);
      expect(p.output()).toMatch(/another Thicket process \(pid \d+\) is using the data directory/);
    }
    const winner = winners[0];
    winner.child.kill('SIGTERM');
    const code = await winner.exited;
    expect(code, winner.output()).toBe(0);
  }, 300_000);

  it('a process killed with SIGKILL does not lock out the next start on its data directory', async () => {
    const dir = await dataDir();
    const t = new ThicketProcess(dir, undefined);
    await t.start();
    await t.kill();
    await t.start();
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    expect(await t.stop()).toBe(0);
  }, 300_000);

  it.each([
    ['THICKET_HTTP_ADDR', 'nonsense'],
    ['THICKET_HTTP_ADDR', '127.0.0.1:99999'],
    ['THICKET_NVME_PORT', 'abc'],
    ['THICKET_DISCOVERY_PORT', '0'],
    ['THICKET_NVME_ADDR', 'bad/addr'],
    ['DATABASE_URL', 'mysql://localhost/thicket'],
    ['THICKET_ADMIN_TOKEN', 'short'],
    ['THICKET_LOG_LEVEL', 'loud'],
  ])('an invalid %s=%s makes the process exit with code 2 and a message naming it', async (name, value) => {
    const dir = await dataDir();
    const p = run({ THICKET_DATA_DIR: dir, THICKET_HTTP_ADDR: '127.0.0.1:1', [name]: value });
    const code = await Promise.race([p.exited, sleep(30_000).then(() => 'timeout')]);
    expect(code, p.output()).toBe(2);
    expect(p.output()).toMatch(new RegExp(`^thicket: configuration error: .*${name}`, 'm'));
    // Nothing was started: no database or pid file in the data directory.
    expect(await listFiles(dir)).toEqual([]);
  }, 120_000);

  it('an HTTP port already in use makes the process exit with code 1 and a message naming the address', async () => {
    const dir = await dataDir();
    const db = await createTestDatabase('postgres');
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', () => resolve()));
    const { port } = busy.address() as net.AddressInfo;
    try {
      const p = run({ THICKET_DATA_DIR: dir, THICKET_HTTP_ADDR: `127.0.0.1:${port}`, THICKET_ADMIN_TOKEN: TOKEN, DATABASE_URL: db.url });
      const code = await Promise.race([p.exited, sleep(90_000).then(() => 'timeout')]);
      expect(code, p.output()).toBe(1);
      expect(p.output()).toMatch(new RegExp(`thicket: failed to start: .*EADDRINUSE.*127\\.0\\.0\\.1:${port}`));
    } finally {
      busy.close();
      await db.drop();
    }
  }, 120_000);

  it('an unreachable PostgreSQL makes the process exit with code 1 and a message with the redacted URL', async () => {
    const dir = await dataDir();
    const port = await freePort();
    const p = run({
      THICKET_DATA_DIR: dir,
      THICKET_HTTP_ADDR: `127.0.0.1:${await freePort()}`,
      THICKET_ADMIN_TOKEN: TOKEN,
      DATABASE_URL: `postgres://thicket:sup3rsecret@127.0.0.1:${port}/thicket`,
    });
    const code = await Promise.race([p.exited, sleep(30_000).then(() => 'timeout')]);
    expect(code, p.output()).toBe(1);
    expect(p.output()).toContain(`cannot connect to PostgreSQL at postgres://thicket:***@127.0.0.1:${port}/thicket`);
    expect(p.output()).not.toContain('sup3rsecret');
  }, 120_000);
});
