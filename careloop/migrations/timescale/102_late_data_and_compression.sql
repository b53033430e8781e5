-- Corrects 101, which deployments have already applied. 101 stays as it was: a fresh install applies
-- 101 then 102 in the same `careloop migrate` and ends where an upgraded deployment does, by one path.
-- Written for TimescaleDB 2.14 and later (2.28 in production); every statement also holds on 2.8+.

-- 1. Late readings must reach the hourly aggregate. The ingester accepts readings up to 30 days old, but
--    the refresh policy looked back 3 days: older late readings were never materialized. The window now
--    covers the 30 days plus their hour bucket and a margin. A refresh re-materializes only the ranges
--    the invalidation log marks as changed, so a wider window costs nothing while no late data arrives.
SELECT remove_continuous_aggregate_policy('telemetry_hourly', if_exists => true);
SELECT add_continuous_aggregate_policy('telemetry_hourly',
    start_offset => INTERVAL '31 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');

-- 2. Real-time aggregation: the view adds the raw readings past the last refresh (the newest hour at
--    least, which end_offset never materializes), as the plain-PostgreSQL view in 001 does. Since
--    TimescaleDB 2.13 a continuous aggregate is materialized-only unless told otherwise.
ALTER MATERIALIZED VIEW telemetry_hourly SET (timescaledb.materialized_only = false);

-- 3. `seq` is part of the dedup key (device_id, seq, metric, ts). TimescaleDB warns about a unique-key
--    column that is neither segmentby nor orderby: a late insert into a compressed chunk checks the key
--    by decompressing the batches that may hold it, and a column without batch metadata cannot narrow
--    them. Ordering by seq after ts gives seq min/max metadata. Since 2.14 the settings may change while
--    compressed chunks exist (they apply to chunks compressed from then on; older chunks keep theirs,
--    which stays correct). Before 2.14 that raised feature_not_supported: a notice here instead, so the
--    migration cannot fail on such a database.
DO $$
BEGIN
    ALTER TABLE telemetry SET (
        timescaledb.compress,
        timescaledb.compress_segmentby = 'device_id, metric',
        timescaledb.compress_orderby = 'ts DESC, seq DESC'
    );
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'telemetry compression settings unchanged (%): this TimescaleDB cannot change them while '
                 'compressed chunks exist; upgrade to 2.14 or later and run this statement again', SQLERRM;
END
$$;

-- 4. events compressed too, as the README says. Same dedup reasoning: (device_id, seq, ts) is the key.
--    Compressed after 35 days, beyond the 30 days a late event may be: the ingester never writes into a
--    compressed events chunk (an event chunk spans 7 days; a chunk is compressed once all of it is older).
ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'ts DESC, seq DESC'
);
SELECT add_compression_policy('events', INTERVAL '35 days', if_not_exists => true);
