// A counting semaphore: at most `limit` holders; waiters are served in arrival order.
export class Semaphore {
  #limit: number;
  #held = 0;
  #waiters: Array<() => void> = [];
  constructor(limit: number) {
    if (!(limit >= 1)) throw new RangeError('a semaphore needs a limit of at least 1');
    this.#limit = limit;
  }

  get held(): number {
    return this.#held;
  }

  async acquire(): Promise<() => void> {
    if (this.#held < this.#limit) this.#held++;
    else await new Promise<void>((resolve) => this.#waiters.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      if (next) next();
      else this.#held--;
    };
  }

  async use<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
