// Image conversion is qemu-img's job (Debian's qemu-utils); we only run it and report what it says, after
// refusing images that would make it read files other than the image itself.
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import path from 'node:path';

export const IMAGE_FORMATS = ['raw', 'qcow2', 'vmdk', 'vhdx', 'vdi'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

export class QemuImgError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QemuImgError';
  }
}

function run(args: string[], signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('qemu-img', args, { maxBuffer: 4 * 1024 * 1024, signal }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          reject(new QemuImgError('qemu-img is not installed (Debian package qemu-utils)'));
          return;
        }
        const message = stderr.toString().trim().replace(/^qemu-img: /gm, '') || err.message;
        reject(new QemuImgError(message));
        return;
      }
      resolve(stdout.toString());
    });
  });
}

/** The image is readable but not acceptable: it names other files that qemu-img would read. */
export class UnsafeImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsafeImageError';
  }
}

export interface ImageInfo {
  format: string;
  virtualSizeBytes: number;
}

export async function imageInfo(file: string, format: ImageFormat, signal?: AbortSignal): Promise<ImageInfo> {
  const out = await run(['info', '--output=json', '-f', format, file], signal);
  const info = JSON.parse(out) as { format: string; 'virtual-size': number };
  return { format: info.format, virtualSizeBytes: info['virtual-size'] };
}

/**
 * `qemu-img check`: a truncated or damaged qcow2, vmdk or vhdx converts without a word (the missing
 * clusters read as zeroes) but fails its check. Exit 0 is clean and 3 only leaked clusters (harmless); 63
 * means the format has no check. 1 and 2 are refused with what qemu-img found.
 */
export function checkImage(file: string, format: ImageFormat, signal?: AbortSignal): Promise<void> {
  if (format === 'raw') return Promise.resolve();
  return new Promise((resolve, reject) => {
    execFile('qemu-img', ['check', '-f', format, file], { maxBuffer: 4 * 1024 * 1024, signal }, (err, stdout, stderr) => {
      const code: unknown = err ? (err as { code?: unknown }).code : 0;
      if (code === 'ENOENT') return reject(new QemuImgError('qemu-img is not installed (Debian package qemu-utils)'));
      if (code === 0 || code === 3 || code === 63) return resolve();
      if (typeof code !== 'number') return reject(err);
      const lines = `${stderr.toString()}\n${stdout.toString()}`
        .split('\n')
        .map((l) => l.replace(/^qemu-img: /, '').trim())
        .filter((l) => l && !/^No errors|^Image end offset|^\d+\/\d+ = /.test(l));
      const shown = lines.slice(0, 3).join('; ');
      reject(new QemuImgError(`the ${format} image is damaged or truncated (qemu-img check): ${shown}${lines.length > 3 ? `; and ${lines.length - 3} more` : ''}`));
    });
  });
}

/** Converts `source` (in `format`) to a sparse raw image at `destination`, after checking it. */
export async function convertToRaw(source: string, format: ImageFormat, destination: string, signal?: AbortSignal): Promise<void> {
  await checkImage(source, format, signal);
  // -n is not used: qemu-img creates the destination itself, sparse (-S 4k), and checks the source fully.
  await run(['convert', '-q', '-f', format, '-O', 'raw', '-S', '4k', source, destination], signal);
}

async function readHead(file: string, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);
const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;
const VMDK4_MAGIC = Buffer.from('KDMV', 'latin1');
const VMDK3_MAGIC = Buffer.from('COWD', 'latin1');
const VMDK_DESCRIPTOR_MAX_BYTES = 1 << 20;

/**
 * Refuses images that are not self-contained: a backing file, a qcow2 external data file or a VMDK
 * descriptor naming extents would make qemu-img read (or connect to) whatever the image's author chose,
 * e.g. a host file, and copy it into the template. The header checks run before qemu-img opens the
 * image at all, since opening already follows data files and descriptor extents.
 */
export async function assertSelfContained(file: string, format: ImageFormat, signal?: AbortSignal): Promise<void> {
  if (format === 'raw') return;
  const head = await readHead(file, 512);
  if (format === 'qcow2' && head.length >= 104 && head.subarray(0, 4).equals(QCOW2_MAGIC)) {
    if (head.readBigUInt64BE(8) !== 0n) throw new UnsafeImageError('the qcow2 image has a backing file; only self-contained images are accepted');
    if (head.readUInt32BE(4) >= 3 && (head.readBigUInt64BE(72) & QCOW2_INCOMPAT_DATA_FILE) !== 0n) {
      throw new UnsafeImageError('the qcow2 image keeps its data in an external file; only self-contained images are accepted');
    }
  }
  if (format === 'vmdk' && !head.subarray(0, 4).equals(VMDK4_MAGIC) && !head.subarray(0, 4).equals(VMDK3_MAGIC)) {
    // Without a sparse header qemu-img reads the file as a text descriptor (at most 1 MiB of it), whose
    // extents are other files. Anything that is no descriptor at all is left to qemu-img to reject.
    const text = (await readHead(file, VMDK_DESCRIPTOR_MAX_BYTES)).toString('latin1');
    if (/createType/i.test(text)) {
      throw new UnsafeImageError('a VMDK descriptor file refers to other files; only self-contained (monolithicSparse or streamOptimized) images are accepted');
    }
  }
  const out = await run(['info', '--output=json', '-f', format, file], signal);
  const info = JSON.parse(out) as {
    'backing-filename'?: string;
    'full-backing-filename'?: string;
    'format-specific'?: { type?: string; data?: { 'data-file'?: string; extents?: Array<{ filename?: string }> } };
  };
  if (info['backing-filename'] || info['full-backing-filename']) {
    throw new UnsafeImageError(`the ${format} image has a backing file; only self-contained images are accepted`);
  }
  const specific = info['format-specific']?.data;
  if (specific?.['data-file']) throw new UnsafeImageError(`the ${format} image keeps its data in an external file; only self-contained images are accepted`);
  for (const extent of specific?.extents ?? []) {
    if (!extent.filename || path.resolve(extent.filename) !== path.resolve(file)) {
      throw new UnsafeImageError(`the ${format} image refers to another file; only self-contained images are accepted`);
    }
  }
}
