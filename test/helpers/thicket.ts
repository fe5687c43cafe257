// Starts a whole Thicket (database, job runner, HTTP server on an ephemeral port) in this process, with
// its own data directory, for API-level tests.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { startThicket, type ThicketInstance } from '../../src/thicket.ts';
import { createTestDatabase, type DatabaseKind, type TestDatabase } from './databases.ts';

export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

export interface TestThicket {
  kind: DatabaseKind;
  instance: ThicketInstance;
  url: string;
  token: string;
  dataDir: string;
  config: Config;
  database: TestDatabase;
  /** fetch against the instance with the admin token. */
  api(pathname: string, init?: RequestInit): Promise<Response>;
  /** JSON request helper: returns status and parsed body. */
  json<T = any>(method: string, pathname: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** Polls a job until it leaves queued/running (bounded). */
  waitForJob(jobId: string, timeoutMs?: number): Promise<any>;
  /** Stops the instance; the data directory and database stay for a restart. */
  stop(): Promise<void>;
  /** Starts again on the same data directory and database. */
  restart(): Promise<void>;
  /** Stops and removes everything. */
  destroy(): Promise<void>;
}

export function testConfig(dataDir: string, databaseUrl: string | undefined): Config {
  return {
    dataDir,
    databaseUrl,
    httpHost: '127.0.0.1',
    httpPort: 0,
    nvmeAddr: '127.0.0.1',
    nvmeAdvertiseAddr: undefined,
    nqnPrefix: 'nqn.2026-11.io.thicket',
    nvmePort: 0,
    discoveryPort: 0,
    adminToken: TEST_ADMIN_TOKEN,
    logLevel: 'silent',
    replicaCacheBytes: 16 * 1024 * 1024,
    journalBytes: 2 * 1024 * 1024,
    maxImageBytes: 2 * 1024 ** 4,
  };
}

export async function startTestThicket(kind: DatabaseKind, overrides: Partial<Config> = {}): Promise<TestThicket> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'thicket-test-'));
  const database = await createTestDatabase(kind);
  const config = { ...testConfig(dataDir, database.url), ...overrides };
  const start = () =>
    startThicket(config, { logger: createLogger(process.env.THICKET_TEST_LOG ?? 'silent'), jobRunner: { pollIntervalMs: 100, heartbeatIntervalMs: 200 } });
  let instance = await start();
  const t: TestThicket = {
    kind,
    get instance() {
      return instance;
    },
    get url() {
      return instance.url;
    },
    token: config.adminToken ?? TEST_ADMIN_TOKEN,
    dataDir,
    config,
    database,
    api(pathname, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has('authorization')) headers.set('authorization', `Bearer ${t.token}`);
      return fetch(`${instance.url}${pathname}`, { ...init, headers });
    },
    async json(method, pathname, body) {
      const res = await t.api(pathname, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed: unknown = undefined;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = text;
      }
      return { status: res.status, body: parsed as any };
    },
    async waitForJob(jobId, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
        const { body } = await t.json('GET', `/api/v1/jobs/${jobId}`);
        if (body && body.state !== 'queued' && body.state !== 'running') return body;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`job ${jobId} did not finish within ${timeoutMs} ms`);
    },
    async stop() {
      await instance.close();
    },
    async restart() {
      instance = await start();
    },
    async destroy() {
      await instance.close().catch(() => {});
      await database.drop().catch(() => {});
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return t;
}
