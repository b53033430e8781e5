-- The newest reading of each metric, one row per device (it was a row per device and metric).
--
-- Every message a device sends updates its newest readings. In a fleet of a hundred thousand devices each batch
-- is a thousand different devices, and five row updates per message, each its own index probe and tuple, cost the
-- ingester three times what storing the readings did. One row per device holds them in parallel arrays sorted by
-- metric: a message with the same metrics, all newer, replaces the arrays whole; anything else (a late reading, a
-- message with other metrics) is merged metric by metric (newest_of_each_metric).
--
-- Readers keep reading `device_latest`, now a view with the same columns as the table it replaces.
CREATE TABLE latest_readings (
    device_id text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    newest_ts timestamptz NOT NULL,   -- the greatest of ts: the test for a message that is newer throughout
    metrics   text[] NOT NULL,        -- sorted, no metric twice
    readings  double precision[] NOT NULL,
    ts        timestamptz[] NOT NULL,
    seqs      bigint[] NOT NULL,
    CHECK (cardinality(metrics) = cardinality(readings)
           AND cardinality(metrics) = cardinality(ts)
           AND cardinality(metrics) = cardinality(seqs))
);

-- Of two sets of newest readings, the newer reading of each metric by (ts, seq), sorted by metric.
CREATE FUNCTION newest_of_each_metric(
    metrics text[], readings double precision[], ts timestamptz[], seqs bigint[],
    new_metrics text[], new_readings double precision[], new_ts timestamptz[], new_seqs bigint[]
) RETURNS TABLE (metric text, value double precision, ts timestamptz, seq bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT DISTINCT ON (r.metric) r.metric, r.value, r.ts, r.seq
    FROM (SELECT * FROM unnest(metrics, readings, ts, seqs)
          UNION ALL
          SELECT * FROM unnest(new_metrics, new_readings, new_ts, new_seqs)) AS r (metric, value, ts, seq)
    ORDER BY r.metric, r.ts DESC, r.seq DESC
$$;

INSERT INTO latest_readings (device_id, newest_ts, metrics, readings, ts, seqs)
SELECT device_id, max(ts), array_agg(metric ORDER BY metric), array_agg(value ORDER BY metric),
       array_agg(ts ORDER BY metric), array_agg(seq ORDER BY metric)
FROM device_latest
GROUP BY device_id;

DROP TABLE device_latest;

CREATE VIEW device_latest AS
SELECT l.device_id, r.metric, r.value, r.ts, r.seq
FROM latest_readings l
CROSS JOIN LATERAL unnest(l.metrics, l.readings, l.ts, l.seqs) AS r (metric, value, ts, seq);
