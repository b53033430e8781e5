-- Customers, devices, telemetry, events, quarantine and API tokens.
-- Runs on plain PostgreSQL 14+; TimescaleDB steps live apart in timescale/.

CREATE TABLE customers (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL,
    phone             text,
    email             text,
    birthday          date,
    timezone          text NOT NULL DEFAULT 'UTC',
    region            text,
    preferred_channel text CHECK (preferred_channel IN ('phone', 'sms', 'email')),
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_consents (
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('service', 'marketing')),
    channel     text NOT NULL CHECK (channel IN ('phone', 'sms', 'email')),
    granted     boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, purpose, channel)
);

CREATE TABLE devices (
    id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    model        text NOT NULL,
    kind         text NOT NULL,
    owner_id     bigint REFERENCES customers (id),
    purchased_on date,
    region       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_owner_idx ON devices (owner_id);
CREATE INDEX devices_kind_idx ON devices (kind, model);

-- What the ingester knows of each device now. Seq bookkeeping makes lost messages visible:
-- missing = (last_seq - first_seq + 1) - seq_count.
CREATE TABLE device_state (
    device_id         text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    online            boolean,
    status_changed_at timestamptz,
    last_seen         timestamptz,
    last_received_at  timestamptz,
    first_seq         bigint,
    last_seq          bigint,
    seq_count         bigint NOT NULL DEFAULT 0,
    latest            jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per reading of one metric. The unique key makes redelivery harmless; it holds the
-- time column because a hypertable's unique indexes must.
CREATE TABLE telemetry (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    metric      text NOT NULL,
    value       double precision NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT telemetry_dedup UNIQUE (device_id, seq, metric, ts)
);
CREATE INDEX telemetry_device_metric_ts_idx ON telemetry (device_id, metric, ts DESC);

CREATE TABLE events (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    type        text NOT NULL,
    code        text,
    detail      text,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_dedup UNIQUE (device_id, seq, ts)
);
CREATE INDEX events_device_type_ts_idx ON events (device_id, type, ts DESC);

CREATE TABLE quarantine (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    topic         text NOT NULL,
    device_id     text,
    reason        text NOT NULL,
    detail        text NOT NULL,
    payload       text NOT NULL,
    payload_bytes integer NOT NULL,
    -- a redelivered bad message is kept once: hash of topic, raw payload and what was wrong
    dedup_key     text NOT NULL UNIQUE
);
CREATE INDEX quarantine_reason_idx ON quarantine (reason, received_at DESC);

-- Bearer tokens; only a hash is stored.
CREATE TABLE api_tokens (
    token_sha256 text PRIMARY KEY,
    role         text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'marketer', 'technician')),
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Hourly averages. A plain view here; timescale/ replaces it with a continuous aggregate.
CREATE VIEW telemetry_hourly AS
SELECT date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01') AS bucket,
       device_id, metric,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value, count(*) AS readings
FROM telemetry
GROUP BY 1, 2, 3;
