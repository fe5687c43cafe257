-- Jobs are claimed first in, first out. created_at alone ties for jobs queued in one transaction (now()
-- is the transaction's start) and then the random id decided; a monotonic number breaks the tie.
ALTER TABLE jobs ADD COLUMN queue_seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE INDEX jobs_queued_fifo ON jobs (created_at, queue_seq) WHERE state = 'queued';
