-- name: insert_customer --
-- Create a customer; answers its id.
INSERT INTO customers (name, phone, email, birthday, timezone, region, preferred_channel)
VALUES (%(name)s, %(phone)s, %(email)s, %(birthday)s, %(timezone)s, %(region)s, %(preferred_channel)s)
RETURNING id

-- name: upsert_consent --
-- Record a customer's consent for one purpose and channel.
INSERT INTO customer_consents (customer_id, purpose, channel, granted, updated_at)
VALUES (%(customer_id)s, %(purpose)s, %(channel)s, %(granted)s, now())
ON CONFLICT (customer_id, purpose, channel) DO UPDATE SET granted = excluded.granted, updated_at = now()

-- name: customer_exists --
-- Whether a customer id is taken.
SELECT EXISTS (SELECT 1 FROM customers WHERE id = %(customer_id)s)

-- name: list_customers --
-- Customers with their consents, filtered by a name/email/phone search; `total` counts all matches.
SELECT c.*,
       coalesce((SELECT jsonb_agg(jsonb_build_object('purpose', cc.purpose, 'channel', cc.channel,
                                                     'granted', cc.granted) ORDER BY cc.purpose, cc.channel)
                 FROM customer_consents cc WHERE cc.customer_id = c.id), '[]'::jsonb) AS consents,
       count(*) OVER () AS total
FROM customers c
WHERE (%(customer_id)s::bigint IS NULL OR c.id = %(customer_id)s)
  AND (%(q)s::text IS NULL OR c.name ILIKE '%%' || %(q)s || '%%'
       OR (NOT %(names_only)s AND (c.email ILIKE '%%' || %(q)s || '%%' OR c.phone LIKE '%%' || %(q)s || '%%')))
  AND (%(customer_id)s::bigint IS NOT NULL OR c.erased_at IS NULL)  -- the erased are found by id alone
ORDER BY c.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: contact_facts --
-- What the contact policy weighs for a customer: consents, time zone, and the contacts of a purpose lately, on all
-- channels and on one.
SELECT c.timezone,
       coalesce((SELECT jsonb_agg(jsonb_build_array(cc.purpose, cc.channel, cc.granted))
                 FROM customer_consents cc WHERE cc.customer_id = c.id), '[]'::jsonb) AS consents,
       recent.last_day, recent.last_week, recent.channel_last_day, recent.channel_last_week
FROM customers c
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.decided_at > %(now)s - interval '1 day') AS last_day,
           count(*) AS last_week,
           count(*) FILTER (WHERE d.decided_at > %(now)s - interval '1 day' AND d.channel = %(channel)s)
               AS channel_last_day,
           count(*) FILTER (WHERE d.channel = %(channel)s) AS channel_last_week
    FROM contact_decisions d
    WHERE d.customer_id = c.id AND d.purpose = %(purpose)s AND d.allowed
      AND d.decided_at > %(now)s - interval '7 days'
) recent
WHERE c.id = %(customer_id)s

-- name: record_contact_decision --
-- Keep the policy's decision about one contact; the same subject and channel is decided once.
INSERT INTO contact_decisions (customer_id, purpose, channel, subject, allowed, reason, not_before, decided_at)
VALUES (%(customer_id)s, %(purpose)s, %(channel)s, %(subject)s, %(allowed)s, %(reason)s, %(not_before)s, %(now)s)
ON CONFLICT (subject, channel) DO NOTHING

-- name: contact_decision --
-- The decision kept about a subject on a channel.
SELECT allowed, reason, not_before FROM contact_decisions WHERE subject = %(subject)s AND channel = %(channel)s

-- name: record_spend --
-- An amount the customer spent; a retried entry (same key) is kept once.
INSERT INTO spend_ledger (customer_id, amount, source, entry_key, at)
VALUES (%(customer_id)s, %(amount)s, %(source)s, %(entry_key)s, %(at)s)
ON CONFLICT (entry_key) DO NOTHING

-- name: record_consent --
-- A consent given or withdrawn, how and when; the trigger keeps it in consent_history.
INSERT INTO customer_consents (customer_id, purpose, channel, granted, source, note, updated_at)
VALUES (%(customer_id)s, %(purpose)s, %(channel)s, %(granted)s, %(source)s, %(note)s, %(at)s)
ON CONFLICT (customer_id, purpose, channel) DO UPDATE
SET granted = excluded.granted, source = excluded.source, note = excluded.note, updated_at = excluded.updated_at

-- name: consent_history --
-- Every consent a customer gave or withdrew, newest first.
SELECT purpose, channel, granted, source, note, at FROM consent_history
WHERE customer_id = %(customer_id)s ORDER BY at DESC, id DESC LIMIT %(limit)s

-- name: offer_contact_facts --
-- What the contact policy weighs before an offer: zone, preferred channel, where we can reach them, consents,
-- and the marketing contacts allowed lately, counted by when they go out (scheduled ones included).
SELECT c.timezone, c.preferred_channel,
       array_remove(ARRAY[CASE WHEN nullif(c.email, '') IS NOT NULL THEN 'email' END,
                          CASE WHEN nullif(c.phone, '') IS NOT NULL THEN 'sms' END,
                          CASE WHEN nullif(c.phone, '') IS NOT NULL THEN 'phone' END], NULL) AS reachable,
       coalesce((SELECT jsonb_agg(jsonb_build_array(cc.purpose, cc.channel, cc.granted))
                 FROM customer_consents cc WHERE cc.customer_id = c.id), '[]'::jsonb) AS consents,
       coalesce((SELECT jsonb_object_agg(channel, counts) FROM (
           SELECT d.channel,
                  jsonb_build_array(count(*) FILTER (WHERE coalesce(d.not_before, d.decided_at)
                                                            > %(now)s - interval '1 day'),
                                    count(*)) AS counts
           FROM contact_decisions d
           WHERE d.customer_id = c.id AND d.purpose = 'marketing' AND d.allowed
             AND coalesce(d.not_before, d.decided_at) > %(now)s - interval '7 days'
           GROUP BY d.channel) per_channel), '{}'::jsonb) AS recent
FROM customers c WHERE c.id = %(customer_id)s

-- name: record_offer_decision --
-- Keep the policy's decision about an offer, with the channel it chose and whether it is held back.
INSERT INTO contact_decisions (customer_id, purpose, channel, subject, allowed, held, reason, not_before, decided_at)
VALUES (%(customer_id)s, 'marketing', %(channel)s, %(subject)s, %(allowed)s, %(held)s, %(reason)s, %(not_before)s,
        %(now)s)
ON CONFLICT (subject, channel) DO NOTHING

-- name: offer_decision --
-- The decision kept about an offer's subject (on whichever channel it chose).
SELECT allowed, held, reason, not_before, channel FROM contact_decisions
WHERE subject = %(subject)s ORDER BY id LIMIT 1

-- name: spend_entries --
-- What a customer spent, oldest first.
SELECT amount, at FROM spend_ledger WHERE customer_id = %(customer_id)s ORDER BY at, id

-- name: points_spent --
-- The points a customer spent, oldest first.
SELECT points, at FROM points_spent WHERE customer_id = %(customer_id)s ORDER BY at, id

-- name: spend_points --
-- Spend points; a retried spend (same key) is kept once. Answers the id when written now.
INSERT INTO points_spent (customer_id, points, reason, entry_key, at)
VALUES (%(customer_id)s, %(points)s, %(reason)s, %(entry_key)s, %(at)s)
ON CONFLICT (entry_key) DO NOTHING
RETURNING id

-- name: lock_customer --
-- A customer's row, locked while their points are spent (two spends take turns).
SELECT id FROM customers WHERE id = %(customer_id)s FOR UPDATE

-- name: customer_values --
-- Every customer's recency, frequency and monetary value over a window, with their appliances' count and age.
SELECT c.id AS customer_id,
       (SELECT floor(extract(epoch FROM %(now)s - max(s.at)) / 86400)::int FROM spend_ledger s
        WHERE s.customer_id = c.id AND s.at > %(since)s AND s.at <= %(now)s AND s.amount > 0) AS recency_days,
       (SELECT count(*) FROM spend_ledger s
        WHERE s.customer_id = c.id AND s.at > %(since)s AND s.at <= %(now)s AND s.amount > 0) AS frequency,
       coalesce((SELECT sum(s.amount) FROM spend_ledger s
                 WHERE s.customer_id = c.id AND s.at > %(since)s AND s.at <= %(now)s), 0) AS monetary,
       (SELECT count(*) FROM devices d WHERE d.owner_id = c.id) AS appliances,
       (SELECT extract(epoch FROM %(now)s - min(d.purchased_on)::timestamptz) / (365.25 * 86400) FROM devices d
        WHERE d.owner_id = c.id) AS oldest_age_years
FROM customers c ORDER BY c.id

-- name: store_segments --
-- Replace the customers' segments with those just computed (arrays of one element per customer).
INSERT INTO customer_segments (customer_id, recency_days, frequency, monetary, r_score, f_score, m_score,
                               value_segment, top_revenue, device_segments, computed_at)
SELECT s.customer_id, s.recency_days, s.frequency, s.monetary, s.r_score, s.f_score, s.m_score, s.value_segment,
       s.top_revenue, string_to_array(s.device_segments, ',')::text[], %(now)s
FROM unnest(%(customer_id)s::bigint[], %(recency_days)s::int[], %(frequency)s::int[], %(monetary)s::numeric[],
            %(r_score)s::smallint[], %(f_score)s::smallint[], %(m_score)s::smallint[], %(value_segment)s::text[],
            %(top_revenue)s::boolean[], %(device_segments)s::text[])
     AS s (customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, value_segment, top_revenue,
           device_segments)
ON CONFLICT (customer_id) DO UPDATE SET
    recency_days = excluded.recency_days, frequency = excluded.frequency, monetary = excluded.monetary,
    r_score = excluded.r_score, f_score = excluded.f_score, m_score = excluded.m_score,
    value_segment = excluded.value_segment, top_revenue = excluded.top_revenue,
    device_segments = excluded.device_segments, computed_at = excluded.computed_at

-- name: customer_segment --
-- A customer's segments as last computed.
SELECT recency_days, frequency, monetary, r_score, f_score, m_score, value_segment, top_revenue, device_segments,
       computed_at
FROM customer_segments WHERE customer_id = %(customer_id)s

-- name: customer_orders --
-- A customer's service orders, newest first (read here for the 360 view; service orders own them).
SELECT id, device_id, type, status, reason, opened_at, completed_at FROM service_orders
WHERE customer_id = %(customer_id)s ORDER BY opened_at DESC, id DESC LIMIT %(limit)s

-- name: customer_offers --
-- A customer's offers, newest first (read here for the 360 view; the offers domain owns them).
SELECT o.code, t.code AS template, o.device_id, o.status, o.status_reason, o.reason, o.channel, o.issued_at,
       o.expires_at, o.redeemed_at
FROM offers o JOIN offer_templates t ON t.id = o.template_id
WHERE o.customer_id = %(customer_id)s ORDER BY o.issued_at DESC, o.id DESC LIMIT %(limit)s

-- name: customer_contacts --
-- The contact policy's decisions about a customer, newest first.
SELECT purpose, channel, subject, allowed, held, reason, not_before, decided_at FROM contact_decisions
WHERE customer_id = %(customer_id)s ORDER BY decided_at DESC, id DESC LIMIT %(limit)s

-- name: customer_spend --
-- A customer's spend entries, newest first.
SELECT amount, source, at FROM spend_ledger WHERE customer_id = %(customer_id)s
ORDER BY at DESC, id DESC LIMIT %(limit)s

-- name: unsubscribe_token --
-- The customer's unsubscribe token, made now when they have none (a retry keeps the first); none when erased.
UPDATE customers SET unsubscribe_token = coalesce(unsubscribe_token, %(token)s)
WHERE id = %(customer_id)s AND erased_at IS NULL
RETURNING unsubscribe_token

-- name: customer_by_unsubscribe_token --
-- Whose unsubscribe token this is.
SELECT id FROM customers WHERE unsubscribe_token = %(token)s

-- name: marketing_consents --
-- The customer's marketing consent as it stands on each channel (a channel never asked about is absent).
SELECT channel, granted FROM customer_consents WHERE customer_id = %(customer_id)s AND purpose = 'marketing'

-- name: update_customer --
-- Correct a customer's profile: each field given (`set_<field>` true) takes its new value; answers the id, none
-- when there is no such customer or they were erased.
UPDATE customers SET
    name = CASE WHEN %(set_name)s THEN %(name)s ELSE name END,
    phone = CASE WHEN %(set_phone)s THEN %(phone)s ELSE phone END,
    email = CASE WHEN %(set_email)s THEN %(email)s ELSE email END,
    birthday = CASE WHEN %(set_birthday)s THEN %(birthday)s::date ELSE birthday END,
    timezone = CASE WHEN %(set_timezone)s THEN %(timezone)s ELSE timezone END,
    region = CASE WHEN %(set_region)s THEN %(region)s ELSE region END,
    preferred_channel = CASE WHEN %(set_preferred_channel)s THEN %(preferred_channel)s ELSE preferred_channel END
WHERE id = %(customer_id)s AND erased_at IS NULL
RETURNING id

-- name: customer_erased_at --
-- When a customer was erased (NULL: not erased); no row: no such customer.
SELECT erased_at FROM customers WHERE id = %(customer_id)s FOR UPDATE

-- Erasure: every place the product writes a person, in one transaction. Customers sit below the domains that copy
-- a person's contact details (offers' outbox, service orders' call tasks), so the list of those places is kept
-- here, in one file, rather than spread where nobody would see a new copy missing from it. What stays is
-- anonymous: the customer's id as a stub (erased_at set) that orders, offers, spend and segments still count.

-- name: erase_devices --
-- The person's appliances are no longer theirs: their telemetry stays, owned by nobody.
UPDATE devices SET owner_id = NULL WHERE owner_id = %(customer_id)s

-- name: erase_consents --
-- Consents as they stand and their history.
WITH history AS (DELETE FROM consent_history WHERE customer_id = %(customer_id)s)
DELETE FROM customer_consents WHERE customer_id = %(customer_id)s

-- name: erase_outbox --
-- The messages of the person's offers: addresses, subjects and bodies gone; those not yet sent never will be.
UPDATE outbox m SET destination = 'erased', subject = NULL, body = '', last_error = NULL,
       status = CASE WHEN m.status = 'pending' THEN 'cancelled' ELSE m.status END,
       cancelled_at = CASE WHEN m.status = 'pending' THEN %(at)s ELSE m.cancelled_at END,
       cancel_reason = CASE WHEN m.status = 'pending' THEN 'the customer was erased' ELSE m.cancel_reason END
FROM offers o
WHERE m.offer_id = o.id AND o.customer_id = %(customer_id)s

-- name: erase_offers --
-- The person's offers keep their template, status, value, dates and segment (the conversion report counts them);
-- their reason in the owner's words goes; those not yet in their hands are blocked.
UPDATE offers SET reason = 'erased', updated_at = %(at)s,
       status = CASE WHEN status IN ('held', 'issued') THEN 'blocked' ELSE status END,
       status_reason = CASE WHEN status IN ('held', 'issued') THEN 'the customer was erased' ELSE status_reason END
WHERE customer_id = %(customer_id)s

-- name: erase_call_tasks --
-- Call tasks: no number, no script (it greets them by name), no notes; an open one can no longer be made.
UPDATE call_tasks SET phone = NULL, script = 'erased', notes = NULL, updated_at = %(at)s,
       status = CASE WHEN status = 'open' THEN 'blocked' ELSE status END,
       policy_reason = CASE WHEN status = 'open' THEN 'the customer was erased' ELSE policy_reason END
WHERE customer_id = %(customer_id)s

-- name: erase_order_texts --
-- Service orders stay (their statistics); their e-mail address or phone number, where a text quotes it, goes.
WITH orders AS (
    UPDATE service_orders SET
        reason = replace(replace(reason, %(email)s, '[erased]'), %(phone)s, '[erased]'),
        outcome = replace(replace(outcome, %(email)s, '[erased]'), %(phone)s, '[erased]'),
        explanation = replace(replace(explanation::text, %(email)s, '[erased]'), %(phone)s, '[erased]')::jsonb
    WHERE customer_id = %(customer_id)s
    RETURNING id
)
UPDATE service_order_history h
SET detail = replace(replace(h.detail::text, %(email)s, '[erased]'), %(phone)s, '[erased]')::jsonb
FROM orders WHERE h.order_id = orders.id

-- name: erase_quarantine --
-- Bad messages kept in quarantine that mention the person's e-mail address or phone number (as written, or its
-- digits alone), in their text or their raw bytes.
DELETE FROM quarantine q
WHERE EXISTS (
    SELECT 1 FROM unnest(%(marks)s::text[]) AS mark (text)
    WHERE strpos(lower(q.payload), lower(mark.text)) > 0 OR strpos(lower(q.detail), lower(mark.text)) > 0
       OR position(convert_to(mark.text, 'UTF8') IN coalesce(q.payload_raw, ''::bytea)) > 0
)

-- name: erase_points --
-- Points spent keep their amounts; the reason (free text) goes.
UPDATE points_spent SET reason = 'erased' WHERE customer_id = %(customer_id)s

-- name: erase_tokens --
-- The person's own API tokens stop working at once, and their names (often the person's) go.
UPDATE api_tokens SET name = 'erased customer', revoked_at = coalesce(revoked_at, %(at)s),
       revoked_by = coalesce(revoked_by, 'erasure')
WHERE customer_id = %(customer_id)s

-- name: erase_profile --
-- The profile: an anonymous stub with its id, so what refers to it still counts.
UPDATE customers SET name = 'erased customer', phone = NULL, email = NULL, birthday = NULL, timezone = 'UTC',
       region = NULL, preferred_channel = NULL, unsubscribe_token = NULL, erased_at = %(at)s
WHERE id = %(customer_id)s

-- name: free_visits_used --
-- The free cleaning visits a customer used in a span: offers of a free-visit template redeemed (the offers domain
-- owns them), and maintenance orders completed unpaid (service orders own them) that were not that same visit
-- (an order for the detection that also brought the redeemed offer). Oldest first.
WITH redeemed AS (
    SELECT o.redeemed_at AS at, 'offer ' || t.code || ' redeemed' AS what, o.detection_id
    FROM offers o JOIN offer_templates t ON t.id = o.template_id
    WHERE o.customer_id = %(customer_id)s AND t.free_visit AND o.redeemed_at >= %(since)s
      AND o.redeemed_at < %(until)s
)
SELECT at, what FROM redeemed
UNION ALL
SELECT so.completed_at, 'maintenance order ' || so.id || ' completed as a free visit'
FROM service_orders so
WHERE so.customer_id = %(customer_id)s AND so.type = 'maintenance' AND so.status = 'completed' AND NOT so.paid
  AND so.completed_at >= %(since)s AND so.completed_at < %(until)s
  AND NOT EXISTS (SELECT 1 FROM redeemed r WHERE r.detection_id = ANY(so.detection_ids))
ORDER BY 1
