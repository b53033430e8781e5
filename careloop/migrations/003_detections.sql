-- What the rule engine found: detections with their explanation and the actions to carry out,
-- the baselines it learned per model, and when each of its jobs last ran.

CREATE TABLE detections (
    id                  bigserial PRIMARY KEY,
    rule_id             text NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    rule_version        integer NOT NULL,
    device_id           text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    severity            text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'cleared')),
    opened_at           timestamptz NOT NULL,
    cleared_at          timestamptz,
    acknowledged_at     timestamptz,
    acknowledged_by     text,
    -- "{rule}:{device}:{opened_at}": the key of the detection and of every side effect it causes
    dedup_key           text NOT NULL UNIQUE,
    explanation         jsonb NOT NULL,
    clear_explanation   jsonb,
    -- the rule's `then`, each with its own key, kept here until the services that carry them out take them
    actions             jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'cleared') = (cleared_at IS NOT NULL))
);
-- At most one detection per rule and device is not cleared: a second engine, a restart or a
-- replay that tries to open another one conflicts here and opens nothing.
CREATE UNIQUE INDEX detections_one_open_idx ON detections (rule_id, device_id) WHERE cleared_at IS NULL;
CREATE INDEX detections_device_idx ON detections (device_id, opened_at DESC);
CREATE INDEX detections_status_idx ON detections (status, opened_at DESC);
CREATE INDEX detections_cleared_idx ON detections (rule_id, device_id, cleared_at DESC) WHERE cleared_at IS NOT NULL;

-- The learned baseline of a metric for a model: robust centre and spread over the fleet.
CREATE TABLE model_baselines (
    model      text NOT NULL,
    metric     text NOT NULL,
    centre     double precision,
    spread     double precision,
    samples    integer NOT NULL,
    learned_at timestamptz NOT NULL,
    PRIMARY KEY (model, metric)
);

-- The engine's jobs: when each last ran and what it did.
CREATE TABLE engine_jobs (
    job          text PRIMARY KEY,
    last_run_at  timestamptz NOT NULL,
    duration_ms  double precision NOT NULL,
    summary      jsonb NOT NULL DEFAULT '{}'::jsonb
);
