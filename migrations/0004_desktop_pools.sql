-- Desktop pools: sets of clones of one replica, named by a pattern, exported to hosts. A pool owns its
-- subsystems (one per 1024 desktops) and its desktops; each desktop is one clone and one namespace.
CREATE TABLE desktop_pools (
  id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE,
  replica_id uuid NOT NULL REFERENCES replicas (id),
  storage_pool_id uuid NOT NULL REFERENCES storage_pools (id),
  size integer NOT NULL CHECK (size >= 0),
  name_pattern text NOT NULL,
  qos_iops integer,
  qos_bytes_per_second bigint,
  refresh_grace_seconds integer NOT NULL DEFAULT 0,
  state text NOT NULL CHECK (state IN ('provisioning', 'ready', 'deleting', 'failed')),
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE desktop_pool_hosts (
  pool_id uuid NOT NULL REFERENCES desktop_pools (id) ON DELETE CASCADE,
  host_id uuid NOT NULL REFERENCES hosts (id),
  PRIMARY KEY (pool_id, host_id)
);

CREATE TABLE desktop_pool_subsystems (
  pool_id uuid NOT NULL REFERENCES desktop_pools (id) ON DELETE CASCADE,
  subsystem_id uuid NOT NULL UNIQUE REFERENCES subsystems (id),
  ordinal integer NOT NULL,
  PRIMARY KEY (pool_id, subsystem_id)
);

CREATE TABLE desktops (
  id uuid PRIMARY KEY,
  pool_id uuid NOT NULL REFERENCES desktop_pools (id),
  idx integer NOT NULL,
  name text NOT NULL,
  clone_id uuid NOT NULL UNIQUE REFERENCES clones (id),
  subsystem_id uuid NOT NULL REFERENCES subsystems (id),
  nsid integer NOT NULL,
  state text NOT NULL CHECK (state IN ('provisioning', 'available', 'in-use', 'refreshing', 'failed')),
  -- A refresh with a grace period keeps the discarded clone here until undo_until.
  undo_clone_id uuid REFERENCES clones (id),
  undo_until timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (pool_id, idx),
  UNIQUE (pool_id, name)
);
CREATE INDEX desktops_pool ON desktops (pool_id);

-- The job that created a desktop: a failed grow removes exactly what it added.
ALTER TABLE desktops ADD COLUMN job_id uuid;
