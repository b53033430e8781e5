-- Ingest speed and storage: one index on telemetry where there were two, and a seq_is_reset the planner inlines.

-- The dedup key (device_id, seq, metric, ts) and the readers' index (device_id, metric, ts DESC) INCLUDE (value,
-- seq) held the same four columns twice: every reading paid for two B-tree insertions. One unique index on
-- (device_id, metric, ts, seq) INCLUDE (value) is both: the same columns are unique, and a backward scan reads a
-- device's metric newest first with its value, as the rule engine's loader does. Named telemetry_dedup still,
-- which ingest's ON CONFLICT names.
-- TimescaleDB cannot create a unique constraint over compressed chunks; a telemetry that is already a hypertable
-- keeps its two indexes (both still correct) and says so. A fresh install runs this before telemetry becomes a
-- hypertable (migrations/timescale/), so it gets the one index.
DO $$
DECLARE
    is_hypertable boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- dynamic: without the extension the view does not exist, and a static reference would not plan
        EXECUTE 'SELECT EXISTS (SELECT FROM timescaledb_information.hypertables WHERE hypertable_name = ''telemetry'')'
            INTO is_hypertable;
    END IF;
    IF is_hypertable THEN
        RAISE NOTICE 'telemetry is a hypertable: its indexes are left as they are';
        RETURN;
    END IF;
    ALTER TABLE telemetry DROP CONSTRAINT telemetry_dedup;
    DROP INDEX telemetry_device_metric_ts_idx;
    ALTER TABLE telemetry ADD CONSTRAINT telemetry_dedup UNIQUE (device_id, metric, ts, seq) INCLUDE (value);
END
$$;

-- The same test as migration 011's, written as a single expression: a SQL function with a FROM clause is
-- executed as a function call for each use, five per device_state row an ingest batch writes; one without is
-- inlined into the statement.
CREATE OR REPLACE FUNCTION seq_is_reset(
    first_seq bigint, last_seq bigint, last_seen timestamptz,
    new_first bigint, new_last bigint, new_seen timestamptz
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT first_seq IS NOT NULL AND last_seq IS NOT NULL AND (
        new_first::numeric > last_seq::numeric
            + (10000 + 10 * abs(extract(epoch FROM new_seen - coalesce(last_seen, new_seen))))
        OR new_last::numeric < first_seq::numeric
            - (10000 + 10 * abs(extract(epoch FROM new_seen - coalesce(last_seen, new_seen)))))
$$;
