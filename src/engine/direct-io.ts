// Direct I/O for the pool journal. A commit written with O_DIRECT | O_DSYNC goes from our buffer to the
// device and is durable when the write returns (the kernel adds FUA or a cache flush), so a group commit
// is one write instead of a page-cache copy, writeback and an fdatasync. Measured on this project's
// machines: 2 MB of records in 0.75 ms against 2.2 ms for writev + fdatasync (README, performance).
//
// O_DIRECT needs the file offset and length to be multiples of the device's logical block size and the
// memory to be aligned to it. Node never tells a buffer's address, so the aligned start inside a new
// buffer is found by probe writes to a scratch file in the same directory (same file system, same
// device): a misaligned buffer crossing a page splits into pieces the block layer refuses (EINVAL).
import fs from 'node:fs';
import path from 'node:path';

export interface DirectBuffer {
  /** Offsets and lengths of direct writes must be multiples of this (512 or 4096). */
  granularity: number;
  /** An aligned view of `bytes` bytes; its start may be used as the buffer of a direct write. */
  buffer: Buffer;
}

const DIRECT_FLAGS = (fs.constants.O_DIRECT ?? 0) | (fs.constants.O_DSYNC ?? 0);
const PROBE_BYTES = 8192;
const MAX_ALIGNMENT = 4096;

/** Opens `file` for durable direct writes, or returns undefined where the platform or file system has none. */
export function openDirect(file: string): number | undefined {
  if (!fs.constants.O_DIRECT || !fs.constants.O_DSYNC) return undefined;
  try {
    return fs.openSync(file, fs.constants.O_RDWR | DIRECT_FLAGS);
  } catch {
    return undefined;
  }
}

/**
 * Allocates `bytes` of memory usable for direct writes to files in `dir`, and finds the granularity
 * those writes need. Returns undefined when direct writes do not work there at all.
 */
export function allocateDirectBuffer(dir: string, bytes: number): DirectBuffer | undefined {
  const scratch = path.join(dir, `.direct-probe-${process.pid}`);
  let fd: number | undefined;
  try {
    fs.writeFileSync(scratch, Buffer.alloc(PROBE_BYTES * 2), { mode: 0o600 });
    fd = openDirect(scratch);
    if (fd === undefined) return undefined;
    const raw = Buffer.allocUnsafeSlow(bytes + MAX_ALIGNMENT);
    raw.fill(0, 0, MAX_ALIGNMENT + PROBE_BYTES);
    let start = -1;
    // ArrayBuffers are at least 8-byte aligned; a write that fails for another reason fails everywhere.
    for (let at = 0; at < MAX_ALIGNMENT && start < 0; at += 8) {
      if (tryWrite(fd, raw, at, PROBE_BYTES, 0)) start = at;
    }
    if (start < 0) return undefined;
    let granularity = 0;
    for (const g of [512, 4096]) {
      if (tryWrite(fd, raw, start, g, g)) {
        granularity = g;
        break;
      }
    }
    if (granularity === 0) return undefined;
    return { granularity, buffer: raw.subarray(start, start + bytes) };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(scratch, { force: true });
  }
}

function tryWrite(fd: number, buf: Buffer, offset: number, length: number, position: number): boolean {
  try {
    return fs.writeSync(fd, buf, offset, length, position) === length;
  } catch {
    return false;
  }
}
