// Table shapes as Kysely sees them: the only place they are written down besides migrations/.
import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string | undefined, string>;

export interface SettingsTable {
  key: string;
  value: Json<unknown>;
  updated_at: Timestamp;
}

export interface StoragePoolsTable {
  id: string;
  name: string;
  path: string;
  tier: string;
  capacity_bytes: number | null;
  created_at: Timestamp;
}

export interface TemplatesTable {
  id: string;
  name: string;
  description: Generated<string>;
  created_at: Timestamp;
}

export interface TemplateVersionsTable {
  id: string;
  template_id: string;
  version: number;
  size_bytes: number;
  sha256: string;
  format: string;
  created_at: Timestamp;
}

export const REPLICA_STATES = ['creating', 'ready', 'corrupt', 'failed'] as const;
export type ReplicaState = (typeof REPLICA_STATES)[number];

export interface ReplicasTable {
  id: string;
  template_version_id: string;
  template_id: string;
  template_name: string;
  version: number;
  storage_pool_id: string;
  state: ReplicaState;
  size_bytes: number;
  sha256: string;
  error: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ClonesTable {
  id: string;
  name: string;
  replica_id: string;
  storage_pool_id: string;
  size_bytes: number;
  state: string;
  unique_bytes: Generated<number>;
  qos_iops: number | null;
  qos_bytes_per_second: number | null;
  error: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface JobItemResult {
  item: string;
  status: 'succeeded' | 'failed' | 'skipped';
  error?: string;
}

export interface JobsTable {
  id: string;
  kind: string;
  state: JobState;
  resource_id: string | null;
  payload: Json<Record<string, unknown>>;
  phase: Generated<string>;
  progress_done: Generated<number>;
  progress_total: Generated<number>;
  results: Json<JobItemResult[]>;
  error: Json<{ code: string; message: string; details?: unknown } | null>;
  cancel_requested: Generated<boolean>;
  attempts: Generated<number>;
  claimed_by: string | null;
  heartbeat_at: Date | null;
  /** Claim order among jobs queued at the same instant (FIFO). */
  queue_seq: Generated<number>;
  created_at: Timestamp;
  started_at: Date | null;
  finished_at: Date | null;
}

export interface EventsTable {
  seq: Generated<number>;
  type: string;
  at: Timestamp;
  data: Json<Record<string, unknown>>;
}

export const HOOK_TYPES = ['linux-nvme', 'libvirt'] as const;
export type HookType = (typeof HOOK_TYPES)[number];

export interface HostsTable {
  id: string;
  name: string;
  nqn: string;
  created_at: Timestamp;
  ssh_address: ColumnType<string | null, string | null | undefined, string | null>;
  ssh_port: ColumnType<number | null, number | null | undefined, number | null>;
  ssh_username: ColumnType<string | null, string | null | undefined, string | null>;
  ssh_private_key_enc: ColumnType<string | null, string | null | undefined, string | null>;
  ssh_private_key_path: ColumnType<string | null, string | null | undefined, string | null>;
  hook_type: ColumnType<HookType | null, HookType | null | undefined, HookType | null>;
  host_key_fingerprint: ColumnType<string | null, string | null | undefined, string | null>;
  max_desktops: ColumnType<number | null, number | null | undefined, number | null>;
}

export interface SubsystemsTable {
  id: string;
  name: string;
  nqn: string;
  created_at: Timestamp;
}

export interface SubsystemHostsTable {
  subsystem_id: string;
  host_id: string;
}

export interface NamespacesTable {
  subsystem_id: string;
  nsid: number;
  clone_id: string;
  uuid: string;
  nguid: string;
  visible_host_ids: string[] | null;
  created_at: Timestamp;
}

export const DESKTOP_STATES = ['provisioning', 'available', 'in-use', 'refreshing', 'failed'] as const;
export type DesktopState = (typeof DESKTOP_STATES)[number];

export interface DesktopPoolsTable {
  id: string;
  name: string;
  replica_id: string;
  storage_pool_id: string;
  size: number;
  name_pattern: string;
  qos_iops: number | null;
  qos_bytes_per_second: number | null;
  refresh_grace_seconds: Generated<number>;
  refresh_on_logoff: Generated<boolean>;
  vm_vcpus: Generated<number>;
  vm_memory_mib: Generated<number>;
  vm_network: Generated<string>;
  state: 'provisioning' | 'ready' | 'deleting' | 'failed';
  error: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface DesktopPoolHostsTable {
  pool_id: string;
  host_id: string;
}

export interface DesktopPoolSubsystemsTable {
  pool_id: string;
  subsystem_id: string;
  ordinal: number;
}

export interface DesktopsTable {
  id: string;
  pool_id: string;
  idx: number;
  name: string;
  clone_id: string;
  subsystem_id: string;
  nsid: number;
  state: DesktopState;
  undo_clone_id: string | null;
  undo_until: Date | null;
  job_id: string | null;
  /** The hypervisor host the desktop is placed on (hosts with SSH hooks only). */
  host_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** Whether the attach hook has run on host_id. */
  attached: Generated<boolean>;
  /** Why the desktop is failed (a hook's stderr). */
  error: ColumnType<string | null, string | null | undefined, string | null>;
  /** Last VM power state the host reported. */
  power: ColumnType<'running' | 'stopped' | null, 'running' | 'stopped' | null | undefined, 'running' | 'stopped' | null>;
  updated_at: Timestamp;
}

export interface SessionsTable {
  id_sha256: string;
  csrf_token: string;
  created_at: Generated<Date>;
  expires_at: Date;
  token_sha256: string | null;
}

export const SCHEDULE_ACTIONS = ['refresh', 'recompose-latest'] as const;
export type ScheduleAction = (typeof SCHEDULE_ACTIONS)[number];
export const IN_USE_POLICIES = ['skip', 'wait', 'force'] as const;
export type InUsePolicy = (typeof IN_USE_POLICIES)[number];

export interface SchedulesTable {
  id: string;
  pool_id: string;
  cron: string;
  timezone: string;
  action: ScheduleAction;
  wave_size: number;
  in_use: InUsePolicy;
  wait_deadline_minutes: number | null;
  max_failures_per_wave: number;
  enabled: boolean;
  pending_tick_at: Date | null;
  window_ends_at: Date | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ScheduleRunsTable {
  schedule_id: string;
  scheduled_for: Date;
  trigger: 'tick' | 'catch-up';
  job_id: string | null;
  skipped_reason: string | null;
  created_at: Timestamp;
}

export interface ScheduleRunItemsTable {
  job_id: string;
  desktop_id: string;
  desktop_name: string;
  wave: number;
  previous_state: DesktopState;
  status: 'pending' | 'succeeded' | 'failed' | 'skipped';
  error: string | null;
  updated_at: Timestamp;
}

export interface Database {
  settings: SettingsTable;
  storage_pools: StoragePoolsTable;
  templates: TemplatesTable;
  template_versions: TemplateVersionsTable;
  replicas: ReplicasTable;
  clones: ClonesTable;
  jobs: JobsTable;
  events: EventsTable;
  hosts: HostsTable;
  subsystems: SubsystemsTable;
  subsystem_hosts: SubsystemHostsTable;
  namespaces: NamespacesTable;
  desktop_pools: DesktopPoolsTable;
  desktop_pool_hosts: DesktopPoolHostsTable;
  desktop_pool_subsystems: DesktopPoolSubsystemsTable;
  desktops: DesktopsTable;
  sessions: SessionsTable;
  schedules: SchedulesTable;
  schedule_runs: ScheduleRunsTable;
  schedule_run_items: ScheduleRunItemsTable;
}

export type DesktopPoolRow = Selectable<DesktopPoolsTable>;
export type DesktopRow = Selectable<DesktopsTable>;

export type ScheduleRow = Selectable<SchedulesTable>;
export type ScheduleRunRow = Selectable<ScheduleRunsTable>;
export type ScheduleRunItemRow = Selectable<ScheduleRunItemsTable>;

export type HostRow = Selectable<HostsTable>;
export type SubsystemRow = Selectable<SubsystemsTable>;
export type NamespaceRow = Selectable<NamespacesTable>;

export type StoragePoolRow = Selectable<StoragePoolsTable>;
export type TemplateRow = Selectable<TemplatesTable>;
export type TemplateVersionRow = Selectable<TemplateVersionsTable>;
export type ReplicaRow = Selectable<ReplicasTable>;
export type CloneRow = Selectable<ClonesTable>;
export type JobRow = Selectable<JobsTable>;
export type EventRow = Selectable<EventsTable>;
export type NewJob = Insertable<JobsTable>;
export type JobUpdate = Updateable<JobsTable>;
