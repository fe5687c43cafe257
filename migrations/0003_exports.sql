-- NVMe/TCP exports: hosts (by NQN), subsystems, which hosts may use which subsystem, and namespaces
-- (one clone each; visible to the listed hosts, or to every allowed host when the list is null).
CREATE TABLE hosts (
  id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE,
  nqn text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subsystems (
  id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE,
  nqn text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subsystem_hosts (
  subsystem_id uuid NOT NULL REFERENCES subsystems (id) ON DELETE CASCADE,
  host_id uuid NOT NULL REFERENCES hosts (id),
  PRIMARY KEY (subsystem_id, host_id)
);
CREATE INDEX subsystem_hosts_host ON subsystem_hosts (host_id);

CREATE TABLE namespaces (
  subsystem_id uuid NOT NULL REFERENCES subsystems (id) ON DELETE CASCADE,
  nsid integer NOT NULL CHECK (nsid BETWEEN 1 AND 1024),
  clone_id uuid NOT NULL UNIQUE REFERENCES clones (id),
  uuid uuid NOT NULL,
  nguid text NOT NULL,
  visible_host_ids uuid[],
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (subsystem_id, nsid)
);
