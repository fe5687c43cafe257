// The shapes of the public API's JSON, as the UI uses them (see /api/v1/openapi.json).

export interface ApiErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export interface SessionInfo {
  csrfToken: string;
  expiresAt: string;
}

export interface StoragePool {
  id: string;
  name: string;
  path: string;
  tier: string;
  configuredCapacityBytes: number | null;
  usage: { capacityBytes: number; usedBytes: number; freeBytes: number; replicaBytes: number; cloneBytes: number };
  replicaCount: number;
  cloneCount: number;
}

export interface TemplateVersion {
  id: string;
  templateId: string;
  version: number;
  sizeBytes: number;
  sha256: string;
  format: string;
  createdAt: string;
}

export interface Template {
  id: string;
  name: string;
  description: string;
  createdAt: string;
  versionCount: number;
  latestVersion: number | null;
  versions?: TemplateVersion[];
}

export interface Replica {
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
  sharedBytes: number;
  error: string | null;
  createdAt: string;
}

export type DesktopState = 'provisioning' | 'available' | 'in-use' | 'refreshing' | 'failed';
export const DESKTOP_STATES: DesktopState[] = ['provisioning', 'available', 'in-use', 'refreshing', 'failed'];

export interface DesktopPool {
  id: string;
  name: string;
  replicaId: string;
  storagePoolId: string;
  size: number;
  namePattern: string;
  hostIds: string[];
  refreshGraceSeconds: number;
  state: string;
  error: string | null;
  desktops: Record<DesktopState, number> & { total: number };
  space: { uniqueBytes: number; sharedBytes: number; savedBytes: number };
  subsystems: Array<{ id: string; nqn: string }>;
  createdAt: string;
}

export interface Desktop {
  name: string;
  cloneId: string;
  subsystemNqn: string;
  nsid: number;
  uuid: string;
  state: DesktopState;
  uniqueBytes: number;
  undoUntil: string | null;
}

export interface Host {
  id: string;
  name: string;
  nqn: string;
  ssh: { address: string; port: number; username: string; privateKey: 'stored' | null; privateKeyPath: string | null } | null;
  hookType: 'linux-nvme' | 'libvirt' | null;
  hostKeyFingerprint: string | null;
  maxDesktops: number | null;
  createdAt: string;
}

export interface HostProbe {
  hostKey: { fingerprint: string; type: string; pinned: boolean; matches: boolean | null };
  nqn: string | null;
  nqnMatches: boolean;
  nvmeCli: boolean;
  nvmeTcp: boolean;
  virsh: boolean | null;
  kernel: string | null;
}

export interface JobItemResult {
  item: string;
  status: 'succeeded' | 'failed' | 'skipped';
  error?: string;
}

export interface Job {
  id: string;
  kind: string;
  state: string;
  resourceId: string | null;
  payload: Record<string, unknown>;
  phase: string;
  progress: { done: number; total: number };
  results: JobItemResult[];
  error: { code: string; message: string; details?: unknown } | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface ThicketEvent {
  seq: number;
  type: string;
  at: string;
  [field: string]: unknown;
}

export interface DesktopStateEvent extends ThicketEvent {
  type: 'desktop.state';
  poolId: string;
  desktops: Array<{ name: string; cloneId: string; state: DesktopState | 'deleted' }>;
}

export interface JobProgressEvent extends ThicketEvent {
  jobId: string;
  kind: string;
  resourceId: string | null;
  done: number;
  total: number;
  phase: string;
}

export interface ScheduleRun {
  scheduledFor: string;
  trigger: 'tick' | 'catch-up';
  jobId: string | null;
  state: string;
  skippedReason: string | null;
  error: { code: string; message: string } | null;
  desktops: { succeeded: number; failed: number; skipped: number };
  startedAt: string | null;
  finishedAt: string | null;
}

export interface Schedule {
  id: string;
  poolId: string;
  cron: string;
  timezone: string;
  action: 'refresh' | 'recompose-latest';
  waveSize: number;
  inUse: 'skip' | 'wait' | 'force';
  waitDeadlineMinutes: number | null;
  maxFailuresPerWave: number;
  enabled: boolean;
  nextRunAt: string | null;
  lastRun: ScheduleRun | null;
}
