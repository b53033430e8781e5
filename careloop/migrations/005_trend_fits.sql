-- Trend fits learned on the engine's schedule (like model baselines): fitting a week of raw readings for
-- every device is the costliest fact there is, and a projection days ahead does not need it every minute.
-- The window job reads the stored line and evaluates it at its own `now`.
CREATE TABLE trend_fits (
    device_id  text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric     text NOT NULL,
    seconds    integer NOT NULL,        -- the fit's window
    slope      double precision,        -- per second; NULL with fewer than 2 distinct instants
    fitted     double precision,        -- the line's value at fitted_at
    points     integer NOT NULL,
    fitted_at  timestamptz NOT NULL,
    PRIMARY KEY (metric, seconds, device_id)
);
