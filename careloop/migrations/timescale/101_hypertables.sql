-- TimescaleDB 2.x only: hypertables, compression, retention and the hourly continuous aggregate.
-- Skipped (with a log line) where the extension is not available.

CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('telemetry', 'ts', chunk_time_interval => INTERVAL '1 day', migrate_data => true);
SELECT create_hypertable('events', 'ts', chunk_time_interval => INTERVAL '7 days', migrate_data => true);

ALTER TABLE telemetry SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('telemetry', INTERVAL '7 days');
SELECT add_retention_policy('telemetry', INTERVAL '400 days');
SELECT add_retention_policy('events', INTERVAL '5 years');

DROP VIEW telemetry_hourly;
CREATE MATERIALIZED VIEW telemetry_hourly
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket,
       device_id, metric,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value, count(*) AS readings
FROM telemetry
GROUP BY 1, 2, 3
WITH NO DATA;
SELECT add_continuous_aggregate_policy('telemetry_hourly',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');
