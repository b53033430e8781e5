-- Service orders, technicians, proactive call tasks, the contact policy's decisions and the spend ledger.

CREATE TABLE technicians (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL,
    phone          text,
    email          text,
    skills         text[] NOT NULL DEFAULT '{}',
    region         text NOT NULL,
    timezone       text NOT NULL DEFAULT 'UTC',
    -- working hours in the technician's own time zone, on ISO weekdays (1 = Monday)
    work_start     time NOT NULL DEFAULT '08:00',
    work_end       time NOT NULL DEFAULT '17:00' CHECK (work_end > work_start),
    work_days      smallint[] NOT NULL DEFAULT '{1,2,3,4,5}',
    daily_capacity smallint NOT NULL DEFAULT 4 CHECK (daily_capacity BETWEEN 1 AND 24),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX technicians_region_idx ON technicians (region) WHERE active;

-- A technician's token sees only that technician's orders.
ALTER TABLE api_tokens ADD COLUMN technician_id bigint REFERENCES technicians (id) ON DELETE CASCADE;

CREATE TABLE service_orders (
    id                bigserial PRIMARY KEY,
    device_id         text NOT NULL REFERENCES devices (id),
    customer_id       bigint REFERENCES customers (id),
    type              text NOT NULL CHECK (type IN ('repair', 'maintenance', 'inspection', 'installation')),
    -- what "the same fault" means: the same kind of work needing the same skill on the same device
    fault_class       text NOT NULL,
    priority          text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    status            text NOT NULL DEFAULT 'new'
                      CHECK (status IN ('new', 'scheduled', 'assigned', 'in_progress', 'completed', 'cancelled')),
    reason            text NOT NULL,
    skill             text NOT NULL,
    source            text NOT NULL CHECK (source IN ('rule', 'hotline', 'dispatcher')),
    explanation       jsonb,
    detection_ids     bigint[] NOT NULL DEFAULT '{}',
    -- the key of the action that opened it: a retried action finds its order here
    action_key        text UNIQUE,
    opened_at         timestamptz NOT NULL DEFAULT now(),
    sla_due_at        timestamptz NOT NULL,
    escalations       smallint NOT NULL DEFAULT 0,
    escalated_at      timestamptz,
    technician_id     bigint REFERENCES technicians (id),
    appointment_start timestamptz,
    appointment_end   timestamptz,
    completed_at      timestamptz,
    outcome           text,
    parts             jsonb NOT NULL DEFAULT '[]'::jsonb,
    cost              numeric(12, 2),
    paid              boolean NOT NULL DEFAULT false,
    rating            smallint CHECK (rating BETWEEN 1 AND 5),
    -- completion the telemetry must confirm: the order's detections clear by verify_by, or it is reopened
    verify_by         timestamptz,
    verification      text CHECK (verification IN ('pending', 'fixed', 'not_fixed', 'not_needed')),
    reopened          smallint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((appointment_start IS NULL) = (appointment_end IS NULL)),
    CHECK (appointment_end IS NULL OR appointment_end > appointment_start)
);
-- One open order per device and fault class: a second detection, or a hotline call, joins it.
CREATE UNIQUE INDEX service_orders_one_open_idx ON service_orders (device_id, fault_class)
    WHERE status NOT IN ('completed', 'cancelled');
CREATE INDEX service_orders_status_idx ON service_orders (status, sla_due_at);
CREATE INDEX service_orders_technician_idx ON service_orders (technician_id, appointment_start);
CREATE INDEX service_orders_customer_idx ON service_orders (customer_id, opened_at DESC);
CREATE INDEX service_orders_verify_idx ON service_orders (verify_by) WHERE verification = 'pending';

-- Every change of an order: what, who (the person behind the token, or the engine) and when.
CREATE TABLE service_order_history (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES service_orders (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    actor_role  text NOT NULL,
    change      text NOT NULL,
    from_status text,
    to_status   text,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX service_order_history_order_idx ON service_order_history (order_id, id);

CREATE TABLE call_tasks (
    id            bigserial PRIMARY KEY,
    order_id      bigint REFERENCES service_orders (id),
    customer_id   bigint REFERENCES customers (id),
    device_id     text NOT NULL REFERENCES devices (id),
    phone         text,
    reason        text NOT NULL,
    script        text NOT NULL,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'blocked', 'done')),
    -- when the call may be made: inside the customer's daytime; blocked tasks say why in policy_reason
    due_at        timestamptz NOT NULL,
    policy_reason text NOT NULL,
    outcome       text CHECK (outcome IN ('reached', 'no_answer', 'call_back', 'declined')),
    attempts      smallint NOT NULL DEFAULT 0,
    notes         text,
    action_key    text UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_tasks_status_idx ON call_tasks (status, due_at);
CREATE INDEX call_tasks_customer_idx ON call_tasks (customer_id, created_at DESC);

-- The contact policy's every decision, with its reason: orders and offers share this gate.
CREATE TABLE contact_decisions (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('service', 'marketing')),
    channel     text NOT NULL CHECK (channel IN ('phone', 'sms', 'email')),
    subject     text NOT NULL,
    allowed     boolean NOT NULL,
    reason      text NOT NULL,
    not_before  timestamptz,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subject, channel)
);
CREATE INDEX contact_decisions_customer_idx ON contact_decisions (customer_id, decided_at DESC);

-- What customers spent: paid visits now, purchases and redemptions with the offers domain. Keyed, so a retried
-- completion is counted once.
CREATE TABLE spend_ledger (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    amount      numeric(12, 2) NOT NULL,
    source      text NOT NULL,
    entry_key   text NOT NULL UNIQUE,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spend_ledger_customer_idx ON spend_ledger (customer_id, at);
