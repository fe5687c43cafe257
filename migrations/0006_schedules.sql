-- Schedules: refresh or recompose a desktop pool on a cron expression, in rolling waves. Each tick that
-- becomes a run is one schedule_runs row keyed by (schedule, tick), so however many Thicket processes
-- arm the same schedule, the first insert wins and the others do nothing.
CREATE TABLE schedules (
  id uuid PRIMARY KEY,
  pool_id uuid NOT NULL REFERENCES desktop_pools (id) ON DELETE CASCADE,
  cron text NOT NULL,
  timezone text NOT NULL,
  action text NOT NULL CHECK (action IN ('refresh', 'recompose-latest')),
  wave_size integer NOT NULL CHECK (wave_size > 0),
  in_use text NOT NULL CHECK (in_use IN ('skip', 'wait', 'force')),
  -- Fractional minutes are allowed (0.5 = 30 s).
  wait_deadline_minutes double precision CHECK (wait_deadline_minutes > 0),
  max_failures_per_wave integer NOT NULL DEFAULT 0 CHECK (max_failures_per_wave >= 0),
  enabled boolean NOT NULL,
  -- The next tick no process has handled yet, and the tick after it (the end of its catch-up window).
  pending_tick_at timestamptz,
  window_ends_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_pool ON schedules (pool_id);

CREATE TABLE schedule_runs (
  schedule_id uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
  scheduled_for timestamptz NOT NULL,
  -- 'tick' (node-cron fired) or 'catch-up' (missed while no process ran, made up at start-up).
  trigger text NOT NULL CHECK (trigger IN ('tick', 'catch-up')),
  -- NULL when the tick was skipped (the pool was busy with another job).
  job_id uuid,
  skipped_reason text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (schedule_id, scheduled_for)
);
CREATE INDEX schedule_runs_job ON schedule_runs (job_id);

-- Each desktop a run takes on, with its wave, so a resumed run knows what is done and what a crash
-- left half-way (pending), and what state to give back.
CREATE TABLE schedule_run_items (
  job_id uuid NOT NULL,
  desktop_id uuid NOT NULL,
  desktop_name text NOT NULL,
  wave integer NOT NULL,
  previous_state text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'skipped')),
  error text,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, desktop_id)
);
