// Adapts an engine clone to the namespace backend interface, and maps engine errors to NVMe statuses in
// exactly one place.
import type { Clone } from '../../engine/clone.ts';
import { CloneClosedError, CloneFailedError, LbaOutOfRangeError, OutOfSpaceError } from '../../engine/errors.ts';
import { STATUS, type NvmeStatus } from '../protocol/status.ts';
import type { NamespaceBackend } from './namespace-backend.ts';

const FUA = { fua: true };
const NO_FUA = { fua: false };

export class CloneNamespaceBackend implements NamespaceBackend {
  readonly clone: Clone;
  constructor(clone: Clone) {
    this.clone = clone;
  }
  get blocks(): number {
    return this.clone.capacityBlocks;
  }
  read(slba: number, nlb: number, scratch?: Buffer): Buffer[] | Promise<Buffer[]> {
    return this.clone.readNowOrLater(slba, nlb, undefined, scratch);
  }
  write(slba: number, chunks: readonly Buffer[], fua: boolean): void | Promise<void> {
    return this.clone.writeNowOrLater(slba, chunks, fua ? FUA : NO_FUA);
  }
  flush(): Promise<void> {
    return this.clone.flush();
  }
  writeZeroes(slba: number, nlb: number): Promise<void> {
    return this.clone.writeZeroes(slba, nlb);
  }
  deallocate(slba: number, nlb: number): Promise<void> {
    return this.clone.deallocate(slba, nlb);
  }
  usedBlocks(): number {
    return this.clone.ownedBlocks;
  }
}

/**
 * Engine errors → NVMe status. A full pool is Capacity Exceeded (only writes needing new blocks get it);
 * a failed or deleted clone is Namespace Not Ready; anything unexpected is an Internal Error that the
 * host may retry.
 */
export function toNvmeStatus(err: unknown): NvmeStatus {
  if (err instanceof OutOfSpaceError) return STATUS.CapacityExceeded;
  if (err instanceof LbaOutOfRangeError) return STATUS.LbaOutOfRange;
  if (err instanceof CloneFailedError || err instanceof CloneClosedError) return STATUS.NamespaceNotReady;
  return STATUS.InternalError;
}
