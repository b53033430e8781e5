-- Per device, event type and counter metric of its model: the counter's value at the device's last event of
-- that type. It is what a `usage` rule measures from ("run_hours since maintenance_done").
--
-- The value is the last reading at or before the event's second, else the first reading after it (reading_ts
-- says which reading; both NULL while the device has no reading of the metric). The ingester keeps it: a new
-- event of the type moves it, and so does a late reading that lands at or before the event (or before the
-- reading it was taken from). The engine reads it instead of probing telemetry for every device each run, and
-- falls back to probing where a row is missing or names another event (events stored before this table).
CREATE TABLE event_counters (
    device_id  text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    event_type text NOT NULL,
    metric     text NOT NULL,
    event_ts   timestamptz NOT NULL,
    value      double precision,
    reading_ts timestamptz,
    PRIMARY KEY (device_id, event_type, metric)
);
