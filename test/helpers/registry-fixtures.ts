// Fixtures for the registry tests (storage pools, templates, replicas): real image files made in temp
// directories, qemu-img conversions, independent sha256 computations, event collection over the real
// WebSocket and direct database access for rows the API cannot create yet (clones).
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { Kysely } from 'kysely';
import WebSocket from 'ws';
import { openDatabase } from '../../src/db/database.ts';
import type { Database } from '../../src/db/schema.ts';
import type { TestThicket } from './thicket.ts';

const execFileAsync = promisify(execFile);

export const BLOCK = 4096;

export function roundUp4k(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

/** Temp directories under os.tmpdir(), removed by cleanup(). */
export class TempDirs {
  #dirs: string[] = [];
  async make(prefix = 'thicket-registry-'): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
    this.#dirs.push(dir);
    return dir;
  }
  async cleanup(): Promise<void> {
    for (const dir of this.#dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  }
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 of `data` padded with zeroes to a 4096 multiple: what Thicket must report for a raw image. */
export function paddedSha256(data: Uint8Array): string {
  const h = createHash('sha256').update(data);
  const pad = roundUp4k(data.length) - data.length;
  if (pad > 0) h.update(Buffer.alloc(pad));
  return h.digest('hex');
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * An image whose 64 KiB runs alternate between random bytes and zeroes, so half of its 4 KiB blocks are
 * zero. `size` need not be a multiple of 4096.
 */
export function halfZeroImage(size: number, runBytes = 64 * 1024): Buffer<ArrayBuffer> {
  const buf = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; off += runBytes, i++) {
    if (i % 2 === 0) randomBytes(Math.min(runBytes, size - off)).copy(buf, off);
  }
  return buf;
}

export async function writeFileBytes(file: string, data: Uint8Array): Promise<void> {
  const fh = await open(file, 'w');
  try {
    await fh.write(data, 0, data.length, 0);
  } finally {
    await fh.close();
  }
}

/**
 * Writes a large random image (non-zero everywhere) without holding it in memory; returns the sha256 of
 * the content (its size is a 4096 multiple, so no padding applies).
 */
export async function writeRandomImage(file: string, size: number): Promise<string> {
  if (size % BLOCK !== 0) throw new Error('writeRandomImage wants a 4096 multiple');
  const chunk = 4 * 1024 * 1024;
  const h = createHash('sha256');
  const fh = await open(file, 'w');
  try {
    for (let off = 0; off < size; off += chunk) {
      const part = randomBytes(Math.min(chunk, size - off));
      h.update(part);
      await fh.write(part, 0, part.length, off);
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** Runs the real qemu-img to turn a raw file into `format`. */
export async function qemuImgConvert(rawFile: string, format: string, destination: string): Promise<void> {
  await execFileAsync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', format, rawFile, destination]);
}

/** All files (not directories) below `dir`, relative to it; [] when `dir` does not exist. */
export async function listFilesRecursive(dir: string): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  for (const e of entries) if (!e.isDirectory()) out.push(path.relative(dir, path.join(e.parentPath, e.name)));
  return out.sort();
}

export async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

let nameCounter = 0;
export function uniqueName(prefix: string): string {
  nameCounter += 1;
  return `${prefix}-${process.pid}-${nameCounter}-${randomBytes(3).toString('hex')}`;
}

export interface Pools {
  fast: any;
  capacity: any;
}

export async function defaultPools(t: TestThicket): Promise<Pools> {
  const { status, body } = await t.json('GET', '/api/v1/storage-pools');
  if (status !== 200) throw new Error(`listing pools failed: ${status}`);
  const fast = body.find((p: any) => p.name === 'fast');
  const capacity = body.find((p: any) => p.name === 'capacity');
  if (!fast || !capacity) throw new Error('default pools missing');
  return { fast, capacity };
}

export async function createTemplate(t: TestThicket, name = uniqueName('tpl')): Promise<any> {
  const { status, body } = await t.json('POST', '/api/v1/templates', { name });
  if (status !== 201) throw new Error(`creating template failed: ${status} ${JSON.stringify(body)}`);
  return body;
}

/** POSTs image bytes as application/octet-stream; returns status and parsed body. */
export async function uploadVersion(
  t: TestThicket,
  templateId: string,
  data: Uint8Array | string,
  options: { format?: string; contentType?: string | null } = {},
): Promise<{ status: number; body: any }> {
  const query = options.format === undefined ? '' : `?format=${encodeURIComponent(options.format)}`;
  const headers: Record<string, string> = {};
  if (options.contentType !== null) headers['content-type'] = options.contentType ?? 'application/octet-stream';
  let body: BodyInit;
  const init: RequestInit & { duplex?: 'half' } = { method: 'POST', headers };
  if (typeof data === 'string') {
    // A file on disk is streamed, never read whole.
    body = Readable.toWeb(createReadStream(data, { highWaterMark: 1024 * 1024 })) as unknown as ReadableStream;
    init.duplex = 'half';
  } else {
    body = data as unknown as BodyInit;
  }
  init.body = body;
  const res = await t.api(`/api/v1/templates/${templateId}/versions${query}`, init);
  const text = await res.text();
  let parsed: any = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: keep the text for the assertion message
  }
  return { status: res.status, body: parsed };
}

/** A template with one raw version of `data`. */
export async function templateWithVersion(t: TestThicket, data: Uint8Array): Promise<{ template: any; version: any }> {
  const template = await createTemplate(t);
  const { status, body } = await uploadVersion(t, template.id, data);
  if (status !== 201) throw new Error(`upload failed: ${status} ${JSON.stringify(body)}`);
  return { template, version: body };
}

/** Promotes and waits for the job; returns the finished job and the replica as GET shows it then. */
export async function promoteAndWait(t: TestThicket, templateVersionId: string, storagePoolId: string, timeoutMs = 60_000): Promise<{ job: any; replica: any }> {
  const { status, body } = await t.json('POST', '/api/v1/replicas', { templateVersionId, storagePoolId });
  if (status !== 202) throw new Error(`promote failed: ${status} ${JSON.stringify(body)}`);
  const job = await t.waitForJob(body.job.id, timeoutMs);
  const replica = (await t.json('GET', `/api/v1/replicas/${body.replica.id}`)).body;
  return { job, replica };
}

export function replicaFile(poolPath: string, replicaId: string): string {
  return path.join(poolPath, 'replicas', `${replicaId}.img`);
}

/**
 * Runs `fn` with a database connection of its own, outside the Thicket instance. PostgreSQL takes a second
 * connection while Thicket runs. The embedded PGlite database has a single owner, so the instance is
 * stopped, the database opened from its directory, and the instance started again afterwards.
 */
export async function withDirectDb<T>(t: TestThicket, fn: (db: Kysely<Database>) => Promise<T>): Promise<T> {
  if (t.kind === 'postgres') {
    const handle = await openDatabase({ url: t.database.url! });
    try {
      return await fn(handle.db);
    } finally {
      await handle.close();
    }
  }
  await t.stop();
  try {
    const handle = await openDatabase({ pgliteDir: path.join(t.dataDir, 'db') });
    try {
      return await fn(handle.db);
    } finally {
      await handle.close();
    }
  } finally {
    await t.restart();
  }
}

/** Inserts a clone row that references `replicaId` (the clone API belongs to a later issue). */
export async function insertCloneRow(db: Kysely<Database>, replica: { id: string; storagePoolId: string; sizeBytes: number }, name = uniqueName('clone')) {
  const id = randomUUID();
  await db
    .insertInto('clones')
    .values({ id, name, replica_id: replica.id, storage_pool_id: replica.storagePoolId, size_bytes: replica.sizeBytes, state: 'ready' })
    .execute();
  return { id, name };
}

/**
 * Connects to GET /api/v1/events?since=0 and collects events until `until` returns true for one of them
 * or `timeoutMs` passes (then returns what arrived; the caller's assertion explains what is missing).
 */
export async function collectEvents(t: TestThicket, until: (event: any) => boolean, timeoutMs = 10_000): Promise<any[]> {
  const url = `${t.url.replace(/^http/, 'ws')}/api/v1/events?since=0`;
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${t.token}` } });
  const events: any[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, timeoutMs);
      ws.on('message', (data) => {
        if (events.length >= 100_000) return;
        const event = JSON.parse(String(data));
        events.push(event);
        if (until(event)) {
          clearTimeout(timer);
          resolve();
        }
      });
      ws.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      ws.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } finally {
    ws.terminate();
  }
  return events;
}

/** Polls `fn` until it returns a truthy value (bounded in count and time). */
export async function pollUntil<T>(fn: () => Promise<T>, { timeoutMs = 10_000, intervalMs = 25, what = 'condition' } = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
    const value = await fn();
    if (value) return value;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`${what} not reached within ${timeoutMs} ms`);
}

/**
 * Mounts a tmpfs of `sizeBytes` on `dir` (which must exist and be empty), to run out of space for real.
 * Needs root (CAP_SYS_ADMIN); returns undefined where that is not possible, for the caller to skip.
 */
export async function mountSmallTmpfs(dir: string, sizeBytes: number): Promise<{ release(): Promise<void> } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  try {
    await execFileAsync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir]);
  } catch {
    return undefined;
  }
  return {
    async release() {
      try {
        await execFileAsync('umount', [dir]);
      } catch {
        // Something still holds a file there: detach now, the kernel frees it when the last file closes.
        await execFileAsync('umount', ['-l', dir]);
      }
    },
  };
}
