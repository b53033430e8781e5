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
