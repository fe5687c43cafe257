import type { ReplicaWithCount } from '../../db/repositories/replica.repository.ts';
import type { ReplicaRow } from '../../db/schema.ts';

export interface ReplicaDto {
  id: string;
  templateVersionId: string;
  templateId: string;
  templateName: string;
  version: number;
  storagePoolId: string;
  state: string;
  sizeBytes: number;
  sha256: string;
  cloneCount: number;
  /** Bytes of this replica its clones read instead of owning (summed over clones). */
  sharedBytes: number;
  error: string | null;
  createdAt: string;
  updatedAt: string;
}

export function toReplicaDto(row: ReplicaRow | ReplicaWithCount): ReplicaDto {
  return {
    id: row.id,
    templateVersionId: row.template_version_id,
    templateId: row.template_id,
    templateName: row.template_name,
    version: row.version,
    storagePoolId: row.storage_pool_id,
    state: row.state,
    sizeBytes: Number(row.size_bytes),
    sha256: row.sha256,
    cloneCount: 'clone_count' in row ? Number(row.clone_count) : 0,
    sharedBytes: 0,
    error: row.error,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}
