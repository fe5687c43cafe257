// An open replica file shared by all its clones. Re-pointing it at an identical copy (a replica move)
// switches every clone's parent at once: they all hold this one object.
import fs from 'node:fs';
import { BLOCK_SIZE_BYTES } from './block-size.ts';

let nextSlot = 1;

export class ReplicaImage {
  readonly id: string;
  readonly sizeBytes: number;
  readonly blocks: number;
  /** Small integer naming this replica in the shared cache. */
  readonly slot: number;
  #path: string;
  #fd: number;
  refs = 0;

  constructor(id: string, path: string, sizeBytes?: number) {
    this.id = id;
    this.#path = path;
    this.#fd = fs.openSync(path, 'r');
    const actual = fs.fstatSync(this.#fd).size;
    this.sizeBytes = sizeBytes ?? actual;
    this.blocks = Math.floor(this.sizeBytes / BLOCK_SIZE_BYTES);
    this.slot = nextSlot++;
  }

  get path(): string {
    return this.#path;
  }

  /** Reads whole blocks [lba, lba+n) into dest (synchronously: callers are on the data-plane thread). */
  readInto(lba: number, n: number, dest: Buffer): void {
    const length = n * BLOCK_SIZE_BYTES;
    let got = 0;
    while (got < length) {
      const r = fs.readSync(this.#fd, dest, got, length - got, lba * BLOCK_SIZE_BYTES + got);
      if (r === 0) {
        dest.fill(0, got, length);
        break;
      }
      got += r;
    }
  }

  /** Switches to an identical copy at `newPath`. Reads are synchronous, so none is in flight. */
  repoint(newPath: string): void {
    const fd = fs.openSync(newPath, 'r');
    const old = this.#fd;
    this.#fd = fd;
    this.#path = newPath;
    fs.closeSync(old);
  }

  close(): void {
    fs.closeSync(this.#fd);
  }
}
