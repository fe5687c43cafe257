// Typed engine errors. The NVMe target maps them to status codes in exactly one place; the control plane
// maps them to AppError codes. The engine itself knows neither.

export class EngineError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The pool has no room for a new block; writes to owned blocks and reads still work. */
export class OutOfSpaceError extends EngineError {
  constructor(message = 'the storage pool is full') {
    super('OUT_OF_SPACE', message);
  }
}

export class LbaOutOfRangeError extends EngineError {
  constructor(slba: number, nlb: number, capacityBlocks: number) {
    super('LBA_OUT_OF_RANGE', `blocks ${slba}..${slba + nlb - 1} are beyond the volume's ${capacityBlocks} blocks`);
  }
}

export class CloneNotFoundError extends EngineError {
  constructor(id: string) {
    super('CLONE_NOT_FOUND', `clone ${id} is not open in the engine`);
  }
}

/** A clone whose files were found damaged at recovery; it is never served. */
export class CloneFailedError extends EngineError {
  constructor(id: string, reason: string) {
    super('CLONE_FAILED', `clone ${id} is failed: ${reason}`);
  }
}

export class CloneClosedError extends EngineError {
  constructor(id: string) {
    super('CLONE_CLOSED', `clone ${id} was deleted or closed`);
  }
}

export class ReplicaMismatchError extends EngineError {
  constructor(message: string) {
    super('REPLICA_MISMATCH', message);
  }
}

export class IoError extends EngineError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('IO_ERROR', message);
    if (options?.cause) this.cause = options.cause;
  }
}
