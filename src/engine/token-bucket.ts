// Per-clone QoS: token buckets for operations and bytes with a burst allowance. A limited clone waits
// its turn (FIFO); it never fails.

export interface QosLimits {
  iops?: number | null;
  bytesPerSecond?: number | null;
}

class Bucket {
  #rate: number;
  #burst: number;
  #tokens: number;
  #last = performance.now();

  constructor(ratePerSecond: number, burstSeconds: number) {
    this.#rate = ratePerSecond;
    this.#burst = Math.max(1, ratePerSecond * burstSeconds);
    this.#tokens = this.#burst;
  }

  #refill(now: number): void {
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
  }

  /** Takes n tokens (may go negative: debt) and returns how many ms the caller must wait. */
  take(n: number, now: number): number {
    this.#refill(now);
    this.#tokens -= n;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / this.#rate) * 1000;
  }
}

export class QosLimiter {
  readonly limits: QosLimits;
  #ops: Bucket | undefined;
  #bytes: Bucket | undefined;

  constructor(limits: QosLimits, burstSeconds = 1) {
    this.limits = { iops: limits.iops ?? null, bytesPerSecond: limits.bytesPerSecond ?? null };
    if (limits.iops) this.#ops = new Bucket(limits.iops, burstSeconds);
    if (limits.bytesPerSecond) this.#bytes = new Bucket(limits.bytesPerSecond, burstSeconds);
  }

  get limited(): boolean {
    return this.#ops !== undefined || this.#bytes !== undefined;
  }

  /** Resolves when the operation may proceed. */
  admit(bytes: number): Promise<void> | undefined {
    if (!this.limited) return undefined;
    const now = performance.now();
    const wait = Math.max(this.#ops?.take(1, now) ?? 0, this.#bytes?.take(bytes, now) ?? 0);
    if (wait <= 0) return undefined;
    // Debt is charged at once, so each later caller's wait already includes this one's: arrival order
    // is kept without chaining.
    return new Promise<void>((resolve) => setTimeout(resolve, wait));
  }
}
