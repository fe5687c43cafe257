import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../../src/db/database.ts';
import { loadMigrations, migrate, type Migration } from '../../src/db/migrator.ts';
import { ROOT } from '../../src/thicket.ts';
import { createTestDatabase, DATABASE_KINDS, type TestDatabase } from '../helpers/databases.ts';

const NODE = path.join(ROOT, 'node_modules/.bin/node');

async function appliedRows(handle: DatabaseHandle): Promise<Array<{ name: string; n: number }>> {
  const r = await sql<{ name: string; n: number }>`SELECT name, count(*)::int AS n FROM schema_migrations GROUP BY name ORDER BY name`.execute(handle.db);
  return r.rows;
}

async function tableExists(handle: DatabaseHandle, table: string): Promise<boolean> {
  const r = await sql<{ t: string | null }>`SELECT to_regclass(${table})::text AS t`.execute(handle.db);
  return r.rows[0]?.t != null;
}

describe.each(DATABASE_KINDS)('migrate (%s)', (kind) => {
  let shipped: Migration[];
  let test: TestDatabase;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    shipped = await loadMigrations();
  });

  afterEach(async () => {
    await handle?.close().catch(() => {});
    await test?.drop().catch(() => {});
  });

  async function fresh(): Promise<DatabaseHandle> {
    test = await createTestDatabase(kind);
    handle = await openDatabase(test.url ? { url: test.url } : {});
    return handle;
  }

  it('applies every shipped migration on a fresh database and nothing on a second call', async () => {
    const db = await fresh();
    expect(shipped.length).toBeGreaterThan(0);
    const first = await migrate(db.db);
    expect(first.applied).toEqual(shipped.map((m) => m.name));
    expect(first.alreadyApplied).toEqual([]);
    for (const table of ['settings', 'storage_pools', 'templates', 'template_versions', 'replicas', 'clones', 'jobs', 'events']) {
      expect(await tableExists(db, table), table).toBe(true);
    }

    const second = await migrate(db.db);
    expect(second.applied).toEqual([]);
    expect(second.alreadyApplied).toEqual(shipped.map((m) => m.name));
    expect(await appliedRows(db)).toEqual(shipped.map((m) => ({ name: m.name, n: 1 })));
  });

  it('applies only the migrations added since the last run', async () => {
    const db = await fresh();
    await migrate(db.db, shipped);
    const added: Migration = { name: '9999_test_added.sql', sql: 'CREATE TABLE test_added (id int PRIMARY KEY);\n-- done;\n' };
    const result = await migrate(db.db, [...shipped, added]);
    expect(result.applied).toEqual([added.name]);
    expect(result.alreadyApplied).toEqual(shipped.map((m) => m.name));
    expect(await tableExists(db, 'test_added')).toBe(true);
  });

  it('refuses a migration whose text changed after it was applied, naming it', async () => {
    const db = await fresh();
    await migrate(db.db, shipped);
    const changed = shipped.map((m, i) => (i === 0 ? { ...m, sql: `${m.sql}\n-- edited afterwards\n` } : m));
    await expect(migrate(db.db, changed)).rejects.toThrow(new RegExp(`migration ${shipped[0].name} was changed after it was applied`));
    // Refusing changes nothing: the recorded migrations are still exactly the shipped ones.
    expect(await appliedRows(db)).toEqual(shipped.map((m) => ({ name: m.name, n: 1 })));
  });

  it('rolls back the whole run when one migration fails, so nothing is half-applied', async () => {
    const db = await fresh();
    const good: Migration = { name: '9998_test_good.sql', sql: 'CREATE TABLE test_good (id int);' };
    const bad: Migration = { name: '9999_test_bad.sql', sql: 'CREATE TABLE test_bad (id int); SELECT * FROM no_such_table;' };
    await expect(migrate(db.db, [...shipped, good, bad])).rejects.toThrow(/no_such_table/);
    expect(await tableExists(db, 'test_good')).toBe(false);
    expect(await tableExists(db, 'test_bad')).toBe(false);
    expect(await tableExists(db, 'jobs')).toBe(false);
    // A later correct run applies everything.
    const result = await migrate(db.db, [...shipped, good]);
    expect(result.applied).toEqual([...shipped.map((m) => m.name), good.name]);
  });

  it('lets two concurrent migrate() calls on one handle both succeed, applying each migration once', async () => {
    const db = await fresh();
    const [a, b] = await Promise.all([migrate(db.db), migrate(db.db)]);
    expect([...a.applied, ...b.applied].sort()).toEqual(shipped.map((m) => m.name).sort());
    expect(await appliedRows(db)).toEqual(shipped.map((m) => ({ name: m.name, n: 1 })));
  });
});

describe('migrate under concurrency (postgres)', () => {
  const databases: TestDatabase[] = [];
  const handles: DatabaseHandle[] = [];
  let scriptDir: string;
  let shipped: Migration[];

  beforeAll(async () => {
    shipped = await loadMigrations();
    scriptDir = await mkdtemp(path.join(os.tmpdir(), 'thicket-migrate-race-'));
  });

  afterAll(async () => {
    for (const h of handles) await h.close().catch(() => {});
    for (const d of databases) await d.drop().catch(() => {});
    if (scriptDir) await rm(scriptDir, { recursive: true, force: true });
  });

  async function freshPostgres(): Promise<TestDatabase> {
    const d = await createTestDatabase('postgres');
    databases.push(d);
    return d;
  }

  async function open(url: string): Promise<DatabaseHandle> {
    const h = await openDatabase({ url, poolSize: 2 });
    handles.push(h);
    return h;
  }

  it('two migrate() calls on two separate pools at once both succeed and apply each migration once', async () => {
    const d = await freshPostgres();
    const [a, b] = [await open(d.url!), await open(d.url!)];
    const [ra, rb] = await Promise.all([migrate(a.db), migrate(b.db)]);
    const names = shipped.map((m) => m.name);
    // One of them did all the work; the other waited on the lock and found nothing left.
    expect([ra.applied, rb.applied].sort((x, y) => x.length - y.length)).toEqual([[], names]);
    expect(await appliedRows(a)).toEqual(shipped.map((m) => ({ name: m.name, n: 1 })));
  });

  it('two OS processes starting migrate at the same moment on one fresh database both succeed and apply each migration once', async () => {
    const d = await freshPostgres();
    // Each child connects, reports "ready", waits for "go" on stdin, migrates and prints the result.
    const script = path.join(scriptDir, 'migrate-child.mjs');
    await writeFile(
      script,
      `import { openDatabase } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'src/db/database.ts')).href)};
import { migrate } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'src/db/migrator.ts')).href)};
const handle = await openDatabase({ url: process.env.DATABASE_URL });
process.stdout.write('ready\\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
try {
  const result = await migrate(handle.db);
  process.stdout.write(JSON.stringify(result) + '\\n');
} finally {
  await handle.close();
  process.stdin.destroy();
}
`,
    );

    interface Child {
      proc: ChildProcess;
      stdout: string;
      stderr: string;
      ready: Promise<void>;
      exited: Promise<number | null>;
    }
    const startChild = (): Child => {
      const proc = spawn(NODE, [script], { cwd: ROOT, env: { ...process.env, DATABASE_URL: d.url }, stdio: ['pipe', 'pipe', 'pipe'] });
      const child: Child = { proc, stdout: '', stderr: '', ready: undefined as never, exited: undefined as never };
      proc.stderr!.on('data', (b) => (child.stderr += b));
      child.ready = new Promise((resolve, reject) => {
        proc.stdout!.on('data', (b) => {
          child.stdout += b;
          if (child.stdout.includes('ready\n')) resolve();
        });
        proc.once('exit', (code) => reject(new Error(`child exited with ${code} before it was ready: ${child.stderr}`)));
      });
      child.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
      return child;
    };

    const children = [startChild(), startChild()];
    const killAll = setTimeout(() => children.forEach((c) => c.proc.kill('SIGKILL')), 45_000);
    try {
      await Promise.all(children.map((c) => c.ready));
      // Release both at the same moment.
      for (const c of children) c.proc.stdin!.write('go\n');
      const codes = await Promise.all(children.map((c) => c.exited));
      expect(codes, children.map((c) => c.stderr).join('\n')).toEqual([0, 0]);
    } finally {
      clearTimeout(killAll);
    }

    const results = children.map((c) => JSON.parse(c.stdout.split('\n').filter(Boolean).at(-1)!) as { applied: string[]; alreadyApplied: string[] });
    const names = shipped.map((m) => m.name);
    expect(results.map((r) => r.applied).sort((x, y) => x.length - y.length)).toEqual([[], names]);
    expect(results.map((r) => r.alreadyApplied).sort((x, y) => x.length - y.length)).toEqual([[], names]);

    const check = await open(d.url!);
    expect(await appliedRows(check)).toEqual(shipped.map((m) => ({ name: m.name, n: 1 })));
  });
});
