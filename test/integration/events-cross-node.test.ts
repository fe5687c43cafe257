// Two Thicket nodes on one PostgreSQL: an event published on one reaches WebSocket clients of the
// other (LISTEN/NOTIFY), once, and a reconnect with ?since= replays both nodes' events.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostToken } from '../../src/hooks/host-token.ts';
import { SecretBox } from '../../src/hooks/secret-box.ts';
import { createLogger } from '../../src/logger.ts';
import { startThicket, type ThicketInstance } from '../../src/thicket.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/databases.ts';
import { TEST_ADMIN_TOKEN, testConfig } from '../helpers/thicket.ts';

interface Received {
  events: Array<{ seq: number; type: string; [k: string]: unknown }>;
  ws: WebSocket;
}

function stream(url: string, since?: number): Promise<Received> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/api/v1/events${since === undefined ? '' : `?since=${since}`}`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    const r: Received = { events: [], ws };
    ws.on('message', (m) => r.events.push(JSON.parse(String(m))));
    ws.on('open', () => resolve(r));
    ws.on('error', reject);
  });
}

async function post(url: string, p: string, body: unknown): Promise<any> {
  const res = await fetch(`${url}${p}`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBeLessThan(300);
  return res.json();
}

async function until(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('events across nodes sharing PostgreSQL', () => {
  let db: TestDatabase;
  const nodes: ThicketInstance[] = [];
  const dirs: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('postgres');
    for (let i = 0; i < 2; i++) {
      const dir = await mkdtemp(path.join(os.tmpdir(), `thicket-node${i}-`));
      dirs.push(dir);
      // Separate storage pool paths per node: the default pools live in each node's data directory.
      // Nodes sharing a database must share the key that encrypts stored SSH keys.
      nodes.push(await startThicket({ ...testConfig(dir, db.url), secretKey: 'ab'.repeat(32) }, { logger: createLogger('silent') }));
    }
  });

  afterAll(async () => {
    for (const n of nodes) await n.close().catch(() => {});
    for (const d of dirs) await rm(d, { recursive: true, force: true });
    await db?.drop();
  });

  it("delivers one node's events to the other node's WebSocket clients, each once", async () => {
    const [a, b] = nodes;
    const onB = await stream(b.url);
    const onA = await stream(a.url);
    const fromA = await post(a.url, '/api/v1/templates', { name: 'from-a' });
    const fromB = await post(b.url, '/api/v1/templates', { name: 'from-b' });
    const created = (r: Received) => r.events.filter((e) => e.type === 'template.created').map((e) => e.templateId);
    await until(() => created(onB).length === 2 && created(onA).length === 2, 'template.created on both nodes');
    expect(new Set(created(onB))).toEqual(new Set([fromA.id, fromB.id]));
    expect(new Set(created(onA))).toEqual(new Set([fromA.id, fromB.id]));
    for (const r of [onA, onB]) {
      const seqs = r.events.map((e) => e.seq);
      expect(new Set(seqs).size).toBe(seqs.length);
    }
    // A client that reconnects to node B from before both events gets both again, in seq order.
    const first = Math.min(...onB.events.map((e) => e.seq));
    const replay = await stream(b.url, first - 1);
    await until(() => created(replay).length === 2, 'replay');
    const seqs = replay.events.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    for (const r of [onA, onB, replay]) r.ws.close();
  });

  it("catches up with the other node's events after its LISTEN connection was cut, though it published itself meanwhile", async () => {
    const [a, b] = nodes;
    const onB = await stream(b.url);
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      // Cut every LISTEN connection; the nodes reconnect after a short backoff.
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()");
    } finally {
      await admin.end();
    }
    // While B cannot hear A: A publishes, then B publishes (B's newest seq is now above A's event).
    const fromA = await post(a.url, '/api/v1/templates', { name: 'during-cut-a' });
    const fromB = await post(b.url, '/api/v1/templates', { name: 'during-cut-b' });
    const created = () => onB.events.filter((e) => e.type === 'template.created').map((e) => e.templateId);
    await until(() => created().includes(fromA.id) && created().includes(fromB.id), "both events on B's stream");
    onB.ws.close();
  });

  it('tells a host whose token reaches a node with another secret key why the token cannot be checked', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-node-otherkey-'));
    dirs.push(dir);
    const odd = await startThicket({ ...testConfig(dir, db.url), secretKey: 'cd'.repeat(32) }, { logger: createLogger('silent') });
    nodes.push(odd);
    const token = hostToken(new SecretBox(Buffer.from('ab'.repeat(32), 'hex')), '6f1c2a40-0000-4000-8000-000000000001');
    const res = await fetch(`${odd.url}/api/v1/desktop-pools/6f1c2a40-0000-4000-8000-000000000002/desktops/d-1/state`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'vm-started' }),
    });
    expect(res.status).toBe(401);
    expect((await res.json()).error.message).toMatch(/host tokens cannot be checked on this node: .*THICKET_SECRET_KEY/);
  });
});
