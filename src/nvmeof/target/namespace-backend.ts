// What a namespace needs from the storage below it. The target reaches the engine only through this.

export interface NamespaceBackend {
  /** Capacity in 4096-byte blocks. */
  readonly blocks: number;
  read(slba: number, nlb: number): Promise<Buffer[]>;
  write(slba: number, chunks: readonly Buffer[], fua: boolean): Promise<void>;
  flush(): Promise<void>;
  writeZeroes(slba: number, nlb: number): Promise<void>;
  deallocate(slba: number, nlb: number): Promise<void>;
  /** Blocks holding data of their own (NUSE). */
  usedBlocks(): number;
}
