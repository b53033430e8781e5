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
  AND (%(q)s::text IS NULL OR c.name ILIKE '%%' || %(q)s || '%%' OR c.email ILIKE '%%' || %(q)s || '%%'
       OR c.phone LIKE '%%' || %(q)s || '%%')
ORDER BY c.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: contact_facts --
-- What the contact policy weighs for a customer: consents, time zone, and the contacts of a purpose lately.
SELECT c.timezone,
       coalesce((SELECT jsonb_agg(jsonb_build_array(cc.purpose, cc.channel, cc.granted))
                 FROM customer_consents cc WHERE cc.customer_id = c.id), '[]'::jsonb) AS consents,
       (SELECT count(*) FROM contact_decisions d WHERE d.customer_id = c.id AND d.purpose = %(purpose)s
          AND d.allowed AND d.decided_at > %(now)s - interval '1 day') AS last_day,
       (SELECT count(*) FROM contact_decisions d WHERE d.customer_id = c.id AND d.purpose = %(purpose)s
          AND d.allowed AND d.decided_at > %(now)s - interval '7 days') AS last_week
FROM customers c WHERE c.id = %(customer_id)s

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
