-- Rules as versioned documents. Every change keeps the previous version in rule_versions.

CREATE TABLE rules (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,99}$'),
    version    integer NOT NULL,
    enabled    boolean NOT NULL,
    builtin    boolean NOT NULL DEFAULT false,
    document   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rule_versions (
    rule_id    text NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    version    integer NOT NULL,
    enabled    boolean NOT NULL,
    document   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, version)
);
