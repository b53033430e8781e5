-- name: technician_exists --
-- Whether a technician exists, before a token names them.
SELECT 1 FROM technicians WHERE id = %(id)s

-- name: customer_erased_at --
-- Whether a customer exists (a row) and whether they were erased, before a token names them.
SELECT erased_at FROM customers WHERE id = %(id)s

-- name: insert_token --
-- Store a new token's hash (never the token), the start of it for lists, and when it expires.
INSERT INTO api_tokens (token_sha256, prefix, role, name, technician_id, customer_id, expires_at, created_by)
VALUES (%(token_sha256)s, %(prefix)s, %(role)s, %(name)s, %(technician_id)s, %(customer_id)s,
        now() + %(expires_in)s, %(created_by)s)

-- name: token_by_hash --
-- The token a bearer presented, by its hash, with what decides whether it is still admitted.
SELECT id, role, name, technician_id, customer_id, expires_at, revoked_at FROM api_tokens WHERE token_sha256 = %(token_sha256)s

-- name: list_tokens --
-- Every token without the token itself, newest first.
SELECT id, prefix, role, name, technician_id, customer_id, created_at, created_by, expires_at, revoked_at, revoked_by
FROM api_tokens
WHERE %(include_revoked)s OR revoked_at IS NULL
ORDER BY created_at DESC, id DESC

-- name: token_by_id --
-- One token by its id, without the token itself.
SELECT id, prefix, role, name, technician_id, customer_id, created_at, created_by, expires_at, revoked_at, revoked_by
FROM api_tokens WHERE id = %(id)s

-- name: tokens_by_prefix --
-- The tokens whose listed start matches the start of what was given.
SELECT id, prefix FROM api_tokens WHERE prefix = %(prefix)s OR starts_with(prefix, %(prefix)s)

-- name: revoke_token --
-- Revoke a token (the first revocation is the one kept), recording who did it.
UPDATE api_tokens SET revoked_at = now(), revoked_by = %(by)s WHERE id = %(id)s AND revoked_at IS NULL

-- name: technician_devices --
-- The devices of the open orders assigned to a technician.
SELECT DISTINCT device_id FROM service_orders
WHERE technician_id = %(technician_id)s AND status NOT IN ('completed', 'cancelled')
ORDER BY device_id

-- name: technician_has_device --
-- Whether a device is on an open order assigned to the technician (the visit over, access ends).
SELECT 1 FROM service_orders
WHERE technician_id = %(technician_id)s AND device_id = %(value)s AND status NOT IN ('completed', 'cancelled')
LIMIT 1

-- name: technician_has_detection --
-- Whether a detection is about a device on an open order assigned to the technician.
SELECT 1 FROM detections d
WHERE d.id = %(value)s
  AND EXISTS (SELECT 1 FROM service_orders o WHERE o.technician_id = %(technician_id)s AND o.device_id = d.device_id
                                                AND o.status NOT IN ('completed', 'cancelled'))

-- name: technician_has_customer --
-- Whether a customer is the customer of an open order assigned to the technician (the visit over, access ends).
SELECT 1 FROM service_orders
WHERE technician_id = %(technician_id)s AND customer_id = %(value)s AND status NOT IN ('completed', 'cancelled')
LIMIT 1

-- name: technician_has_order --
-- Whether an order is assigned to the technician.
SELECT 1 FROM service_orders WHERE technician_id = %(technician_id)s AND id = %(value)s

-- name: customer_has_device --
-- Whether a device is owned by the customer.
SELECT 1 FROM devices WHERE id = %(value)s AND owner_id = %(customer_id)s

-- name: set_actor --
-- Name the person behind the transaction's changes, for what records who changed what (careloop.actor).
SELECT set_config('careloop.actor', %(name)s, true)
