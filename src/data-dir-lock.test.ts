import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lockDataDir } from './data-dir-lock.ts';

const dirs: string[] = [];
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'thicket-lock-'));
  dirs.push(d);
  return d;
}

/** A real, live process that is not this one. */
async function otherLiveProcess(): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  children.push(child);
  await new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  return child.pid!;
}

/** A pid that belonged to a process which has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('lockDataDir', () => {
  it('writes this process id to thicket.pid and removes it on unlock', async () => {
    const dir = await tempDir();
    const unlock = await lockDataDir(dir);
    expect(await readFile(path.join(dir, 'thicket.pid'), 'utf8')).toBe(`${process.pid}\n`);
    await unlock();
    await expect(readFile(path.join(dir, 'thicket.pid'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a directory locked by another live process, naming its pid and the directory', async () => {
    const dir = await tempDir();
    const pid = await otherLiveProcess();
    await writeFile(path.join(dir, 'thicket.pid'), `${pid}\n`);
    await expect(lockDataDir(dir)).rejects.toThrow(`another Thicket process (pid ${pid}) is using the data directory ${dir}`);
    // The other process's lock is left alone.
    expect(await readFile(path.join(dir, 'thicket.pid'), 'utf8')).toBe(`${pid}\n`);
  });

  it('takes over a pid file left by a process that died', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, 'thicket.pid'), `${await deadPid()}\n`);
    const unlock = await lockDataDir(dir);
    expect(await readFile(path.join(dir, 'thicket.pid'), 'utf8')).toBe(`${process.pid}\n`);
    await unlock();
  });

  it('takes over a pid file with garbage in it', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, 'thicket.pid'), 'not a pid\n');
    const unlock = await lockDataDir(dir);
    expect(await readFile(path.join(dir, 'thicket.pid'), 'utf8')).toBe(`${process.pid}\n`);
    await unlock();
  });

  it('waits for an empty pid file to be filled in by the process creating it, then refuses', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'thicket.pid');
    const pid = await otherLiveProcess();
    // Another process has just created the file and is about to write its pid.
    await writeFile(file, '');
    setTimeout(() => void writeFile(file, `${pid}\n`), 150);
    await expect(lockDataDir(dir)).rejects.toThrow(`pid ${pid}`);
  });

  it('takes over a pid file that stays empty (its writer died between creating and writing it)', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'thicket.pid');
    await writeFile(file, '');
    const unlock = await lockDataDir(dir);
    expect(await readFile(file, 'utf8')).toBe(`${process.pid}\n`);
    await unlock();
  });

  it('unlock leaves a pid file that another process has taken over', async () => {
    const dir = await tempDir();
    const unlock = await lockDataDir(dir);
    const pid = await otherLiveProcess();
    await writeFile(path.join(dir, 'thicket.pid'), `${pid}\n`);
    await unlock();
    expect(await readFile(path.join(dir, 'thicket.pid'), 'utf8')).toBe(`${pid}\n`);
  });
});
