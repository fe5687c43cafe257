-- Control-plane schema: settings, storage pools, templates and versions, replicas, clones, jobs, events.

CREATE TABLE settings (
  key text PRIMARY KEY,
  value jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage_pools (
  id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE,
  path text NOT NULL UNIQUE,
  tier text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE templates (
  id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE,
  description text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE template_versions (
  id uuid PRIMARY KEY,
  template_id uuid NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
  version integer NOT NULL,
  size_bytes bigint NOT NULL CHECK (size_bytes > 0 AND size_bytes % 4096 = 0),
  sha256 text NOT NULL,
  format text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (template_id, version)
);

-- A replica outlives its template (templates may be deleted right after promotion), so it keeps a
-- copy of what it was made from instead of a foreign key to template_versions.
CREATE TABLE replicas (
  id uuid PRIMARY KEY,
  template_version_id uuid NOT NULL,
  template_id uuid NOT NULL,
  template_name text NOT NULL,
  version integer NOT NULL,
  storage_pool_id uuid NOT NULL REFERENCES storage_pools (id),
  state text NOT NULL CHECK (state IN ('creating', 'ready', 'corrupt', 'failed')),
  size_bytes bigint NOT NULL,
  sha256 text NOT NULL,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replicas_storage_pool ON replicas (storage_pool_id);
CREATE INDEX replicas_template_version ON replicas (template_version_id);

CREATE TABLE clones (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  replica_id uuid NOT NULL REFERENCES replicas (id),
  storage_pool_id uuid NOT NULL REFERENCES storage_pools (id),
  size_bytes bigint NOT NULL,
  state text NOT NULL,
  unique_bytes bigint NOT NULL DEFAULT 0,
  qos_iops integer,
  qos_bytes_per_second bigint,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clones_replica ON clones (replica_id);
CREATE INDEX clones_storage_pool ON clones (storage_pool_id);

CREATE TABLE jobs (
  id uuid PRIMARY KEY,
  kind text NOT NULL,
  state text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  resource_id uuid,
  payload jsonb NOT NULL DEFAULT '{}',
  phase text NOT NULL DEFAULT '',
  progress_done bigint NOT NULL DEFAULT 0,
  progress_total bigint NOT NULL DEFAULT 0,
  results jsonb NOT NULL DEFAULT '[]',
  error jsonb,
  cancel_requested boolean NOT NULL DEFAULT false,
  attempts integer NOT NULL DEFAULT 0,
  claimed_by text,
  heartbeat_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz
);
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_resource ON jobs (resource_id);

CREATE TABLE events (
  seq bigserial PRIMARY KEY,
  type text NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  data jsonb NOT NULL DEFAULT '{}'
);
