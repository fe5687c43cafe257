export { Engine, type EngineOptions, type CreateCloneInput, type CloneInfo, type ReplicaRef } from './engine.ts';
export { Clone } from './clone.ts';
export { BLOCK_SIZE_BYTES } from './block-size.ts';
export * from './errors.ts';
export type { QosLimits } from './token-bucket.ts';
