// The shapes of the public API's JSON, as the UI uses them (see /api/v1/openapi.json). The DTOs are the
// server's own (src/dto.ts), so the UI and the API cannot drift apart.
import type { DesktopState } from '../../src/db/schema.ts';
import type {
  DesktopDto,
  DesktopPoolDto,
  HostDto,
  JobDto,
  ProbeReport,
  ReplicaDto,
  ScheduleDto,
  ScheduleRunDto,
  StoragePoolDto,
  TemplateDto,
  TemplateVersionDto,
} from '../../src/dto.ts';

export type { DesktopState };
export type StoragePool = StoragePoolDto;
export type TemplateVersion = TemplateVersionDto;
/** GET /templates/:id adds the versions; the list leaves them out. */
export type Template = TemplateDto & { versions?: TemplateVersionDto[] };
export type Replica = ReplicaDto;
export type DesktopPool = DesktopPoolDto;
export type Desktop = DesktopDto;
export type Host = HostDto;
export type HostProbe = ProbeReport;
export type Job = JobDto;
export type JobItemResult = JobDto['results'][number];
export type Schedule = ScheduleDto;
export type ScheduleRun = ScheduleRunDto;

export interface ApiErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export interface SessionInfo {
  csrfToken: string;
  expiresAt: string;
}

export const DESKTOP_STATES: DesktopState[] = ['provisioning', 'available', 'in-use', 'refreshing', 'failed'];

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

