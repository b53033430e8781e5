-- Offers: templates, offers issued (and the holdout that got none), the outbox their messages leave through,
-- webhook endpoints; the consent history behind the contact policy; points spent; customer segments.

-- ---------------------------------------------------------------- consents: how given, and their history

-- How the consent as it stands was given or withdrawn ("sign-up form", "hotline call", "unsubscribe link").
ALTER TABLE customer_consents ADD COLUMN source text NOT NULL DEFAULT 'sign-up';
ALTER TABLE customer_consents ADD COLUMN note text;

-- Every consent given or withdrawn, when and how; customer_consents keeps only the latest of each.
CREATE TABLE consent_history (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    purpose     text NOT NULL,
    channel     text NOT NULL,
    granted     boolean NOT NULL,
    source      text NOT NULL,
    note        text,
    at          timestamptz NOT NULL
);
CREATE INDEX consent_history_customer_idx ON consent_history (customer_id, at DESC, id DESC);

-- A trigger, so that no path that writes a consent (sign-up, the API, a later import) can skip the history.
CREATE FUNCTION keep_consent_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO consent_history (customer_id, purpose, channel, granted, source, note, at)
    VALUES (NEW.customer_id, NEW.purpose, NEW.channel, NEW.granted, NEW.source, NEW.note, NEW.updated_at);
    RETURN NEW;
END
$$;
CREATE TRIGGER customer_consents_history AFTER INSERT OR UPDATE ON customer_consents
    FOR EACH ROW EXECUTE FUNCTION keep_consent_history();
INSERT INTO consent_history (customer_id, purpose, channel, granted, source, note, at)
SELECT customer_id, purpose, channel, granted, source, note, updated_at FROM customer_consents;

-- A decision that holds a contact back until something is done (service first), rather than refusing it.
ALTER TABLE contact_decisions ADD COLUMN held boolean NOT NULL DEFAULT false;
CREATE INDEX contact_decisions_recent_idx ON contact_decisions (customer_id, purpose, decided_at) WHERE allowed;

-- ---------------------------------------------------------------- templates

CREATE TABLE offer_templates (
    id                bigserial PRIMARY KEY,
    code              text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name              text NOT NULL,
    -- sales offers wait while the customer has service open (service first); service and care offers do not
    category          text NOT NULL CHECK (category IN ('service', 'sales', 'care')),
    value_kind        text NOT NULL CHECK (value_kind IN ('amount', 'percent')),
    value             numeric(12, 2) NOT NULL CHECK (value > 0),
    validity_days     integer NOT NULL CHECK (validity_days BETWEEN 1 AND 3660),
    -- {kinds, models, tiers, segments}: each a list, absent = any
    eligibility       jsonb NOT NULL DEFAULT '{}'::jsonb,
    channels          text[] NOT NULL CHECK (cardinality(channels) > 0 AND channels <@ ARRAY['email', 'sms']),
    subject           text NOT NULL,
    reason            text NOT NULL,   -- why the owner gets it, in words they would welcome
    message           text NOT NULL,
    -- 'birthday': once a year per customer, delivered on the day in their own time zone
    occasion          text CHECK (occasion IN ('birthday')),
    -- the spend ledger source that counts as the offer having worked (NULL: any spend), in both groups
    conversion_source text,
    -- the share of eligible customers who get nothing, to measure uplift against; per rule where set
    holdout_share     numeric(4, 3) NOT NULL DEFAULT 0 CHECK (holdout_share BETWEEN 0 AND 0.5),
    rule_holdouts     jsonb NOT NULL DEFAULT '{}'::jsonb,
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

INSERT INTO offer_templates (code, name, category, value_kind, value, validity_days, eligibility, channels, subject,
                             reason, message, occasion, conversion_source, holdout_share) VALUES
('member-cleaning', 'Member home cleaning visit', 'service', 'percent', 100, 60, '{}', '{email,sms}',
 'A free cleaning visit for your {appliance}',
 'It is time to give your {appliance} a thorough clean',
 'Hello {name}, {reason_lower}. As a CareLoop member you get a home cleaning visit free of charge: quote {code} when you book. Valid until {expires}.',
 NULL, 'service_visit', 0),
('member-descaling', 'Member descaling visit', 'service', 'percent', 100, 60, '{"kinds": ["water_heater"]}',
 '{email,sms}',
 'A free descaling visit for your {appliance}',
 'Your {appliance} would benefit from descaling',
 'Hello {name}, {reason_lower}. As a CareLoop member you get a descaling visit free of charge: quote {code} when you book. Valid until {expires}.',
 NULL, 'service_visit', 0),
('trade-in', 'Trade-in coupon', 'sales', 'amount', 500, 90, '{}', '{email,sms}',
 'Your {appliance} has earned its rest: {value} off a new one',
 'Your {appliance} has served you for {age}',
 'Hello {name}, {reason_lower}. When you are ready for a new one, trade it in and take {value} off: code {code}, valid until {expires}.',
 NULL, 'purchase', 0.1),
('birthday-coupon', 'Birthday coupon', 'care', 'amount', 50, 30, '{}', '{email,sms}',
 'Happy birthday, {name}',
 'Happy birthday from all of us at CareLoop',
 'Hello {name}, {reason_lower}! Here is {value} off anything in our shop: code {code}, valid until {expires}.',
 'birthday', NULL, 0),
('consumables', 'Filters and descaler', 'sales', 'percent', 20, 60,
 '{"kinds": ["range_hood", "water_heater", "dishwasher", "air_conditioner"]}', '{email,sms}',
 '{value} off filters and descaler for your {appliance}',
 'Fresh filters and descaler keep your {appliance} running like new',
 'Hello {name}, {reason_lower}. Take {value} off consumables with code {code}, valid until {expires}.',
 NULL, 'consumables', 0.1),
('extended-warranty', 'Extended warranty', 'sales', 'amount', 100, 60, '{}', '{email,sms}',
 'Three more years of care for your {appliance}',
 'Your {appliance} has served you for {age}; an extended warranty keeps it covered',
 'Hello {name}, {reason_lower}. Take {value} off an extended warranty with code {code}, valid until {expires}.',
 NULL, 'warranty', 0.1);

-- ---------------------------------------------------------------- offers and their holdout

CREATE TABLE offers (
    id              bigserial PRIMARY KEY,
    code            text NOT NULL UNIQUE,  -- the coupon code: random, unguessable
    template_id     bigint NOT NULL REFERENCES offer_templates (id),
    customer_id     bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    device_id       text REFERENCES devices (id) ON DELETE SET NULL,
    rule_id         text,
    detection_id    bigint,
    -- the detection action's key, or the occasion's (a birthday: template, customer and year): issued once
    issue_key       text NOT NULL UNIQUE,
    segment         text NOT NULL,  -- the customer's value segment when it was issued, for the report
    status          text NOT NULL CHECK (status IN ('held', 'blocked', 'issued', 'delivered', 'redeemed', 'expired')),
    status_reason   text NOT NULL,  -- the contact policy's words: why it is held, blocked or when it goes out
    reason          text NOT NULL,  -- in the owner's words
    channel         text CHECK (channel IN ('email', 'sms')),
    value_kind      text NOT NULL,
    value           numeric(12, 2) NOT NULL,
    issued_at       timestamptz NOT NULL,
    send_at         timestamptz,
    expires_at      timestamptz,
    -- the end of the window in which a purchase counts as the offer working (as for the holdout)
    window_ends_at  timestamptz NOT NULL,
    delivered_at    timestamptz,
    redeemed_at     timestamptz,
    redeemed_amount numeric(12, 2),
    expired_at      timestamptz,
    gate_checks     integer NOT NULL DEFAULT 1,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offers_customer_idx ON offers (customer_id, issued_at DESC);
CREATE INDEX offers_expiry_idx ON offers (expires_at) WHERE status IN ('issued', 'delivered');
CREATE INDEX offers_held_idx ON offers (id) WHERE status = 'held';
CREATE INDEX offers_template_idx ON offers (template_id, issued_at);

-- Eligible customers kept out at random: they get nothing, and are counted against the offers' conversion.
CREATE TABLE offer_holdouts (
    id             bigserial PRIMARY KEY,
    template_id    bigint NOT NULL REFERENCES offer_templates (id),
    customer_id    bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    device_id      text REFERENCES devices (id) ON DELETE SET NULL,
    rule_id        text,
    detection_id   bigint,
    issue_key      text NOT NULL UNIQUE,
    segment        text NOT NULL,
    assigned_at    timestamptz NOT NULL,
    window_ends_at timestamptz NOT NULL
);
CREATE INDEX offer_holdouts_template_idx ON offer_holdouts (template_id, assigned_at);

-- ---------------------------------------------------------------- delivery

CREATE TABLE webhook_endpoints (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    url        text NOT NULL,
    secret     text NOT NULL,  -- signs each body (HMAC-SHA256); shown once, when the endpoint is registered
    -- offer.issued, offer.redeemed, offer.expired for other systems; offer.sms for the text-message gateway
    events     text[] NOT NULL,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Messages written in the transaction that causes them, sent by the engine. Each is rendered once, here: a
-- retry (after a crash between sending and marking it sent) sends the same bytes under the same key.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    offer_id        bigint REFERENCES offers (id) ON DELETE CASCADE,
    transport       text NOT NULL CHECK (transport IN ('smtp', 'webhook')),
    endpoint_id     bigint REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    destination     text NOT NULL,  -- an e-mail address, or the endpoint's URL
    event           text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,  -- the Message-ID of a mail, the Idempotency-Key of a webhook
    subject         text,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    not_before      timestamptz NOT NULL,  -- the customer's daytime: held messages go out when it opens
    next_attempt_at timestamptz NOT NULL,  -- also the lease of a message being sent
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_offer_idx ON outbox (offer_id);

-- ---------------------------------------------------------------- membership and segments

-- Points spent (points are earned from the spend ledger, at the tier's multiplier, and expire).
CREATE TABLE points_spent (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    points      integer NOT NULL CHECK (points > 0),
    reason      text NOT NULL,
    entry_key   text NOT NULL UNIQUE,
    at          timestamptz NOT NULL
);
CREATE INDEX points_spent_customer_idx ON points_spent (customer_id, at);

-- Each customer's value (recency, frequency, monetary scores), whether they are among those who bring 80% of
-- revenue, and device-based segments; recomputed by a scheduled job.
CREATE TABLE customer_segments (
    customer_id     bigint PRIMARY KEY REFERENCES customers (id) ON DELETE CASCADE,
    recency_days    integer,
    frequency       integer NOT NULL,
    monetary        numeric(14, 2) NOT NULL,
    r_score         smallint NOT NULL,
    f_score         smallint NOT NULL,
    m_score         smallint NOT NULL,
    value_segment   text NOT NULL,
    top_revenue     boolean NOT NULL,
    device_segments text[] NOT NULL DEFAULT '{}',
    computed_at     timestamptz NOT NULL
);
CREATE INDEX spend_ledger_source_idx ON spend_ledger (customer_id, source, at);
