-- One row per running ingester and engine: written every few seconds by the process itself, read by /health.
--
-- `process` names the process for as long as it keeps its identity: `ingest:<name>` (the name that also keeps
-- the ingester's broker session), `engine:<host>-<pid>`. A process that stops cleanly deletes its row; one that
-- dies leaves it behind, and /health calls it stale once `beat_at` is older than three of its `interval_s`.
CREATE TABLE process_heartbeats (
    process text PRIMARY KEY,
    kind text NOT NULL,                 -- ingest, engine
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    beat_at timestamptz NOT NULL,       -- the process's clock when it wrote this row
    interval_s double precision NOT NULL CHECK (interval_s > 0),  -- how often it means to write
    last_commit_at timestamptz,         -- its last committed unit of work (an ingest batch, an engine job)
    lag_s double precision,             -- ingest: commit time minus the arrival of the batch's newest message
    queue_depth integer,                -- ingest: messages received and not yet stored
    details jsonb NOT NULL DEFAULT '{}' -- counters: messages, readings, duplicates, quarantined per reason; job runs
);
