// The control plane's handle on the data plane: starts the worker and turns calls into messages.
import { Worker } from 'node:worker_threads';
import { applyDataplaneV8Flags } from './v8-flags.ts';
import type { DataplaneOps, DataplaneOptions, DataplaneResponse, OpName } from './protocol.ts';

export class DataplaneError extends Error {
  readonly code: string;
  constructor(code: string, message: string, name: string) {
    super(message);
    this.name = name;
    this.code = code;
  }
}

export class DataplaneClient {
  #worker: Worker;
  #nextId = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  #closed = false;
  #exitError: Error | undefined;
  onBackgroundError: (message: string) => void = () => {};

  constructor(options: DataplaneOptions) {
    applyDataplaneV8Flags();
    this.#worker = new Worker(new URL('./worker.ts', import.meta.url), { workerData: options });
    this.#worker.on('message', (msg: DataplaneResponse) => {
      if (msg.id === -1 && !msg.ok) {
        this.onBackgroundError(msg.error.message);
        return;
      }
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new DataplaneError(msg.error.code, msg.error.message, msg.error.name));
    });
    const fail = (err: Error) => {
      this.#exitError = err;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    };
    this.#worker.on('error', fail);
    this.#worker.on('exit', (code) => {
      if (!this.#closed) fail(new Error(`the data-plane worker exited with code ${code}`));
    });
  }

  call<K extends OpName>(op: K, args: Parameters<DataplaneOps[K]>[0]): Promise<ReturnType<DataplaneOps[K]>> {
    if (this.#exitError) return Promise.reject(this.#exitError);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ id, op, args });
    });
  }

  /** Flushes and closes every pool, then stops the worker. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#exitError) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000);
        this.#worker.on('message', (msg: { id: number }) => {
          if (msg.id === -2) {
            clearTimeout(timer);
            resolve();
          }
        });
        this.#worker.postMessage({ op: 'shutdown' });
      });
    }
    await this.#worker.terminate();
  }
}
