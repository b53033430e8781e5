-- name: insert_device --
-- Register a device; answers nothing when the id is taken.
INSERT INTO devices (id, model, kind, owner_id, purchased_on, region)
VALUES (%(id)s, %(model)s, %(kind)s, %(owner_id)s, %(purchased_on)s, %(region)s)
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: device_models --
-- The model code of each of the given devices that exists.
SELECT id, model FROM devices WHERE id = ANY(%(device_ids)s)

-- name: devices_revision --
-- Moves in the transaction that registers, changes or deletes a device (fact_revisions, migration 008).
SELECT revision FROM fact_revisions WHERE name = 'devices'

-- name: list_devices --
-- Devices with their state, filtered; `total` counts all matches.
SELECT d.id, d.model, d.kind, d.owner_id AS owner, d.purchased_on, d.region, d.created_at,
       s.online, s.last_seen, s.last_seq,
       coalesce(s.missing_seq, 0) AS missing_seq, coalesce(s.seq_resets, 0) AS seq_resets,
       (SELECT coalesce(jsonb_object_agg(l.metric, l.value), '{}'::jsonb)
        FROM device_latest l WHERE l.device_id = d.id) AS latest,
       count(*) OVER () AS total
FROM devices d
LEFT JOIN device_state s ON s.device_id = d.id
WHERE (%(device_id)s::text IS NULL OR d.id = %(device_id)s)
  AND (%(kind)s::text IS NULL OR d.kind = %(kind)s)
  AND (%(model)s::text IS NULL OR d.model = %(model)s)
  AND (%(region)s::text IS NULL OR d.region = %(region)s)
  AND (%(owner)s::bigint IS NULL OR d.owner_id = %(owner)s)
  AND (%(online)s::boolean IS NULL OR coalesce(s.online, false) = %(online)s)
  AND (%(q)s::text IS NULL OR d.id ILIKE '%%' || %(q)s || '%%')
ORDER BY d.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: telemetry_raw --
-- A device's readings in a time range, newest first.
SELECT ts, metric, value FROM telemetry
WHERE device_id = %(device_id)s AND ts >= %(since)s AND ts < %(until)s
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
ORDER BY ts DESC, metric
LIMIT %(limit)s

-- name: telemetry_bucketed --
-- A device's readings averaged per time bucket and metric (date_bin runs on plain PostgreSQL and TimescaleDB alike).
SELECT date_bin(%(bucket)s::interval, ts, TIMESTAMPTZ '2000-01-01') AS ts, metric, avg(value) AS value
FROM telemetry
WHERE device_id = %(device_id)s AND ts >= %(since)s AND ts < %(until)s
  AND (%(metric)s::text IS NULL OR metric = %(metric)s)
GROUP BY 1, 2
ORDER BY 1 DESC, 2
LIMIT %(limit)s

-- name: fleet_summary --
-- Counts over the whole fleet for the health view.
SELECT count(*) AS devices,
       count(*) FILTER (WHERE s.online) AS online,
       count(*) FILTER (WHERE s.online IS FALSE) AS offline,
       count(*) FILTER (WHERE s.device_id IS NULL OR s.last_seen IS NULL) AS never_seen,
       coalesce(sum(s.missing_seq), 0) AS missing_seq, coalesce(sum(s.seq_resets), 0) AS seq_resets
FROM devices d LEFT JOIN device_state s ON s.device_id = d.id

-- name: fleet_by_kind --
-- Devices and online devices per kind.
SELECT d.kind, count(*) AS devices, count(*) FILTER (WHERE s.online) AS online
FROM devices d LEFT JOIN device_state s ON s.device_id = d.id
GROUP BY d.kind ORDER BY d.kind

-- name: readings_since --
-- How many readings arrived since a time.
SELECT count(*) FROM telemetry WHERE received_at >= %(since)s

-- name: store_device_credential --
-- Keep a device's new broker password (hashed); a previous one is replaced and counted as a rotation.
INSERT INTO device_credentials (device_id, salt, password_hash, iterations, issued_by)
VALUES (%(device_id)s, %(salt)s, %(password_hash)s, %(iterations)s, %(issued_by)s)
ON CONFLICT (device_id) DO UPDATE
SET salt = EXCLUDED.salt, password_hash = EXCLUDED.password_hash, iterations = EXCLUDED.iterations,
    issued_at = now(), issued_by = EXCLUDED.issued_by, rotations = device_credentials.rotations + 1
RETURNING device_id, issued_at, issued_by, rotations

-- name: device_credential --
-- When a device's broker password was issued, by whom, and how often it was replaced (never the password).
SELECT device_id, issued_at, issued_by, rotations FROM device_credentials WHERE device_id = %(device_id)s

-- name: stored_device_passwords --
-- Every device's hashed broker password, to rebuild the broker's accounts from the registry.
SELECT device_id, salt, password_hash, iterations FROM device_credentials ORDER BY device_id

-- name: device_events --
-- A device's events in [since, until), newest first, optionally of some types.
SELECT ts, seq, type, code, detail FROM events
WHERE device_id = %(device_id)s AND ts >= %(since)s AND ts < %(until)s
  AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
ORDER BY ts DESC, seq DESC
LIMIT %(limit)s
