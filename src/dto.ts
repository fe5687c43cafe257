// The JSON shapes of the public API, shared by the services that build them and the web UI that reads
// them (web/src/types.ts imports these: one definition, no drift). Types only: nothing here runs.
import type { DesktopState, HookType, InUsePolicy, JobItemResult, ScheduleAction } from './db/schema.ts';

export interface StoragePoolDto {
  id: string;
  name: string;
  path: string;
  tier: string;
  /** A configured limit below the device's size, or null. */
  configuredCapacityBytes: number | null;
  createdAt: string;
  usage: {
    capacityBytes: number;
    usedBytes: number;
    freeBytes: number;
    replicaBytes: number;
    cloneBytes: number;
  };
  replicaCount: number;
  cloneCount: number;
}

export interface TemplateVersionDto {
  id: string;
  templateId: string;
  version: number;
  sizeBytes: number;
  sha256: string;
  format: string;
  createdAt: string;
}

export interface TemplateDto {
  id: string;
  name: string;
  description: string;
  createdAt: string;
  versionCount: number;
  latestVersion: number | null;
}

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

export interface DesktopPoolDto {
  id: string;
  name: string;
  replicaId: string;
  storagePoolId: string;
  size: number;
  namePattern: string;
  hostIds: string[];
  qos: { iops: number | null; bytesPerSecond: number | null };
  refreshGraceSeconds: number;
  /** When a host reports the desktop's VM stopped (or its session ended), the clone is reset first. */
  refreshOnLogoff: boolean;
  /** The libvirt domain of each desktop on a libvirt host. */
  vm: { vcpus: number; memoryMiB: number; network: string };
  state: string;
  error: string | null;
  desktops: Record<DesktopState, number> & { total: number };
  space: { uniqueBytes: number; sharedBytes: number; savedBytes: number };
  subsystems: Array<{ id: string; nqn: string }>;
  createdAt: string;
}

export interface DesktopDto {
  name: string;
  cloneId: string;
  subsystemNqn: string;
  nsid: number;
  uuid: string;
  state: DesktopState;
  uniqueBytes: number;
  undoUntil: string | null;
  /** The hypervisor host it is placed on (hook hosts only), whether its attach hook ran, its VM power. */
  hostId: string | null;
  attached: boolean;
  power: 'running' | 'stopped' | null;
  /** Why it is failed (a hook's stderr). */
  error: string | null;
}

export interface JobDto {
  id: string;
  kind: string;
  state: string;
  resourceId: string | null;
  payload: Record<string, unknown>;
  phase: string;
  progress: { done: number; total: number };
  results: JobItemResult[];
  error: { code: string; message: string; details?: unknown } | null;
  cancelRequested: boolean;
  attempts: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface HostDto {
  id: string;
  name: string;
  nqn: string;
  /** How Thicket logs in to run hooks; null for a plain NVMe host. The private key is never returned. */
  ssh: { address: string; port: number; username: string; privateKey: 'stored' | null; privateKeyPath: string | null } | null;
  hookType: HookType | null;
  /** The pinned host key, "SHA256:…"; null until trusted. */
  hostKeyFingerprint: string | null;
  maxDesktops: number | null;
  createdAt: string;
  subsystems?: Array<{ id: string; name: string; nqn: string }>;
}

export interface ScheduleRunDto {
  scheduledFor: string;
  trigger: 'tick' | 'catch-up';
  jobId: string | null;
  /** 'skipped' when the tick found the pool busy; otherwise the state of the run's job. */
  state: string;
  skippedReason: string | null;
  error: { code: string; message: string } | null;
  desktops: { succeeded: number; failed: number; skipped: number };
  startedAt: string | null;
  finishedAt: string | null;
}

export interface ScheduleDto {
  id: string;
  poolId: string;
  cron: string;
  timezone: string;
  action: ScheduleAction;
  waveSize: number;
  inUse: InUsePolicy;
  waitDeadlineMinutes: number | null;
  maxFailuresPerWave: number;
  enabled: boolean;
  nextRunAt: string | null;
  lastRun: ScheduleRunDto | null;
  createdAt: string;
  updatedAt: string;
}

export interface ProbeReport {
  hostKey: { fingerprint: string; type: string; pinned: boolean; matches: boolean | null };
  nqn: string | null;
  nqnMatches: boolean;
  nvmeCli: boolean;
  nvmeTcp: boolean;
  virsh: boolean | null;
  kernel: string | null;
}
