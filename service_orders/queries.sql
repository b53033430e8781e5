-- name: insert_order --
-- Open an order unless one of its device and fault class is open; answers its id, or nothing.
INSERT INTO service_orders (device_id, customer_id, type, fault_class, priority, reason, skill, source,
                            explanation, detection_ids, action_key, opened_at, sla_due_at, updated_at)
VALUES (%(device_id)s, %(customer_id)s, %(type)s, %(fault_class)s, %(priority)s, %(reason)s, %(skill)s,
        %(source)s, %(explanation)s, %(detection_ids)s, %(action_key)s, %(opened_at)s, %(sla_due_at)s, now())
ON CONFLICT (device_id, fault_class) WHERE status NOT IN ('completed', 'cancelled') DO NOTHING
RETURNING id

-- name: open_order_of_class --
-- The open order of a device and fault class, locked for the change that follows.
SELECT id FROM service_orders
WHERE device_id = %(device_id)s AND fault_class = %(fault_class)s AND status NOT IN ('completed', 'cancelled')
FOR UPDATE

-- name: order_by_action --
-- The order an action opened or joined, found by the action's key.
SELECT id FROM service_orders WHERE action_key = %(action_key)s
UNION ALL
SELECT (detail->>'order_id')::bigint FROM service_order_history
WHERE change = 'joined' AND detail->>'action_key' = %(action_key)s
LIMIT 1

-- name: join_order --
-- A further detection of the same fault joins the open order; a higher priority is kept.
UPDATE service_orders SET
    detection_ids = CASE WHEN %(detection_id)s::bigint IS NULL OR %(detection_id)s = ANY(detection_ids)
                         THEN detection_ids ELSE detection_ids || %(detection_id)s::bigint END,
    priority = CASE WHEN array_position(ARRAY['low', 'normal', 'high', 'urgent'], %(priority)s)
                       > array_position(ARRAY['low', 'normal', 'high', 'urgent'], priority)
                    THEN %(priority)s ELSE priority END,
    updated_at = now()
WHERE id = %(order_id)s

-- name: lock_order --
-- An order's row, locked for a change.
SELECT * FROM service_orders WHERE id = %(order_id)s FOR UPDATE

-- name: list_orders --
-- Orders with their device's region and owner and where they stand against their SLA, filtered; most urgent
-- first (SLA due time); `total` counts all.
-- The filter and the sort carry each order's id and due time alone, and only the page's orders are read whole:
-- counted and sorted whole, the dispatch board's 6,000 open orders spilled to disk and took most of its time.
-- Not materialized: the page is then read in the order of service_orders_board_idx, stopping at its limit, and the
-- count from the status index, where a materialized list of every match was scanned and sorted (12 -> 5 ms for
-- the board's 500 of 6,000 open orders beside 60,000 closed ones).
-- Region and owner are looked up per order in the page, by primary key, for the same reason: joined, the
-- planner hashes the whole devices and customers tables. The order's explanation only where asked (one
-- order's page): a list carries the rest of each order (models.OrderSummary).
WITH matching AS NOT MATERIALIZED (
    SELECT o.id, o.status IN ('completed', 'cancelled') AS closed, o.sla_due_at
    FROM service_orders o
    WHERE (%(order_id)s::bigint IS NULL OR o.id = %(order_id)s)
      AND (%(status)s::text IS NULL OR o.status = %(status)s
           OR (%(status)s = 'open' AND o.status NOT IN ('completed', 'cancelled')))
      AND (%(device_id)s::text IS NULL OR o.device_id = %(device_id)s)
      AND (%(customer_id)s::bigint IS NULL OR o.customer_id = %(customer_id)s)
      AND (%(technician_id)s::bigint IS NULL OR o.technician_id = %(technician_id)s)
      AND (%(region)s::text IS NULL OR (SELECT d.region FROM devices d WHERE d.id = o.device_id) = %(region)s)
      AND (%(skill)s::text IS NULL OR o.skill = %(skill)s)
      AND (%(priority)s::text IS NULL OR o.priority = %(priority)s)
      AND (%(overdue)s::boolean IS NULL
           OR %(overdue)s = (o.status NOT IN ('completed', 'cancelled') AND o.sla_due_at < %(now)s))
), page AS (
    SELECT * FROM matching ORDER BY closed, sla_due_at, id LIMIT %(limit)s OFFSET %(offset)s
)
SELECT o.id, o.device_id, o.customer_id, o.type, o.fault_class, o.priority, o.status, o.reason, o.skill, o.source,
       o.detection_ids, o.opened_at, o.sla_due_at, o.escalations, o.technician_id, o.appointment_start,
       o.appointment_end, o.completed_at, o.outcome, o.parts, o.cost, o.rating, o.verification, o.verify_by,
       o.reopened, CASE WHEN %(explained)s THEN o.explanation END AS explanation,
       (SELECT d.region FROM devices d WHERE d.id = o.device_id) AS region,
       c.name AS customer_name, c.phone AS customer_phone,
       -- where the order stands against its SLA: met or missed once closed; overdue, due soon (less than a
       -- share of the SLA, or a most, left: the service's DUE_SOON and DUE_SOON_AT_MOST) or ok while open
       CASE WHEN o.status IN ('completed', 'cancelled') THEN
                CASE WHEN coalesce(o.completed_at, o.updated_at) <= o.sla_due_at THEN 'met' ELSE 'missed' END
            WHEN o.sla_due_at < %(now)s THEN 'overdue'
            WHEN o.sla_due_at - %(now)s
                 <= least((o.sla_due_at - o.opened_at) * %(due_soon_share)s, %(due_soon_at_most)s) THEN 'due_soon'
            ELSE 'ok' END AS sla_state,
       CASE WHEN o.status NOT IN ('completed', 'cancelled')
            THEN extract(epoch FROM o.sla_due_at - %(now)s)::float8 END AS time_left_s,
       (SELECT count(*) FROM matching) AS total
FROM page p
JOIN service_orders o ON o.id = p.id
LEFT JOIN customers c ON c.id = o.customer_id
ORDER BY p.closed, p.sla_due_at, p.id

-- name: order_history --
-- An order's changes, oldest first.
SELECT at, actor, actor_role, change, from_status, to_status, detail
FROM service_order_history WHERE order_id = %(order_id)s ORDER BY id

-- name: record_history --
-- Keep one change of an order: what, who and when.
INSERT INTO service_order_history (order_id, at, actor, actor_role, change, from_status, to_status, detail)
VALUES (%(order_id)s, %(at)s, %(actor)s, %(actor_role)s, %(change)s, %(from_status)s, %(to_status)s, %(detail)s)

-- name: set_status --
-- Move an order to a status.
UPDATE service_orders SET status = %(status)s, updated_at = now() WHERE id = %(order_id)s

-- name: set_appointment --
-- Give an order a technician and a visit window.
UPDATE service_orders SET technician_id = %(technician_id)s, appointment_start = %(start)s,
       appointment_end = %(end)s, status = %(status)s, updated_at = now()
WHERE id = %(order_id)s

-- name: complete_order --
-- Record a completed visit; the telemetry confirms it by verify_by where the order came from detections.
UPDATE service_orders SET status = 'completed', completed_at = %(at)s, outcome = %(outcome)s, parts = %(parts)s,
       cost = %(cost)s, paid = %(paid)s, rating = %(rating)s, verify_by = %(verify_by)s,
       verification = %(verification)s, updated_at = now()
WHERE id = %(order_id)s

-- name: overdue_orders --
-- Open orders past their SLA due time and not escalated within the last escalation interval, locked.
SELECT * FROM service_orders
WHERE status NOT IN ('completed', 'cancelled') AND sla_due_at < %(now)s
  AND (escalated_at IS NULL OR escalated_at < %(now)s - %(every)s::interval)
ORDER BY sla_due_at
FOR UPDATE SKIP LOCKED

-- name: escalate --
-- Raise an overdue order's priority (one step, up to urgent) and count the escalation.
UPDATE service_orders SET priority = %(priority)s, escalations = escalations + 1, escalated_at = %(now)s,
       updated_at = now()
WHERE id = %(order_id)s

-- name: completions_to_verify --
-- Completed orders whose verification is pending, locked.
SELECT * FROM service_orders
WHERE verification = 'pending' AND status = 'completed'
ORDER BY verify_by
FOR UPDATE SKIP LOCKED

-- name: set_verification --
-- The telemetry's verdict on a completed order.
UPDATE service_orders SET verification = %(verification)s, updated_at = now() WHERE id = %(order_id)s

-- name: reopen --
-- A completed order whose fault did not clear: open again, flagged.
UPDATE service_orders SET status = 'new', verification = 'not_fixed', reopened = reopened + 1,
       technician_id = NULL, appointment_start = NULL, appointment_end = NULL, completed_at = NULL,
       priority = CASE WHEN priority IN ('low', 'normal') THEN 'high' ELSE priority END,
       sla_due_at = %(sla_due_at)s, updated_at = now()
WHERE id = %(order_id)s

-- name: insert_technician --
-- Register a technician; answers the id.
INSERT INTO technicians (name, phone, email, skills, region, timezone, work_start, work_end, work_days,
                         daily_capacity)
VALUES (%(name)s, %(phone)s, %(email)s, %(skills)s, %(region)s, %(timezone)s, %(work_start)s, %(work_end)s,
        %(work_days)s, %(daily_capacity)s)
RETURNING id

-- name: list_technicians --
-- Technicians with their open orders, filtered by skill and region.
SELECT t.*, (SELECT count(*) FROM service_orders o
             WHERE o.technician_id = t.id AND o.status NOT IN ('completed', 'cancelled')) AS open_orders,
       count(*) OVER () AS total
FROM technicians t
WHERE (%(technician_id)s::bigint IS NULL OR t.id = %(technician_id)s)
  AND (%(skill)s::text IS NULL OR %(skill)s = ANY(t.skills))
  AND (%(region)s::text IS NULL OR t.region = %(region)s)
  AND (%(active)s::boolean IS NULL OR t.active = %(active)s)
ORDER BY t.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: lock_technician --
-- A technician, locked while a window in their calendar is booked (two bookings take turns).
SELECT id FROM technicians WHERE id = %(technician_id)s FOR UPDATE

-- name: bookings --
-- A technician's booked visit windows from a time on.
SELECT appointment_start, appointment_end FROM service_orders
WHERE technician_id = %(technician_id)s AND appointment_end > %(since)s
  AND status NOT IN ('completed', 'cancelled') AND id <> coalesce(%(except_order)s::bigint, -1)
ORDER BY appointment_start

-- name: insert_call_task --
-- Open a call task; a retried action finds the one it opened (nothing is answered then).
INSERT INTO call_tasks (order_id, customer_id, device_id, phone, reason, script, status, due_at, policy_reason,
                        action_key)
VALUES (%(order_id)s, %(customer_id)s, %(device_id)s, %(phone)s, %(reason)s, %(script)s, %(status)s,
        %(due_at)s, %(policy_reason)s, %(action_key)s)
ON CONFLICT (action_key) DO NOTHING
RETURNING id

-- name: call_task_by_action --
-- The call task an action opened.
SELECT id FROM call_tasks WHERE action_key = %(action_key)s

-- name: list_call_tasks --
-- Call tasks with the customer's name, filtered; due first.
SELECT t.*, c.name AS customer_name, count(*) OVER () AS total
FROM call_tasks t
LEFT JOIN customers c ON c.id = t.customer_id
LEFT JOIN devices d ON d.id = t.device_id
LEFT JOIN service_orders o ON o.id = t.order_id
WHERE (%(task_id)s::bigint IS NULL OR t.id = %(task_id)s)
  AND (%(status)s::text IS NULL OR t.status = %(status)s)
  AND (%(device_id)s::text IS NULL OR t.device_id = %(device_id)s)
  AND (%(customer_id)s::bigint IS NULL OR t.customer_id = %(customer_id)s)
  AND (%(order_id)s::bigint IS NULL OR t.order_id = %(order_id)s)
  AND (%(region)s::text IS NULL OR d.region = %(region)s)
  AND (%(technician_id)s::bigint IS NULL OR o.technician_id = %(technician_id)s)
  AND (%(due_before)s::timestamptz IS NULL OR t.due_at <= %(due_before)s)
ORDER BY (t.status = 'done'), t.due_at, t.id
LIMIT %(limit)s OFFSET %(offset)s

-- name: record_call_outcome --
-- A call made: its outcome; calls to be tried again stay open, due at the retry time.
UPDATE call_tasks SET outcome = %(outcome)s, attempts = attempts + 1, notes = coalesce(%(notes)s, notes),
       status = %(status)s, due_at = coalesce(%(retry_at)s, due_at), updated_at = now()
WHERE id = %(task_id)s AND status <> 'done'
RETURNING id
