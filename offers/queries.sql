-- name: list_templates --
-- Offer templates, by code; `total` counts all matches.
SELECT t.*, count(*) OVER () AS total FROM offer_templates t
WHERE (%(code)s::text IS NULL OR t.code = %(code)s)
  AND (%(active)s::boolean IS NULL OR t.active = %(active)s)
ORDER BY t.code
LIMIT %(limit)s OFFSET %(offset)s

-- name: insert_template --
-- A new template; nothing is answered when its code is taken.
INSERT INTO offer_templates (code, name, category, value_kind, value, validity_days, eligibility, channels, subject,
                             reason, message, occasion, conversion_source, holdout_share, rule_holdouts, free_visit,
                             active)
VALUES (%(code)s, %(name)s, %(category)s, %(value_kind)s, %(value)s, %(validity_days)s, %(eligibility)s,
        %(channels)s, %(subject)s, %(reason)s, %(message)s, %(occasion)s, %(conversion_source)s, %(holdout_share)s,
        %(rule_holdouts)s, %(free_visit)s, %(active)s)
ON CONFLICT (code) DO NOTHING
RETURNING id

-- name: update_template --
-- Change a template (offers already issued keep their own value and words); answers its id.
UPDATE offer_templates SET name = %(name)s, category = %(category)s, value_kind = %(value_kind)s, value = %(value)s,
       validity_days = %(validity_days)s, eligibility = %(eligibility)s, channels = %(channels)s,
       subject = %(subject)s, reason = %(reason)s, message = %(message)s, occasion = %(occasion)s,
       conversion_source = %(conversion_source)s, holdout_share = %(holdout_share)s,
       rule_holdouts = %(rule_holdouts)s, free_visit = %(free_visit)s, active = %(active)s, updated_at = now()
WHERE code = %(code)s
RETURNING id

-- name: issued_by_key --
-- What an issue key already made: an offer or a place in the holdout.
SELECT 'offer' AS kind, id FROM offers WHERE issue_key = %(issue_key)s
UNION ALL
SELECT 'holdout', id FROM offer_holdouts WHERE issue_key = %(issue_key)s
LIMIT 1

-- name: insert_offer --
-- Issue an offer once per key; nothing is answered when the key was issued before.
INSERT INTO offers (code, template_id, customer_id, device_id, rule_id, detection_id, issue_key, segment, status,
                    status_reason, reason, value_kind, value, issued_at, window_ends_at)
VALUES (%(code)s, %(template_id)s, %(customer_id)s, %(device_id)s, %(rule_id)s, %(detection_id)s, %(issue_key)s,
        %(segment)s, 'held', 'before the contact policy', %(reason)s, %(value_kind)s, %(value)s, %(issued_at)s,
        %(window_ends_at)s)
ON CONFLICT (issue_key) DO NOTHING
RETURNING id

-- name: insert_holdout --
-- Keep an eligible customer out of an offer, once per key; nothing is answered when the key was issued before.
INSERT INTO offer_holdouts (template_id, customer_id, device_id, rule_id, detection_id, issue_key, segment,
                            assigned_at, window_ends_at)
VALUES (%(template_id)s, %(customer_id)s, %(device_id)s, %(rule_id)s, %(detection_id)s, %(issue_key)s, %(segment)s,
        %(assigned_at)s, %(window_ends_at)s)
ON CONFLICT (issue_key) DO NOTHING
RETURNING id

-- name: set_gate --
-- The contact policy's verdict on an offer: held, blocked, or issued on a channel from a time, until its expiry.
UPDATE offers SET status = %(status)s, status_reason = %(status_reason)s, channel = %(channel)s,
       send_at = %(send_at)s, expires_at = %(expires_at)s, gate_checks = %(gate_checks)s, updated_at = now()
WHERE id = %(offer_id)s

-- name: list_offers --
-- Offers with their template's code, filtered; newest first; `total` counts all matches.
SELECT o.*, t.code AS template, count(*) OVER () AS total
FROM offers o JOIN offer_templates t ON t.id = o.template_id
WHERE (%(offer_id)s::bigint IS NULL OR o.id = %(offer_id)s)
  AND (%(code)s::text IS NULL OR o.code = %(code)s)
  AND (%(customer_id)s::bigint IS NULL OR o.customer_id = %(customer_id)s)
  AND (%(status)s::text IS NULL OR o.status = %(status)s)
  AND (%(template)s::text IS NULL OR t.code = %(template)s)
  AND (%(rule_id)s::text IS NULL OR o.rule_id = %(rule_id)s)
  AND (%(device_id)s::text IS NULL OR o.device_id = %(device_id)s)
ORDER BY o.issued_at DESC, o.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: lock_offer_by_code --
-- An offer found by its coupon code, locked for its redemption, with its template's conversion source.
SELECT o.*, t.code AS template, t.conversion_source
FROM offers o JOIN offer_templates t ON t.id = o.template_id
WHERE o.code = %(code)s
FOR UPDATE OF o

-- name: redeem --
-- Mark an offer redeemed, with what the customer paid.
UPDATE offers SET status = 'redeemed', redeemed_at = %(at)s, redeemed_amount = %(amount)s,
       status_reason = %(status_reason)s, updated_at = now()
WHERE id = %(offer_id)s

-- name: expiring --
-- Offers issued or delivered and past their expiry, locked (another engine skips them).
SELECT o.id, o.customer_id FROM offers o
WHERE o.status IN ('issued', 'delivered') AND o.expires_at <= %(now)s
ORDER BY o.expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: expire --
-- Mark an offer expired, saying why.
UPDATE offers SET status = 'expired', expired_at = %(at)s, status_reason = %(status_reason)s, updated_at = now()
WHERE id = %(offer_id)s

-- name: held --
-- Offers held back by the contact policy (service first), oldest first, locked.
SELECT o.*, t.code AS template FROM offers o JOIN offer_templates t ON t.id = o.template_id
WHERE o.status = 'held' ORDER BY o.id LIMIT %(limit)s
FOR UPDATE OF o SKIP LOCKED

-- name: delivered --
-- The offer's own message reached the customer's channel.
UPDATE offers SET status = 'delivered', delivered_at = %(at)s, status_reason = %(status_reason)s, updated_at = now()
WHERE id = %(offer_id)s AND status = 'issued'

-- name: undeliverable --
-- The offer's own message could not be sent: say so on the offer (it stays issued: the code is valid).
UPDATE offers SET status_reason = %(status_reason)s, updated_at = now()
WHERE id = %(offer_id)s AND status = 'issued'

-- name: endpoints_for_event --
-- Active webhook endpoints that asked for an event, oldest first.
SELECT id, name, url, secret FROM webhook_endpoints
WHERE active AND deleted_at IS NULL AND %(event)s = ANY(events) ORDER BY id

-- name: insert_endpoint --
-- Register a webhook endpoint; answers its id.
INSERT INTO webhook_endpoints (name, url, secret, events, private_network)
VALUES (%(name)s, %(url)s, %(secret)s, %(events)s, %(private_network)s)
RETURNING id

-- name: list_endpoints --
-- Webhook endpoints not deleted (without their secrets); `total` counts them.
SELECT id, name, url, events, active, private_network, created_at, count(*) OVER () AS total
FROM webhook_endpoints
WHERE deleted_at IS NULL AND (%(endpoint_id)s::bigint IS NULL OR id = %(endpoint_id)s)
ORDER BY id LIMIT %(limit)s OFFSET %(offset)s

-- name: delete_endpoint --
-- Delete a webhook endpoint: it stays as a record of where messages went, inactive and without its secret.
-- Answers its name and when it was deleted (also when it was deleted before); nothing when there is no such id.
UPDATE webhook_endpoints SET active = false, secret = '', deleted_at = coalesce(deleted_at, %(at)s)
WHERE id = %(endpoint_id)s
RETURNING name, deleted_at

-- name: cancel_endpoint_messages --
-- The messages to an endpoint not yet sent: cancelled, saying why; answers each one's offer and event.
UPDATE outbox SET status = 'cancelled', cancelled_at = %(at)s, cancel_reason = %(reason)s
WHERE endpoint_id = %(endpoint_id)s AND status = 'pending'
RETURNING offer_id, event

-- name: insert_message --
-- Put a rendered message in the outbox, once per idempotency key.
INSERT INTO outbox (offer_id, transport, endpoint_id, destination, event, idempotency_key, subject, body,
                    not_before, next_attempt_at, created_at)
VALUES (%(offer_id)s, %(transport)s, %(endpoint_id)s, %(destination)s, %(event)s, %(idempotency_key)s,
        %(subject)s, %(body)s, %(not_before)s, %(not_before)s, %(created_at)s)
ON CONFLICT (idempotency_key) DO NOTHING

-- name: claim_due --
-- Claim due messages, at most `per_channel` of each channel (SMTP, each webhook endpoint) so that one channel's
-- backlog never crowds out the others: each is leased until `lease_until` and counted as an attempt.
WITH due AS (
    SELECT id, transport, endpoint_id, next_attempt_at FROM outbox
    WHERE status = 'pending' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at, id
    LIMIT %(scan)s
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT id, row_number() OVER (PARTITION BY transport, coalesce(endpoint_id, 0)
                                  ORDER BY next_attempt_at, id) AS place
    FROM due
)
UPDATE outbox o SET attempts = o.attempts + 1, next_attempt_at = %(lease_until)s
FROM ranked r
WHERE o.id = r.id AND r.place <= %(per_channel)s
RETURNING o.id, o.offer_id, o.transport, o.endpoint_id, o.destination, o.event, o.idempotency_key, o.subject,
          o.body, o.attempts, o.created_at,
          (SELECT e.secret FROM webhook_endpoints e WHERE e.id = o.endpoint_id) AS secret,
          coalesce((SELECT e.private_network FROM webhook_endpoints e WHERE e.id = o.endpoint_id), false)
              AS private_network

-- name: mark_sent --
-- A message sent.
UPDATE outbox SET status = 'sent', sent_at = %(at)s, last_error = NULL WHERE id = %(message_id)s

-- name: mark_failed --
-- A message that failed: tried again at `retry_at`, or dead when that is NULL.
UPDATE outbox SET status = CASE WHEN %(retry_at)s::timestamptz IS NULL THEN 'dead' ELSE 'pending' END,
       next_attempt_at = coalesce(%(retry_at)s, next_attempt_at), last_error = %(error)s
WHERE id = %(message_id)s

-- name: put_back --
-- A claimed message not tried (its channel was found down in this run): due again at `retry_at`, uncounted.
UPDATE outbox SET attempts = attempts - 1, next_attempt_at = %(retry_at)s, last_error = %(error)s
WHERE id = %(message_id)s

-- name: cancel_pending --
-- Messages of an offer that were not sent and must not be any more (it expired first).
UPDATE outbox SET status = 'dead', last_error = %(error)s
WHERE offer_id = %(offer_id)s AND status = 'pending' AND event IN ('offer.email', 'offer.sms')

-- name: list_outbox --
-- The outbox, newest first, filtered; `total` counts all matches.
SELECT id, offer_id, transport, destination, event, idempotency_key, subject, status, not_before, next_attempt_at,
       attempts, last_error, sent_at, cancelled_at, cancel_reason, created_at, count(*) OVER () AS total
FROM outbox
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(offer_id)s::bigint IS NULL OR offer_id = %(offer_id)s)
ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: report --
-- Offered and held-out customers per template, rule or segment: `treated` every offer made (the uplift compares
-- them, whatever the contact policy did), `issued` those it let out (not held or blocked), what was delivered,
-- redeemed and expired, and how many of each group converted (spent what the template counts, within the offer's window).
WITH assignments AS (
    SELECT 'treated' AS grp, o.template_id, o.rule_id, o.segment, o.customer_id, o.issued_at AS assigned_at,
           o.window_ends_at, o.status, o.delivered_at, o.redeemed_at, o.redeemed_amount
    FROM offers o
    WHERE (%(since)s::timestamptz IS NULL OR o.issued_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR o.issued_at < %(until)s)
    UNION ALL
    SELECT 'holdout', h.template_id, h.rule_id, h.segment, h.customer_id, h.assigned_at, h.window_ends_at,
           NULL, NULL, NULL, NULL
    FROM offer_holdouts h
    WHERE (%(since)s::timestamptz IS NULL OR h.assigned_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR h.assigned_at < %(until)s)
), scored AS (
    SELECT a.*, t.code AS template, conversion.revenue IS NOT NULL AS converted,
           coalesce(conversion.revenue, 0) AS window_revenue
    FROM assignments a
    JOIN offer_templates t ON t.id = a.template_id
    LEFT JOIN LATERAL (
        SELECT sum(s.amount) AS revenue FROM spend_ledger s
        WHERE s.customer_id = a.customer_id AND s.amount > 0 AND s.at >= a.assigned_at AND s.at <= a.window_ends_at
          AND (t.conversion_source IS NULL OR s.source = t.conversion_source)
        HAVING count(*) > 0
    ) conversion ON true
)
SELECT CASE %(group_by)s WHEN 'template' THEN template WHEN 'rule' THEN coalesce(rule_id, '(no rule)')
                         ELSE segment END AS key,
       count(*) FILTER (WHERE grp = 'treated') AS treated,
       count(*) FILTER (WHERE grp = 'holdout') AS holdout,
       count(*) FILTER (WHERE grp = 'treated' AND status NOT IN ('held', 'blocked')) AS issued,
       count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered,
       count(*) FILTER (WHERE redeemed_at IS NOT NULL) AS redeemed,
       count(*) FILTER (WHERE status = 'expired') AS expired,
       count(*) FILTER (WHERE status = 'held') AS held,
       count(*) FILTER (WHERE status = 'blocked') AS blocked,
       coalesce(sum(redeemed_amount), 0) AS revenue,
       count(*) FILTER (WHERE grp = 'treated' AND converted) AS treated_converted,
       count(*) FILTER (WHERE grp = 'holdout' AND converted) AS holdout_converted,
       coalesce(sum(window_revenue) FILTER (WHERE grp = 'treated'), 0) AS treated_revenue,
       coalesce(sum(window_revenue) FILTER (WHERE grp = 'holdout'), 0) AS holdout_revenue
FROM scored
GROUP BY 1
ORDER BY 1

-- name: cancel_customer_messages --
-- A customer's offer messages not yet sent (e-mail, text message): cancelled, saying why; answers their offers.
UPDATE outbox m SET status = 'cancelled', cancelled_at = %(at)s, cancel_reason = %(reason)s
FROM offers o
WHERE m.offer_id = o.id AND o.customer_id = %(customer_id)s AND m.status = 'pending'
  AND m.event IN ('offer.email', 'offer.sms')
RETURNING m.offer_id

-- name: block_customer_offers --
-- A customer's offers not yet in their hands (held, or issued and not delivered): blocked, saying why.
UPDATE offers SET status = 'blocked', status_reason = %(reason)s, updated_at = now()
WHERE customer_id = %(customer_id)s AND status IN ('held', 'issued')
RETURNING id

-- name: cancel_unconsented --
-- Offer messages not yet sent whose customer has since withdrawn consent to marketing on their channel (the
-- consents as customers/ keeps them, read right before sending): cancelled, saying when and how it was withdrawn;
-- their offers, not yet delivered, are blocked with the same words.
WITH cancelled AS (
    UPDATE outbox m SET status = 'cancelled', cancelled_at = %(now)s,
           cancel_reason = format('consent to marketing by %%s withdrawn on %%s UTC (%%s)', cc.channel,
                                  to_char(cc.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), cc.source)
    FROM offers o, customer_consents cc
    WHERE m.offer_id = o.id AND m.status = 'pending' AND m.event IN ('offer.email', 'offer.sms')
      AND cc.customer_id = o.customer_id AND cc.purpose = 'marketing' AND cc.channel = o.channel AND NOT cc.granted
    RETURNING m.offer_id, m.cancel_reason
)
UPDATE offers o SET status = 'blocked', status_reason = 'not sent: ' || c.cancel_reason, updated_at = now()
FROM cancelled c
WHERE o.id = c.offer_id AND o.status = 'issued'
RETURNING o.id
