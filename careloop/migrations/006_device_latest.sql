-- The newest reading of each metric per device, typed, one row each (it was a jsonb map in device_state).
--
-- The rule engine reads the latest value of a few metrics for the whole fleet every minute; pulling them out
-- of a jsonb document per device cost more than the rest of that read. The ingester keeps this table; a late
-- reading replaces a row only when it is newer by (ts, seq).
CREATE TABLE device_latest (
    device_id text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric    text NOT NULL,
    value     double precision NOT NULL,
    ts        timestamptz NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (device_id, metric)
);

INSERT INTO device_latest (device_id, metric, value, ts, seq)
SELECT t.device_id, t.metric, t.value, t.ts, t.seq
FROM device_state s
CROSS JOIN LATERAL jsonb_object_keys(s.latest) AS k(metric)
CROSS JOIN LATERAL (
    SELECT x.device_id, x.metric, x.value, x.ts, x.seq FROM telemetry x
    WHERE x.device_id = s.device_id AND x.metric = k.metric
    ORDER BY x.ts DESC, x.seq DESC LIMIT 1
) t;

ALTER TABLE device_state DROP COLUMN latest;
