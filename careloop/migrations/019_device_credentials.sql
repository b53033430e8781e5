-- Each device's broker password, kept as the broker's dynamic-security plugin keeps it (PBKDF2-HMAC-SHA512,
-- base64), so the plugin's file can be rebuilt from the registry. The password itself is shown once, when issued.
CREATE TABLE device_credentials (
    device_id     text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    salt          text NOT NULL,
    password_hash text NOT NULL,
    iterations    integer NOT NULL CHECK (iterations > 0),
    issued_at     timestamptz NOT NULL DEFAULT now(),
    issued_by     text,
    -- how many times it was replaced since the first one
    rotations     integer NOT NULL DEFAULT 0
);
