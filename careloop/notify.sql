-- The ingest→engine notification (careloop/notify.py). `{channel}` is the channel, an identifier that
-- careloop.notify quotes with psycopg2.sql.Identifier; the payload is a value.

-- name: listen --
-- Hear what is notified on the channel from now on, on this (autocommit) connection.
LISTEN {channel}

-- name: notify --
-- Tell the channel's listeners something; they hear it only when this transaction commits.
NOTIFY {channel}, %(payload)s
