-- name: create_staging --
-- A per-connection staging table that COPY fills; emptied at each commit.
CREATE TEMP TABLE IF NOT EXISTS telemetry_staging (
    ts timestamptz NOT NULL, device_id text NOT NULL, metric text NOT NULL,
    value double precision NOT NULL, seq bigint NOT NULL
) ON COMMIT DELETE ROWS;

-- name: copy_staging --
-- Bulk-load this batch's readings.
COPY telemetry_staging (ts, device_id, metric, value, seq) FROM STDIN

-- name: insert_new_telemetry_from_staging --
-- The usual batch, none of whose readings is stored yet: a plain insert. A reading stored before (or twice in the
-- batch) fails it with a unique violation, and insert_telemetry_from_staging does the batch instead. A third
-- cheaper than ON CONFLICT's speculative insertion, and nothing to answer.
INSERT INTO telemetry (ts, device_id, metric, value, seq)
SELECT ts, device_id, metric, value, seq FROM telemetry_staging
ORDER BY device_id, metric, ts, seq

-- name: insert_telemetry_from_staging --
-- Store the staged readings, skipping those stored before (a redelivery hits the dedup key), and take the
-- skipped ones out of the staging table, so that it holds what was stored for refresh_latest_from_staging.
-- Answers the skipped ones (ingest.models.TelemetryRow): usually none, so what was stored never travels back. A
-- value twice in the batch stays staged in both copies (stored once: see ingest.service._newly_stored).
WITH stored AS (
    INSERT INTO telemetry (ts, device_id, metric, value, seq)
    SELECT ts, device_id, metric, value, seq FROM telemetry_staging
    ORDER BY device_id, metric, ts, seq
    ON CONFLICT ON CONSTRAINT telemetry_dedup DO NOTHING
    RETURNING ts, device_id, metric, value, seq
)
DELETE FROM telemetry_staging s
WHERE NOT EXISTS (SELECT FROM stored n WHERE n.device_id = s.device_id AND n.seq = s.seq
                                         AND n.metric = s.metric AND n.ts = s.ts)
RETURNING s.ts, s.device_id, s.metric, s.value, s.seq

-- name: refresh_latest_from_staging --
-- The newest of the staged readings of each (device, metric) into latest_readings (migration 024), straight from
-- the staging table, so they never travel to Python and back; a late reading never replaces a newer one. The
-- usual message (the metrics the row has, all newer) replaces the arrays whole; anything else is merged.
INSERT INTO latest_readings AS latest (device_id, newest_ts, metrics, readings, ts, seqs)
SELECT device_id, max(ts), array_agg(metric ORDER BY metric), array_agg(value ORDER BY metric),
       array_agg(ts ORDER BY metric), array_agg(seq ORDER BY metric)
FROM (
    SELECT DISTINCT ON (device_id, metric) ts, device_id, metric, value, seq
    FROM telemetry_staging
    ORDER BY device_id, metric, ts DESC, seq DESC
) newest
GROUP BY device_id
ORDER BY device_id
ON CONFLICT (device_id) DO UPDATE SET
    newest_ts = greatest(latest.newest_ts, excluded.newest_ts),
    metrics   = CASE WHEN excluded.metrics = latest.metrics AND latest.newest_ts < ALL (excluded.ts)
                     THEN excluded.metrics
                     ELSE (SELECT array_agg(n.metric ORDER BY n.metric) FROM newest_of_each_metric(
                               latest.metrics, latest.readings, latest.ts, latest.seqs,
                               excluded.metrics, excluded.readings, excluded.ts, excluded.seqs) n) END,
    readings  = CASE WHEN excluded.metrics = latest.metrics AND latest.newest_ts < ALL (excluded.ts)
                     THEN excluded.readings
                     ELSE (SELECT array_agg(n.value ORDER BY n.metric) FROM newest_of_each_metric(
                               latest.metrics, latest.readings, latest.ts, latest.seqs,
                               excluded.metrics, excluded.readings, excluded.ts, excluded.seqs) n) END,
    ts        = CASE WHEN excluded.metrics = latest.metrics AND latest.newest_ts < ALL (excluded.ts)
                     THEN excluded.ts
                     ELSE (SELECT array_agg(n.ts ORDER BY n.metric) FROM newest_of_each_metric(
                               latest.metrics, latest.readings, latest.ts, latest.seqs,
                               excluded.metrics, excluded.readings, excluded.ts, excluded.seqs) n) END,
    seqs      = CASE WHEN excluded.metrics = latest.metrics AND latest.newest_ts < ALL (excluded.ts)
                     THEN excluded.seqs
                     ELSE (SELECT array_agg(n.seq ORDER BY n.metric) FROM newest_of_each_metric(
                               latest.metrics, latest.readings, latest.ts, latest.seqs,
                               excluded.metrics, excluded.readings, excluded.ts, excluded.seqs) n) END

-- name: insert_events --
-- Store device events; redelivered ones are skipped. Answers the new ones as given (ingest.models.EventRow).
INSERT INTO events (ts, device_id, seq, type, code, detail) VALUES %s
ON CONFLICT ON CONSTRAINT events_dedup DO NOTHING
RETURNING ts, device_id, seq, type, code, detail

-- name: create_progress_staging --
-- A per-connection table that COPY fills with each device's progress in a batch; emptied at each commit.
CREATE TEMP TABLE IF NOT EXISTS device_progress_staging (
    device_id text NOT NULL, last_seen timestamptz NOT NULL, first_seq bigint NOT NULL, last_seq bigint NOT NULL,
    seq_count bigint NOT NULL, seq_resets bigint NOT NULL
) ON COMMIT DELETE ROWS;

-- name: copy_progress_staging --
-- Bulk-load this batch's progress (ingest.models.DeviceProgress's columns).
COPY device_progress_staging (device_id, last_seen, first_seq, last_seq, seq_count, seq_resets) FROM STDIN

-- name: upsert_device_progress --
-- Advance each device's state with what this batch newly stored (staged by copy_progress_staging): seq
-- bookkeeping and last seen. A seq range far from the one kept starts a new count (seq_is_reset, migration 011).
-- Its row locks, held to commit, make two batches of one device take turns for what follows. It empties the
-- staging table: a batch stored in halves (ingest.service.ingest_batch) stages each half's progress in turn.
WITH staged AS (DELETE FROM device_progress_staging RETURNING *)
INSERT INTO device_state AS state
    (device_id, last_seen, last_received_at, first_seq, last_seq, seq_count, seq_resets, updated_at)
SELECT v.device_id, v.last_seen, now(), v.first_seq, v.last_seq, v.seq_count, v.seq_resets, now()
FROM staged v
ORDER BY v.device_id
ON CONFLICT (device_id) DO UPDATE SET
    last_seen        = GREATEST(state.last_seen, excluded.last_seen),
    last_received_at = excluded.last_received_at,
    missing_before_reset = CASE
        WHEN seq_is_reset(state.first_seq, state.last_seq, state.last_seen,
                          excluded.first_seq, excluded.last_seq, excluded.last_seen)
        THEN state.missing_seq ELSE state.missing_before_reset END,
    seq_resets       = state.seq_resets + excluded.seq_resets + CASE
        WHEN seq_is_reset(state.first_seq, state.last_seq, state.last_seen,
                          excluded.first_seq, excluded.last_seq, excluded.last_seen)
        THEN 1 ELSE 0 END,
    first_seq        = CASE
        WHEN seq_is_reset(state.first_seq, state.last_seq, state.last_seen,
                          excluded.first_seq, excluded.last_seq, excluded.last_seen)
        THEN excluded.first_seq ELSE LEAST(state.first_seq, excluded.first_seq) END,
    last_seq         = CASE
        WHEN seq_is_reset(state.first_seq, state.last_seq, state.last_seen,
                          excluded.first_seq, excluded.last_seq, excluded.last_seen)
        THEN excluded.last_seq ELSE GREATEST(state.last_seq, excluded.last_seq) END,
    seq_count        = CASE
        WHEN seq_is_reset(state.first_seq, state.last_seq, state.last_seen,
                          excluded.first_seq, excluded.last_seq, excluded.last_seen)
        THEN excluded.seq_count ELSE state.seq_count + excluded.seq_count END,
    updated_at       = now()

-- name: record_event_counters --
-- Refresh event_counters (see its migration) where this batch can have changed them: the (device, event type,
-- counter metric) triples of its new events, and stored rows that one of its readings lands before (at or
-- before the event's second, or before the reading the value was taken from, or where there was none).
-- The readings are the ones staged and stored (telemetry_staging after insert_*_telemetry_from_staging), when
-- `readings_staged`: they never travel to Python and back. Only counter metrics have rows in event_counters.
-- Each row is recomputed from the device's last event of the type and its readings, whatever the batch held.
WITH triple AS (
    SELECT device_id, event_type, metric
    FROM unnest(%(event_devices)s::text[], %(event_types)s::text[], %(event_metrics)s::text[])
         AS e (device_id, event_type, metric)
    UNION
    SELECT c.device_id, c.event_type, c.metric
    FROM (SELECT device_id, metric, min(ts) AS earliest FROM telemetry_staging
          WHERE %(readings_staged)s AND metric = ANY(%(counter_metrics)s::text[])
          GROUP BY device_id, metric) AS r
    JOIN event_counters c ON c.device_id = r.device_id AND c.metric = r.metric
    WHERE c.reading_ts IS NULL
       OR r.earliest < date_trunc('second', c.event_ts) + interval '1 second'
       OR r.earliest <= c.reading_ts
), last_event AS (
    SELECT t.device_id, t.event_type, t.metric,
           (SELECT max(e.ts) FROM events e WHERE e.device_id = t.device_id AND e.type = t.event_type) AS ts
    FROM triple t
)
INSERT INTO event_counters AS counter (device_id, event_type, metric, event_ts, value, reading_ts)
SELECT l.device_id, l.event_type, l.metric, l.ts,
       coalesce(before.value, after.value), coalesce(before.ts, after.ts)
FROM last_event l
LEFT JOIN LATERAL (
    -- two index descents, as in rules/loader.sql: the reading's ts, then the highest seq at it
    SELECT t.value, t.ts FROM telemetry t
    WHERE t.device_id = l.device_id AND t.metric = l.metric
      AND t.ts = (SELECT max(x.ts) FROM telemetry x
                  WHERE x.device_id = l.device_id AND x.metric = l.metric
                    AND x.ts < date_trunc('second', l.ts) + interval '1 second')
    ORDER BY t.seq DESC LIMIT 1
) before ON true
LEFT JOIN LATERAL (
    -- nothing at or before the event: every reading is after it, take the first
    SELECT t.value, t.ts FROM telemetry t
    WHERE before.value IS NULL AND t.device_id = l.device_id AND t.metric = l.metric
      AND t.ts = (SELECT min(x.ts) FROM telemetry x WHERE x.device_id = l.device_id AND x.metric = l.metric)
    ORDER BY t.seq LIMIT 1
) after ON true
WHERE l.ts IS NOT NULL
ORDER BY l.device_id, l.event_type, l.metric
ON CONFLICT (device_id, event_type, metric) DO UPDATE SET
    event_ts   = excluded.event_ts,
    value      = excluded.value,
    reading_ts = excluded.reading_ts

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
INSERT INTO quarantine (received_at, topic, device_id, reason, detail, payload, payload_bytes, dedup_key, payload_raw)
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
SELECT coalesce(sum(missing_seq), 0) FROM device_state

-- name: seq_resets_total --
-- Devices' seq counts started again: a reset device, or a forged seq far from the device's own.
SELECT coalesce(sum(seq_resets), 0) FROM device_state

-- name: prune_quarantine --
-- Retention: drop quarantined messages older than the cutoff, and the oldest beyond the newest max_rows; at most
-- `chunk` rows a call, so the ingest transaction that runs it stays short.
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine
    WHERE received_at < %(cutoff)s
       OR id <= (SELECT id FROM quarantine ORDER BY id DESC OFFSET %(max_rows)s LIMIT 1)
    ORDER BY id
    LIMIT %(chunk)s
)

-- name: derive_last_seen --
-- History stored in bulk rather than ingested: each registered device's last seen is its newest stored reading or
-- event of its own (events CareLoop records, seq < 0, are not the device speaking). A later one kept stays.
INSERT INTO device_state AS state (device_id, last_seen, updated_at)
SELECT heard.device_id, max(heard.ts), now()
FROM (
    SELECT device_id, max(ts) AS ts FROM telemetry GROUP BY device_id
    UNION ALL
    SELECT device_id, max(ts) FROM events WHERE seq >= 0 GROUP BY device_id
) AS heard
WHERE heard.device_id IN (SELECT id FROM devices)
GROUP BY heard.device_id
ORDER BY heard.device_id
ON CONFLICT (device_id) DO UPDATE SET
    last_seen  = GREATEST(state.last_seen, excluded.last_seen),
    updated_at = now()

-- name: stage_newest_of_history --
-- History stored in bulk rather than ingested: the newest stored reading of each metric per device, by (ts, seq),
-- staged for refresh_latest_from_staging.
INSERT INTO telemetry_staging (ts, device_id, metric, value, seq)
SELECT DISTINCT ON (device_id, metric) ts, device_id, metric, value, seq
FROM telemetry
WHERE device_id IN (SELECT id FROM devices)
ORDER BY device_id, metric, ts DESC, seq DESC

-- name: empty_staging --
-- Done with what was staged before the transaction ends.
DELETE FROM telemetry_staging

-- name: event_types_by_device --
-- Each (device, event type) with a stored event: where event_counters may have rows.
SELECT DISTINCT device_id, type FROM events ORDER BY device_id, type
