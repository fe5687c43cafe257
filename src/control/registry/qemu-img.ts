// Image conversion is qemu-img's job (Debian's qemu-utils); we only run it and report what it says.
import { execFile } from 'node:child_process';

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

export interface ImageInfo {
  format: string;
  virtualSizeBytes: number;
}

export async function imageInfo(file: string, format: ImageFormat, signal?: AbortSignal): Promise<ImageInfo> {
  const out = await run(['info', '--output=json', '-f', format, file], signal);
  const info = JSON.parse(out) as { format: string; 'virtual-size': number };
  return { format: info.format, virtualSizeBytes: info['virtual-size'] };
}

/** Converts `source` (in `format`) to a sparse raw image at `destination`. */
export async function convertToRaw(source: string, format: ImageFormat, destination: string, signal?: AbortSignal): Promise<void> {
  // -n is not used: qemu-img creates the destination itself, sparse (-S 4k), and checks the source fully.
  await run(['convert', '-q', '-f', format, '-O', 'raw', '-S', '4k', source, destination], signal);
}
