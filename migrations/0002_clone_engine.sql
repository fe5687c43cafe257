-- Clones served by the engine: unique names, and an optional configured capacity per storage pool
-- (a limit below the device's size).
ALTER TABLE storage_pools ADD COLUMN capacity_bytes bigint CHECK (capacity_bytes IS NULL OR capacity_bytes > 0);
CREATE UNIQUE INDEX clones_name ON clones (name);
ALTER TABLE clones ADD COLUMN error text;
ALTER TABLE clones ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
