// Received bytes as a list of socket chunks. Payloads leave as views of those chunks; only small headers
// that straddle two chunks are copied (the ws / pg-protocol approach).

export class ByteQueue {
  #chunks: Buffer[] = [];
  #head = 0; // offset into #chunks[0]
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The chunk holding the first n bytes when they all sit in it (at headOffset), else undefined. */
  headChunk(n: number): Buffer | undefined {
    const c = this.#chunks[0];
    return c !== undefined && c.length - this.#head >= n ? c : undefined;
  }

  get headOffset(): number {
    return this.#head;
  }

  /** Copies the first n bytes into dst without consuming them. */
  peekInto(dst: Buffer, n: number): void {
    let copied = 0;
    let i = 0;
    let off = this.#head;
    while (copied < n) {
      const c = this.#chunks[i];
      const take = Math.min(c.length - off, n - copied);
      c.copy(dst, copied, off, off + take);
      copied += take;
      i++;
      off = 0;
    }
  }

  /** Removes the first n bytes and returns them as views (one view when they sit in one chunk). */
  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const c = this.#chunks[0];
      const avail = c.length - this.#head;
      if (avail <= need) {
        out.push(this.#head === 0 ? c : c.subarray(this.#head));
        this.#chunks.shift();
        this.#head = 0;
        need -= avail;
      } else {
        out.push(c.subarray(this.#head, this.#head + need));
        this.#head += need;
        need = 0;
      }
    }
    this.length -= n;
    return out;
  }

  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.length = 0;
  }
}

/** Copies bytes [offset, offset+length) of a view list into one buffer (a view when possible). */
export function contiguous(views: Buffer[], offset: number, length: number): Buffer {
  let skip = offset;
  for (const v of views) {
    if (skip < v.length) {
      if (skip + length <= v.length) return v.subarray(skip, skip + length);
      break;
    }
    skip -= v.length;
  }
  const out = Buffer.allocUnsafe(length);
  let pos = 0;
  skip = offset;
  for (const v of views) {
    if (pos >= length) break;
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    const take = Math.min(v.length - skip, length - pos);
    v.copy(out, pos, skip, skip + take);
    pos += take;
    skip = 0;
  }
  return out;
}

/** Views of bytes [offset, offset+length) of a view list. */
export function slice(views: Buffer[], offset: number, length: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = offset;
  let need = length;
  for (const v of views) {
    if (need <= 0) break;
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    const take = Math.min(v.length - skip, need);
    out.push(v.subarray(skip, skip + take));
    need -= take;
    skip = 0;
  }
  return out;
}
