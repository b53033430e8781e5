-- Quarantine keeps the raw bytes; gap accounting survives a forged or reset seq.

-- The text `payload` is for people (bytes that are not UTF-8 and NUL written as \xNN); the raw bytes are kept
-- beside it, as received, so a quarantined message can be examined or replayed exactly.
ALTER TABLE quarantine ADD COLUMN payload_raw bytea;

-- Retention prunes oldest first.
CREATE INDEX quarantine_received_at_idx ON quarantine (received_at);

-- A device's seq rises by one per message. A jump far beyond what the device can have sent since it was last
-- heard from (a forged message, a device reset to 0) starts a new count instead of counting millions missing:
-- the gaps counted so far are kept in missing_before_reset and the reset is counted in seq_resets.
ALTER TABLE device_state
    ADD COLUMN seq_resets integer NOT NULL DEFAULT 0,
    ADD COLUMN missing_before_reset bigint NOT NULL DEFAULT 0,
    -- numeric, because seqs span all of bigint and their difference does not fit in it
    ADD COLUMN missing_seq bigint GENERATED ALWAYS AS (
        LEAST(
            missing_before_reset::numeric
                + GREATEST(coalesce(last_seq::numeric - first_seq::numeric + 1 - seq_count, 0), 0),
            9223372036854775807
        )::bigint
    ) STORED;

-- Whether seqs [new_first, new_last], heard at new_seen, belong to a new count rather than the one kept in
-- [first_seq, last_seq] last heard at last_seen. The allowance: 10,000 messages, plus 10 a second for the time
-- between the two (no appliance sends faster).
CREATE FUNCTION seq_is_reset(
    first_seq bigint, last_seq bigint, last_seen timestamptz,
    new_first bigint, new_last bigint, new_seen timestamptz
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT first_seq IS NOT NULL AND last_seq IS NOT NULL AND (
        new_first::numeric > last_seq::numeric + allowance OR new_last::numeric < first_seq::numeric - allowance)
    FROM (SELECT 10000 + 10 * abs(extract(epoch FROM new_seen - coalesce(last_seen, new_seen))) AS allowance) a
$$;
