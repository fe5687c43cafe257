// Promise wrappers over callback fs: measured faster than FileHandle promises (perf-limits.md §2), and they
// let positional I/O go straight to the threadpool without a FileHandle object per file.
import fs from 'node:fs';

export function pread(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buffer, offset, length, position, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
  });
}

export function pwriteAll(fd: number, buffer: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (written: number): void => {
      if (written >= buffer.length) {
        resolve();
        return;
      }
      fs.write(fd, buffer, written, buffer.length - written, position + written, (err, n) => {
        if (err) reject(err);
        else if (n === 0) reject(new Error('write returned 0 bytes'));
        else step(written + n);
      });
    };
    step(0);
  });
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

export function ftruncate(fd: number, length: number): Promise<void> {
  return new Promise((resolve, reject) => fs.ftruncate(fd, length, (err) => (err ? reject(err) : resolve())));
}

export function open(path: string, flags: string | number, mode?: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
}

export function close(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

/** Makes a rename or create inside `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fd = await open(dir, 'r');
  try {
    await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
  } finally {
    await close(fd);
  }
}
