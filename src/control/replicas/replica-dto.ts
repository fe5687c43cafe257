import type { ReplicaWithCount } from '../../db/repositories/replica.repository.ts';
import type { ReplicaRow } from '../../db/schema.ts';
import type { ReplicaDto } from '../../dto.ts';
export type { ReplicaDto } from '../../dto.ts';


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
