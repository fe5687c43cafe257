// Namespaces and images use 4096-byte blocks everywhere.
export const BLOCK_SIZE_BYTES = 4096;

export function roundUpToBlock(bytes: number): number {
  return Math.ceil(bytes / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
}
