// NVMe/TCP digests are CRC32C (Castagnoli), computed by a native library.
import { crc32c as nativeCrc32c } from '@node-rs/crc32';

export function crc32c(data: Uint8Array, initial?: number): number {
  return nativeCrc32c(data as Buffer, initial) >>> 0;
}

/** CRC32C over a gather list. */
export function crc32cList(chunks: readonly Uint8Array[]): number {
  let crc = 0;
  for (const c of chunks) crc = nativeCrc32c(c as Buffer, crc);
  return crc >>> 0;
}
