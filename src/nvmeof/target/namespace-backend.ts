// What a namespace needs from the storage below it. The target reaches the engine only through this.

export interface NamespaceBackend {
  /** Capacity in 4096-byte blocks. */
  readonly blocks: number;
  /**
   * Read and Write may complete synchronously (return the result, or throw) when nothing has to wait:
   * the target then answers without a promise per command. A returned promise is waited for.
   */
  /**
   * `scratch`, when given, is nlb blocks of memory the backend may read device data into and return views
   * of; the caller reuses it only after it has sent those views.
   */
  read(slba: number, nlb: number, scratch?: Buffer): Buffer[] | Promise<Buffer[]>;
  write(slba: number, chunks: readonly Buffer[], fua: boolean): void | Promise<void>;
  flush(): Promise<void>;
  writeZeroes(slba: number, nlb: number): Promise<void>;
  deallocate(slba: number, nlb: number): Promise<void>;
  /** Blocks holding data of their own (NUSE). */
  usedBlocks(): number;
}
