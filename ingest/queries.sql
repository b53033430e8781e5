-- name: create_staging --
-- A per-connection staging table that COPY fills; emptied at each commit.
CREATE TEMP TABLE IF NOT EXISTS telemetry_staging (
    ts timestamptz NOT NULL, device_id text NOT NULL, metric text NOT NULL,
    value double precision NOT NULL, seq bigint NOT NULL
) ON COMMIT DELETE ROWS;

-- name: copy_staging --
-- Bulk-load this batch's readings.
COPY telemetry_staging (ts, device_id, metric, value, seq) FROM STDIN

-- name: insert_telemetry_from_staging --
-- Store the staged readings; redelivered ones hit the dedup key and are skipped.
INSERT INTO telemetry (ts, device_id, metric, value, seq)
SELECT ts, device_id, metric, value, seq FROM telemetry_staging
ORDER BY device_id, seq, metric
ON CONFLICT ON CONSTRAINT telemetry_dedup DO NOTHING
RETURNING device_id, seq, metric, value, ts

-- name: insert_events --
-- Store device events; redelivered ones are skipped.
INSERT INTO events (ts, device_id, seq, type, code, detail) VALUES %s
ON CONFLICT ON CONSTRAINT events_dedup DO NOTHING
RETURNING device_id, seq, type, code, ts

-- name: upsert_device_progress --
-- Advance each device's state with what this batch newly stored: seq bookkeeping, last seen,
-- and the newest value of each metric (a late reading never overwrites a newer one).
INSERT INTO device_state AS state
    (device_id, last_seen, last_received_at, first_seq, last_seq, seq_count, latest, updated_at)
SELECT v.device_id, v.last_seen, now(), v.first_seq, v.last_seq, v.seq_count, v.latest::jsonb, now()
FROM (VALUES %s) AS v (device_id, last_seen, first_seq, last_seq, seq_count, latest)
ORDER BY v.device_id
ON CONFLICT (device_id) DO UPDATE SET
    last_seen        = GREATEST(state.last_seen, excluded.last_seen),
    last_received_at = excluded.last_received_at,
    first_seq        = LEAST(state.first_seq, excluded.first_seq),
    last_seq         = GREATEST(state.last_seq, excluded.last_seq),
    seq_count        = state.seq_count + excluded.seq_count,
    latest           = (
        SELECT coalesce(jsonb_object_agg(newest.key, newest.value), '{}'::jsonb)
        FROM (
            SELECT DISTINCT ON (merged.key) merged.key, merged.value
            FROM (
                SELECT key, value FROM jsonb_each(state.latest)
                UNION ALL
                SELECT key, value FROM jsonb_each(excluded.latest)
            ) AS merged
            ORDER BY merged.key, (merged.value ->> 'ts')::timestamptz DESC
        ) AS newest
    ),
    updated_at       = now()

-- name: set_device_status --
-- Record a device's online/offline status from its status topic.
INSERT INTO device_state AS state (device_id, online, status_changed_at, updated_at)
VALUES (%(device_id)s, %(online)s, %(changed_at)s, now())
ON CONFLICT (device_id) DO UPDATE SET
    online            = excluded.online,
    status_changed_at = CASE WHEN state.online IS DISTINCT FROM excluded.online
                             THEN excluded.status_changed_at ELSE state.status_changed_at END,
    updated_at        = now()

-- name: insert_quarantine --
-- Keep rejected messages with their reason.
INSERT INTO quarantine (received_at, topic, device_id, reason, detail, payload, payload_bytes, dedup_key)
VALUES %s
ON CONFLICT (dedup_key) DO NOTHING

-- name: quarantine_by_reason --
-- How many messages were quarantined, per reason, since a time.
SELECT reason, count(*) AS count FROM quarantine WHERE received_at >= %(since)s
GROUP BY reason ORDER BY count DESC, reason

-- name: list_quarantine --
-- The newest quarantined messages, optionally of one reason.
SELECT id, received_at, topic, device_id, reason, detail, payload, payload_bytes,
       count(*) OVER () AS total
FROM quarantine
WHERE (%(reason)s::text IS NULL OR reason = %(reason)s)
ORDER BY received_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: missing_seq_total --
-- Messages lost on the way, over the fleet: gaps in each device's seq.
SELECT coalesce(sum(GREATEST(last_seq - first_seq + 1 - seq_count, 0)), 0) FROM device_state

-- name: notify_changed_devices --
-- Name the devices a batch changed; listeners hear it when the batch commits.
SELECT pg_notify(%(channel)s, %(payload)s)
