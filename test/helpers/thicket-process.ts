// Thicket as a real child process (node src/main.ts), for tests that kill it with SIGKILL or talk to it
// from outside (the QEMU guest). Ports are picked free on 127.0.0.1.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../../src/thicket.ts';

export const NODE = path.join(ROOT, 'node_modules/.bin/node');
const MAIN = path.join(ROOT, 'src/main.ts');
export const PROCESS_TOKEN = 'process-test-admin-token-0123456789';
export const PROCESS_SECRET_KEY = '5e'.repeat(32);

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export class ThicketProcess {
  dataDir = '';
  httpPort = 0;
  nvmePort = 0;
  discoveryPort = 0;
  child: ChildProcess | undefined;
  log = '';
  #env: NodeJS.ProcessEnv;

  constructor(env: NodeJS.ProcessEnv = {}) {
    this.#env = env;
  }

  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  async start(): Promise<void> {
    if (!this.dataDir) {
      this.dataDir = await mkdtemp(path.join(os.tmpdir(), 'thicket-proc-'));
      this.httpPort = await freePort();
      this.nvmePort = await freePort();
      this.discoveryPort = await freePort();
    }
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('THICKET_') && k !== 'DATABASE_URL' && !k.startsWith('VITEST') && k !== 'NODE_OPTIONS') env[k] = v;
    Object.assign(env, {
      THICKET_DATA_DIR: this.dataDir,
      THICKET_HTTP_ADDR: `127.0.0.1:${this.httpPort}`,
      THICKET_NVME_PORT: String(this.nvmePort),
      THICKET_DISCOVERY_PORT: String(this.discoveryPort),
      THICKET_ADMIN_TOKEN: PROCESS_TOKEN,
      // Processes sharing one PostgreSQL must share the key that encrypts hosts' SSH keys.
      THICKET_SECRET_KEY: PROCESS_SECRET_KEY,
      THICKET_LOG_LEVEL: 'warn',
      THICKET_JOURNAL_BYTES: String(4 * 1024 * 1024),
      ...this.#env,
    });
    const child = spawn(NODE, [MAIN], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout!.on('data', (b) => (this.log += b));
    child.stderr!.on('data', (b) => (this.log += b));
    const deadline = Date.now() + 120_000;
    for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
      if (child.exitCode !== null) throw new Error(`thicket exited with ${child.exitCode}:\n${this.log}`);
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.ok) return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`thicket did not become healthy:\n${this.log}`);
  }

  async kill9(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }

  async destroy(): Promise<void> {
    await this.kill9();
    if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
  }

  async json<T = any>(method: string, pathname: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.url}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${PROCESS_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  async waitForJob(id: string, timeoutMs = 120_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
      const { body } = await this.json('GET', `/api/v1/jobs/${id}`);
      if (body.state !== 'queued' && body.state !== 'running') return body;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`job ${id} did not finish`);
  }
}
