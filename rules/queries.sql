-- name: insert_rule --
-- Create a rule at version 1; answers nothing when the id is taken.
INSERT INTO rules (id, version, enabled, builtin, document)
VALUES (%(id)s, 1, %(enabled)s, %(builtin)s, %(document)s)
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: update_rule --
-- Replace a rule's document, raising its version; answers the new version.
UPDATE rules SET document = %(document)s, enabled = %(enabled)s, version = version + 1, updated_at = now()
WHERE id = %(id)s
RETURNING version

-- name: record_version --
-- Keep a version of a rule's document.
INSERT INTO rule_versions (rule_id, version, enabled, document)
SELECT id, version, enabled, document FROM rules WHERE id = %(id)s
ON CONFLICT DO NOTHING

-- name: get_rule --
-- One rule.
SELECT id, version, enabled, builtin, document, created_at, updated_at, changed_by FROM rules WHERE id = %(id)s

-- name: list_rules --
-- Rules, optionally only the enabled ones.
SELECT id, version, enabled, builtin, document, created_at, updated_at, changed_by, count(*) OVER () AS total
FROM rules WHERE (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s)
ORDER BY id LIMIT %(limit)s OFFSET %(offset)s

-- name: rule_versions --
-- Every kept version of a rule, newest first.
SELECT version, enabled, document, created_at, changed_by FROM rule_versions WHERE rule_id = %(id)s
ORDER BY version DESC

-- name: enabled_rules --
-- The rules the engine evaluates.
SELECT id, version, enabled, builtin, document, created_at, updated_at, changed_by FROM rules WHERE enabled
ORDER BY id

-- name: lock_evaluation --
-- One evaluation at a time across engines: reading detection state and writing transitions is one step.
SELECT pg_advisory_xact_lock(hashtext('careloop.rules.evaluation'))

-- name: detections_revision --
-- Moves with every statement that opens or clears detections (migration 010).
SELECT revision FROM fact_revisions WHERE name = 'detections'

-- name: open_detections --
-- Open (or acknowledged) detections of these rules, optionally only for some devices, with when each opened.
SELECT rule_id, device_id, date_part('epoch', opened_at)::bigint AS opened_at FROM detections
WHERE cleared_at IS NULL AND rule_id = ANY(%(rule_ids)s)
  AND (%(device_ids)s::text[] IS NULL OR device_id = ANY(%(device_ids)s::text[]))

-- name: recent_clears --
-- The last clear per rule and device since `since`: what a cooldown compares with.
SELECT rule_id, device_id, date_part('epoch', max(cleared_at))::bigint AS cleared_at FROM detections
WHERE cleared_at IS NOT NULL AND cleared_at >= %(since)s AND rule_id = ANY(%(rule_ids)s)
  AND (%(device_ids)s::text[] IS NULL OR device_id = ANY(%(device_ids)s::text[]))
GROUP BY rule_id, device_id

-- name: open_detection --
-- Open a detection; nothing when one is already open for the rule and device, or the key exists.
INSERT INTO detections
    (rule_id, rule_version, device_id, severity, opened_at, dedup_key, explanation, actions)
VALUES %s
ON CONFLICT DO NOTHING
RETURNING id, rule_id, device_id

-- name: clear_detection --
-- Clear the open detection of a rule and device that opened at opened_at (the one the evaluation saw).
UPDATE detections AS d SET status = 'cleared', cleared_at = v.cleared_at::timestamptz,
       clear_explanation = v.explanation::jsonb
FROM (VALUES %s) AS v (rule_id, device_id, opened_at, cleared_at, explanation)
WHERE d.rule_id = v.rule_id AND d.device_id = v.device_id AND d.opened_at = v.opened_at::timestamptz
  AND d.cleared_at IS NULL
RETURNING d.id, d.rule_id, d.device_id

-- name: list_detections --
-- Detections, newest first (or, `urgent`, critical before warning before info, then newest), filtered by device,
-- status, rule and severity.
SELECT d.id, d.rule_id, d.rule_version, d.device_id, dev.model, dev.owner_id, d.severity, d.status,
       d.opened_at, d.cleared_at, d.acknowledged_at, d.acknowledged_by, d.dedup_key,
       d.explanation, d.clear_explanation, d.actions, count(*) OVER () AS total
FROM detections AS d JOIN devices AS dev ON dev.id = d.device_id
WHERE (%(device_id)s::text IS NULL OR d.device_id = %(device_id)s)
  AND (%(status)s::text IS NULL OR d.status = %(status)s)
  AND (%(rule_id)s::text IS NULL OR d.rule_id = %(rule_id)s)
  AND (%(severity)s::text IS NULL OR d.severity = %(severity)s)
ORDER BY CASE WHEN %(urgent)s THEN array_position(ARRAY['critical', 'warning', 'info'], d.severity) END,
         d.opened_at DESC, d.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: get_detection --
-- One detection, as list_detections answers it.
SELECT d.id, d.rule_id, d.rule_version, d.device_id, dev.model, dev.owner_id, d.severity, d.status,
       d.opened_at, d.cleared_at, d.acknowledged_at, d.acknowledged_by, d.dedup_key,
       d.explanation, d.clear_explanation, d.actions
FROM detections AS d JOIN devices AS dev ON dev.id = d.device_id
WHERE d.id = %(id)s

-- name: acknowledge_detection --
-- Acknowledge an open detection; an acknowledged or cleared one is left as it is.
UPDATE detections SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = %(by)s
WHERE id = %(id)s AND status = 'open'
RETURNING id

-- name: record_job --
-- When an engine job last ran, and what it did.
INSERT INTO engine_jobs (job, last_run_at, duration_ms, summary)
VALUES (%(job)s, %(at)s, %(duration_ms)s, %(summary)s)
ON CONFLICT (job) DO UPDATE SET last_run_at = excluded.last_run_at, duration_ms = excluded.duration_ms,
    summary = excluded.summary

-- name: engine_jobs --
-- When each engine job last ran, and what it did.
SELECT job, last_run_at, duration_ms, summary FROM engine_jobs ORDER BY job

-- name: detections_with_pending_actions --
-- Detections with actions of the given kinds still to carry out, oldest first, locked for the one who carries
-- them out (another engine skips them). Each with its rule's description.
SELECT d.id, d.rule_id, d.rule_version, d.device_id, dev.model, dev.owner_id, d.severity, d.status,
       d.opened_at, d.cleared_at, d.acknowledged_at, d.acknowledged_by, d.dedup_key,
       d.explanation, d.clear_explanation, d.actions, r.document->>'description' AS description
FROM detections d JOIN rules r ON r.id = d.rule_id JOIN devices dev ON dev.id = d.device_id
WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(d.actions) a
              WHERE a->>'status' = 'pending' AND a->>'action' = ANY(%(kinds)s))
ORDER BY d.opened_at, d.id
LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED

-- name: set_action_status --
-- Mark one action of a detection carried out, with what it made (an order's id, say).
UPDATE detections SET actions = (
    SELECT jsonb_agg(CASE WHEN a->>'key' = %(key)s
                          THEN a || jsonb_build_object('status', %(status)s::text, 'result', %(result)s::jsonb)
                          ELSE a END ORDER BY position)
    FROM jsonb_array_elements(actions) WITH ORDINALITY AS x (a, position))
WHERE id = %(id)s

-- name: detections_cleared --
-- When each of these detections cleared (NULL while open).
SELECT id, cleared_at FROM detections WHERE id = ANY(%(ids)s::bigint[])

-- ---------------------------------------------------------------- what the engine learns

-- name: forget_trend_fits --
-- Drop the stored fits of these (metric, seconds) windows, of every device or only these, before storing new ones.
DELETE FROM trend_fits f
USING unnest(%(metrics)s::text[], %(seconds)s::int[]) AS w(metric, seconds)
WHERE f.metric = w.metric AND f.seconds = w.seconds
  AND (%(device_ids)s::text[] IS NULL OR f.device_id = ANY(%(device_ids)s::text[]))

-- name: store_trend_fits --
-- Store fitted trend lines (after forget_trend_fits dropped the old ones of their windows).
INSERT INTO trend_fits (device_id, metric, seconds, slope, fitted, points, fitted_at) VALUES %s

-- name: upsert_baselines --
-- Store learned baselines, replacing what was learned before.
INSERT INTO model_baselines AS stored (model, metric, centre, spread, samples, learned_at)
VALUES %s
ON CONFLICT (model, metric) DO UPDATE SET
    centre     = excluded.centre,
    spread     = excluded.spread,
    samples    = excluded.samples,
    learned_at = excluded.learned_at

-- name: offer_template_codes --
-- The offer templates a rule's `offer` action may name (the offers domain owns them; read here to check rules).
SELECT code FROM offer_templates

-- ---------------------------------------------------------------- the fleet's coming demand (rules.forecast)
-- Each answers, per device of the models in scope, the instant (epoch seconds) a leaf condition starts to hold,
-- counted as the engine counts it (rules.conditions); rules.forecast combines them over `all` and `any`.

-- name: forecast_age --
-- The purchase date (midnight UTC) plus the age each model's devices must reach.
SELECT d.id AS device_id, d.region,
       date_part('epoch', d.purchased_on::timestamp AT TIME ZONE 'UTC') + m.seconds AS due_s
FROM devices d JOIN unnest(%(models)s::text[], %(seconds)s::float8[]) AS m(model, seconds) ON m.model = d.model
WHERE d.purchased_on IS NOT NULL

-- name: forecast_elapsed --
-- The last `since` event (or, with none or `since` NULL, the purchase date) plus the span.
SELECT d.id AS device_id, d.region,
       date_part('epoch', coalesce(e.last_at, d.purchased_on::timestamp AT TIME ZONE 'UTC')) + %(seconds)s AS due_s
FROM devices d
LEFT JOIN LATERAL (SELECT max(ts) AS last_at FROM events
                   WHERE device_id = d.id AND type = %(since)s::text AND ts < %(now)s) e ON true
WHERE d.model = ANY(%(models)s::text[])
  AND coalesce(e.last_at, d.purchased_on::timestamp AT TIME ZONE 'UTC') IS NOT NULL

-- name: forecast_usage --
-- The counter's latest reading plus what it still has to grow since the last `since` event (from zero when there
-- was none, or `since` is NULL), at the rate it grew from its first reading in `rate_window` before the latest.
SELECT device_id, region, latest_s + (%(at_least)s - (latest - at_since)) / per_s AS due_s
FROM (
    SELECT d.id AS device_id, d.region, date_part('epoch', l.ts) AS latest_s, l.value AS latest,
           CASE WHEN e.last_at IS NULL THEN 0 WHEN c.event_ts = e.last_at THEN c.value END AS at_since,
           (l.value - r.value) / nullif(date_part('epoch', l.ts - r.ts), 0) AS per_s
    FROM devices d
    -- the counter's newest reading, read from the device's arrays in place (a fleet's worth of devices: the
    -- device_latest view would unnest every metric of each)
    JOIN LATERAL (SELECT r.readings[p.at] AS value, r.ts[p.at] AS ts
                  FROM latest_readings r
                  CROSS JOIN LATERAL (SELECT array_position(r.metrics, %(metric)s::text) AS at) p
                  WHERE r.device_id = d.id AND p.at IS NOT NULL) l ON true
    LEFT JOIN LATERAL (SELECT max(ts) AS last_at FROM events
                       WHERE device_id = d.id AND type = %(since)s::text AND ts < %(now)s) e ON true
    LEFT JOIN event_counters c ON c.device_id = d.id AND c.event_type = %(since)s::text AND c.metric = %(metric)s
    JOIN LATERAL (SELECT t.value, t.ts FROM telemetry t
                  WHERE t.device_id = d.id AND t.metric = %(metric)s
                    AND t.ts >= l.ts - %(rate_window)s AND t.ts < l.ts
                  ORDER BY t.ts LIMIT 1) r ON true
    WHERE d.model = ANY(%(models)s::text[])
) usage
WHERE per_s > 0 AND at_since IS NOT NULL

-- name: forecast_trend --
-- Where the stored fit (over `over` seconds, with enough points) crosses `reaches` moving towards it, less `within`.
SELECT d.id AS device_id, d.region,
       date_part('epoch', f.fitted_at) + (%(sign)s * (%(reaches)s - f.fitted)) / (%(sign)s * f.slope)
           - %(within)s AS due_s
FROM trend_fits f JOIN devices d ON d.id = f.device_id
WHERE f.metric = %(metric)s AND f.seconds = %(over)s AND f.points >= %(min_points)s
  AND d.model = ANY(%(models)s::text[])
  AND %(sign)s * f.slope > 0 AND %(sign)s * (%(reaches)s - f.fitted) > 0

-- name: open_windows --
-- The devices with an uncleared detection of each of these rules: their window is open already.
SELECT DISTINCT rule_id, device_id FROM detections WHERE cleared_at IS NULL AND rule_id = ANY(%(rule_ids)s::text[])
