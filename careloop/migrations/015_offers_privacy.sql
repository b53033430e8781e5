-- Webhook endpoints that are deleted (their pending messages cancelled, not lost) and that were registered with
-- an allowance for a private receiver; outbox messages cancelled with the reason; the free cleaning visits a
-- template's redemption uses; the per-customer unsubscribe token; customers erased (kept as an anonymous stub).

-- ---------------------------------------------------------------- webhooks and the outbox

-- true: registered where private receivers are allowed (on premise, tests); delivery then lets it through too
ALTER TABLE webhook_endpoints ADD COLUMN private_network boolean NOT NULL DEFAULT false;
ALTER TABLE webhook_endpoints ADD COLUMN deleted_at timestamptz;

ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN ('pending', 'sent', 'dead', 'cancelled'));
ALTER TABLE outbox ADD COLUMN cancelled_at timestamptz;
ALTER TABLE outbox ADD COLUMN cancel_reason text;  -- why it will never be sent (endpoint deleted, an objection)

-- ---------------------------------------------------------------- membership: free cleaning visits

-- redeeming an offer of this template uses one of the member's free cleaning visits of the year
ALTER TABLE offer_templates ADD COLUMN free_visit boolean NOT NULL DEFAULT false;
UPDATE offer_templates SET free_visit = true WHERE code IN ('member-cleaning', 'member-descaling');

-- ---------------------------------------------------------------- customers: objection and erasure

-- the unguessable token of each customer's unsubscribe link (made when their first marketing e-mail is written)
ALTER TABLE customers ADD COLUMN unsubscribe_token text UNIQUE;
-- when the person was erased: the row stays as an anonymous stub so orders, offers and devices keep their counts
ALTER TABLE customers ADD COLUMN erased_at timestamptz;
