-- The rule engine's fact loader: each statement answers one requirement (or a group sharing a scan) for a
-- whole fleet at once. The meaning of each requirement is the docstring in rules/facts.py.
--
-- Common parameters:
--   device_ids  text[] of the devices in scope, or NULL for every registered device
--   until       now + 1 second: facts have one-second resolution, so "ts <= now" is "ts < until"
--               (a reading at 12:00:00.4 counts at now = 12:00:00), and a window (now - s, now] is
--               [until - s, until)
--   now_epoch   now as epoch seconds (trend fits run on seconds relative to now)
--   live        true in the engine (device_state, latest_readings and event_counters are kept by the ingester),
--               false for stored history
-- Instants come back as whole epoch seconds (bigint), NULL for none.
-- Readings of one metric at the same ts are ordered by seq: the later seq is the later reading. A value "at"
-- an instant is looked up as `ts = (SELECT max(ts) ...)` then the highest seq: two index descents whatever the
-- statistics say, where `ORDER BY ts DESC, seq DESC LIMIT 1` may be planned as a sort of the whole series.
-- In live mode, telemetry is probed only for devices with a latest reading of the metric: the ingester
-- records there every metric it stores, so the other devices have no reading of it.

-- name: jit_setting --
-- Whether JIT compilation is on for this session.
SELECT current_setting('jit')

-- name: set_jit_locally --
-- Turn JIT on or off until the end of the transaction: it compiles these index-probe loops for longer
-- (about 0.3 s a statement) than they run.
SELECT set_config('jit', %(value)s, true)

-- name: fact_revisions --
-- The revision of each slow-changing part of the facts (see migration 008): what a FactCache compares with.
SELECT name, revision FROM fact_revisions

-- name: devices --
-- The devices in scope with their owner's birthday, in byte order of id.
SELECT d.id,
       d.model,
       d.kind,
       (d.purchased_on - DATE '1970-01-01')::bigint * 86400 AS purchased_on,
       c.birthday - DATE '1970-01-01' AS owner_birthday_day
FROM devices d
LEFT JOIN customers c ON c.id = d.owner_id
WHERE %(device_ids)s::text[] IS NULL OR d.id = ANY(%(device_ids)s::text[])
ORDER BY d.id COLLATE "C"

-- name: device_status --
-- The retained status and last seen of the devices in scope, as the ingester keeps them.
SELECT s.device_id,
       s.online,
       date_part('epoch', date_trunc('second', s.status_changed_at))::bigint AS status_changed_at,
       date_part('epoch', date_trunc('second', s.last_seen))::bigint AS last_seen
FROM device_state s
WHERE %(device_ids)s::text[] IS NULL OR s.device_id = ANY(%(device_ids)s::text[])

-- name: last_seen_history --
-- Each device's last telemetry or event ts before `until`, from stored history (no device_state).
-- The telemetry index leads with (device_id, metric): a recursive skip scan finds each device's metrics,
-- then one index probe per (device, metric) finds its last reading.
WITH RECURSIVE scope AS (
    SELECT d.id FROM devices d
    WHERE %(device_ids)s::text[] IS NULL OR d.id = ANY(%(device_ids)s::text[])
), metric AS (
    SELECT s.id, (SELECT min(t.metric) FROM telemetry t WHERE t.device_id = s.id) AS name
    FROM scope s
    UNION ALL
    SELECT m.id, (SELECT min(t.metric) FROM telemetry t WHERE t.device_id = m.id AND t.metric > m.name)
    FROM metric m
    WHERE m.name IS NOT NULL
), reading AS (
    SELECT m.id, max(
        (SELECT max(t.ts) FROM telemetry t WHERE t.device_id = m.id AND t.metric = m.name AND t.ts < %(until)s)
    ) AS ts
    FROM metric m
    WHERE m.name IS NOT NULL
    GROUP BY m.id
), event AS (
    SELECT e.device_id AS id, max(e.ts) AS ts
    FROM events e
    WHERE e.ts < %(until)s AND (%(device_ids)s::text[] IS NULL OR e.device_id = ANY(%(device_ids)s::text[]))
    GROUP BY e.device_id
)
SELECT id, date_part('epoch', date_trunc('second', greatest(reading.ts, event.ts)))::bigint AS last_seen
FROM reading FULL JOIN event USING (id)

-- name: latest_live --
-- The newest value of each metric from latest_readings (the ingester keeps it): read from its arrays in place,
-- a row per device, rather than through the device_latest view's row per metric.
SELECT l.device_id, m.i, l.readings[p.at]
FROM latest_readings l
CROSS JOIN unnest(%(metrics)s::text[]) WITH ORDINALITY AS m(name, i)
CROSS JOIN LATERAL (SELECT array_position(l.metrics, m.name) AS at) p
WHERE p.at IS NOT NULL
  AND (%(device_ids)s::text[] IS NULL OR l.device_id = ANY(%(device_ids)s::text[]))

-- name: latest_history --
-- The last reading of each metric before `until`: one index probe per (device, metric).
SELECT d.id, m.i, r.value
FROM devices d
CROSS JOIN unnest(%(metrics)s::text[]) WITH ORDINALITY AS m(name, i)
CROSS JOIN LATERAL (
    SELECT t.value FROM telemetry t
    WHERE t.device_id = d.id AND t.metric = m.name
      AND t.ts = (SELECT max(x.ts) FROM telemetry x WHERE x.device_id = d.id AND x.metric = m.name AND x.ts < %(until)s)
    ORDER BY t.seq DESC LIMIT 1
) r
WHERE %(device_ids)s::text[] IS NULL OR d.id = ANY(%(device_ids)s::text[])

-- name: metric_windows --
-- Per (metric, seconds) window i: min, max and count of the readings inside [opens, until) with
-- opens = until - seconds, and the value carried in (the last reading before opens). Two index descents per
-- device and window: the carried reading's ts, then one range scan from it to `until`.
-- Devices with neither are left out.
SELECT d.id, w.i, inside.low, inside.high, inside.readings, inside.carried
FROM devices d
CROSS JOIN unnest(%(metrics)s::text[], %(seconds)s::int[]) WITH ORDINALITY AS w(metric, seconds, i)
CROSS JOIN LATERAL (SELECT %(until)s::timestamptz - make_interval(secs => w.seconds) AS opens) window_
CROSS JOIN LATERAL (
    SELECT max(x.ts) AS ts FROM telemetry x
    WHERE x.device_id = d.id AND x.metric = w.metric AND x.ts < window_.opens
) carried
CROSS JOIN LATERAL (
    SELECT min(t.value) FILTER (WHERE t.ts >= window_.opens) AS low,
           max(t.value) FILTER (WHERE t.ts >= window_.opens) AS high,
           count(*) FILTER (WHERE t.ts >= window_.opens) AS readings,
           (array_agg(t.value ORDER BY t.seq DESC) FILTER (WHERE t.ts < window_.opens))[1] AS carried
    FROM telemetry t
    WHERE t.device_id = d.id AND t.metric = w.metric
      AND t.ts >= coalesce(carried.ts, window_.opens) AND t.ts < %(until)s
) inside
WHERE (%(device_ids)s::text[] IS NULL OR d.id = ANY(%(device_ids)s::text[]))
  AND (NOT %(live)s OR EXISTS (SELECT FROM latest_readings l WHERE l.device_id = d.id AND w.metric = ANY(l.metrics)))
  AND (inside.readings > 0 OR inside.carried IS NOT NULL)

-- name: trends --
-- Per (metric, seconds) fit i: least squares over the readings in [until - seconds, until) against whole
-- seconds relative to now, so the intercept is the fitted value at now. Devices without readings are left out.
SELECT d.id, w.i, fit.slope, fit.intercept, fit.points
FROM devices d
CROSS JOIN unnest(%(metrics)s::text[], %(seconds)s::int[]) WITH ORDINALITY AS w(metric, seconds, i)
CROSS JOIN LATERAL (
    SELECT regr_slope(t.value, date_part('epoch', date_trunc('second', t.ts)) - %(now_epoch)s) AS slope,
           regr_intercept(t.value, date_part('epoch', date_trunc('second', t.ts)) - %(now_epoch)s) AS intercept,
           count(*) AS points
    FROM telemetry t
    WHERE t.device_id = d.id AND t.metric = w.metric
      AND t.ts >= %(until)s - make_interval(secs => w.seconds) AND t.ts < %(until)s
) fit
WHERE (%(device_ids)s::text[] IS NULL OR d.id = ANY(%(device_ids)s::text[]))
  AND (NOT %(live)s OR EXISTS (SELECT FROM latest_readings l WHERE l.device_id = d.id AND w.metric = ANY(l.metrics)))
  AND fit.points > 0

-- name: last_events --
-- The last event of each type before `until`, per device.
SELECT e.device_id, t.i, date_part('epoch', date_trunc('second', max(e.ts)))::bigint AS at
FROM events e
JOIN unnest(%(types)s::text[]) WITH ORDINALITY AS t(name, i) ON t.name = e.type
WHERE e.type = ANY(%(types)s::text[]) AND e.ts < %(until)s
  AND (%(device_ids)s::text[] IS NULL OR e.device_id = ANY(%(device_ids)s::text[]))
GROUP BY e.device_id, t.i

-- name: counters_at_events --
-- Per (metric, event_type) pair i: the metric's last reading at or before the second of the device's
-- last such event, else its first reading (all before `until`). In live mode the value the ingester recorded
-- in event_counters for that very event is taken where there is one; telemetry is probed for the rest.
WITH last_event AS (
    SELECT e.device_id, p.i, p.metric, p.type, max(e.ts) AS ts
    FROM events e
    JOIN unnest(%(metrics)s::text[], %(types)s::text[]) WITH ORDINALITY AS p(metric, type, i) ON p.type = e.type
    WHERE e.type = ANY(%(types)s::text[]) AND e.ts < %(until)s
      AND (%(device_ids)s::text[] IS NULL OR e.device_id = ANY(%(device_ids)s::text[]))
    GROUP BY e.device_id, p.i, p.metric, p.type
), last_known AS (
    SELECT l.device_id, l.i, l.metric, date_trunc('second', l.ts) AS at,
           r.device_id IS NOT NULL AS recorded, r.value AS recorded_value
    FROM last_event l
    LEFT JOIN event_counters r
      ON %(live)s AND r.device_id = l.device_id AND r.event_type = l.type AND r.metric = l.metric
     AND r.event_ts = l.ts AND (r.reading_ts IS NULL OR r.reading_ts < %(until)s)
)
SELECT l.device_id, l.i, CASE WHEN l.recorded THEN l.recorded_value ELSE coalesce(before.value, after.value) END
FROM last_known l
LEFT JOIN LATERAL (
    SELECT t.value FROM telemetry t
    WHERE NOT l.recorded AND t.device_id = l.device_id AND t.metric = l.metric
      AND t.ts = (SELECT max(x.ts) FROM telemetry x
                  WHERE x.device_id = l.device_id AND x.metric = l.metric AND x.ts < l.at + interval '1 second')
    ORDER BY t.seq DESC LIMIT 1
) before ON true
LEFT JOIN LATERAL (
    -- nothing at or before the event: every reading is after it, take the first
    SELECT t.value FROM telemetry t
    WHERE NOT l.recorded AND before.value IS NULL AND t.device_id = l.device_id AND t.metric = l.metric
      AND t.ts = (SELECT min(x.ts) FROM telemetry x
                  WHERE x.device_id = l.device_id AND x.metric = l.metric AND x.ts < %(until)s)
    ORDER BY t.seq LIMIT 1
) after ON true

-- name: event_count --
-- How many events of a type (and, when codes is not NULL, of those codes) fall in [opens, until), per device.
SELECT e.device_id, count(*) AS events
FROM events e
WHERE e.type = %(type)s AND e.ts >= %(opens)s AND e.ts < %(until)s
  AND (%(codes)s::text[] IS NULL OR e.code = ANY(%(codes)s::text[]))
  AND (%(device_ids)s::text[] IS NULL OR e.device_id = ANY(%(device_ids)s::text[]))
GROUP BY e.device_id

-- name: open_faults --
-- Which of the codes are open per device: the last `fault` with the code is in a later second than the
-- last `fault_cleared` with that code or without one (a clear-all).
WITH raised AS (
    SELECT e.device_id, e.code, date_trunc('second', max(e.ts)) AS at
    FROM events e
    WHERE e.type = 'fault' AND e.code = ANY(%(codes)s::text[]) AND e.ts < %(until)s
      AND (%(device_ids)s::text[] IS NULL OR e.device_id = ANY(%(device_ids)s::text[]))
    GROUP BY e.device_id, e.code
), cleared AS (
    SELECT e.device_id, e.code, date_trunc('second', max(e.ts)) AS at
    FROM events e
    WHERE e.type = 'fault_cleared' AND (e.code = ANY(%(codes)s::text[]) OR e.code IS NULL) AND e.ts < %(until)s
      AND (%(device_ids)s::text[] IS NULL OR e.device_id = ANY(%(device_ids)s::text[]))
    GROUP BY e.device_id, e.code
)
SELECT r.device_id, c.i
FROM raised r
JOIN unnest(%(codes)s::text[]) WITH ORDINALITY AS c(code, i) ON c.code = r.code
LEFT JOIN cleared by_code ON by_code.device_id = r.device_id AND by_code.code = r.code
LEFT JOIN cleared clear_all ON clear_all.device_id = r.device_id AND clear_all.code IS NULL
WHERE r.at > coalesce(greatest(by_code.at, clear_all.at), '-infinity')

-- name: baselines_learned --
-- The stored baselines of these metrics.
SELECT model, metric, centre, spread, samples
FROM model_baselines
WHERE metric = ANY(%(metrics)s::text[])

-- name: baseline_stats --
-- Per (model, metric) pair: over the model's devices, the median of each device's last reading before
-- `until`, mad_to_sigma * the median absolute deviation from it, and how many devices had a reading.
-- Medians as numpy takes them: the middle value, or the mean of the two middle values.
WITH pair AS (
    SELECT DISTINCT p.model, p.metric FROM unnest(%(models)s::text[], %(metrics)s::text[]) AS p(model, metric)
), latest AS (
    SELECT p.model, p.metric, r.value
    FROM pair p
    JOIN devices d ON d.model = p.model
    CROSS JOIN LATERAL (
        SELECT t.value FROM telemetry t
        WHERE t.device_id = d.id AND t.metric = p.metric
          AND t.ts = (SELECT max(x.ts) FROM telemetry x
                      WHERE x.device_id = d.id AND x.metric = p.metric AND x.ts < %(until)s)
        ORDER BY t.seq DESC LIMIT 1
    ) r
), centre AS (
    SELECT model, metric, count(*) AS samples, array_agg(value ORDER BY value) AS sorted
    FROM latest
    GROUP BY model, metric
), centred AS (
    SELECT model, metric, samples, (sorted[(samples + 1) / 2] + sorted[(samples + 2) / 2]) / 2 AS centre
    FROM centre
), deviation AS (
    SELECT c.model, c.metric, array_agg(abs(l.value - c.centre) ORDER BY abs(l.value - c.centre)) AS sorted
    FROM centred c
    JOIN latest l ON l.model = c.model AND l.metric = c.metric
    GROUP BY c.model, c.metric
)
SELECT p.model, p.metric, c.centre,
       %(mad_to_sigma)s::float8 * ((dv.sorted[(c.samples + 1) / 2] + dv.sorted[(c.samples + 2) / 2]) / 2) AS spread,
       coalesce(c.samples, 0) AS samples
FROM pair p
LEFT JOIN centred c ON c.model = p.model AND c.metric = p.metric
LEFT JOIN deviation dv ON dv.model = p.model AND dv.metric = p.metric
ORDER BY p.model, p.metric

-- name: device_models --
-- The models that have devices.
SELECT DISTINCT model FROM devices ORDER BY model

-- name: trend_fits_learned --
-- Per (metric, seconds) fit i: the stored line (its slope, its value when fitted, and when: epoch seconds).
SELECT f.device_id, w.i, f.slope, f.fitted, f.points, date_part('epoch', f.fitted_at) AS fitted_at
FROM trend_fits f
JOIN unnest(%(metrics)s::text[], %(seconds)s::int[]) WITH ORDINALITY AS w(metric, seconds, i)
  ON f.metric = w.metric AND f.seconds = w.seconds
WHERE %(device_ids)s::text[] IS NULL OR f.device_id = ANY(%(device_ids)s::text[])
