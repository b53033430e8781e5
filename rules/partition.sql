-- The one definition of which engine partition a device belongs to: its id's 64-bit text hash (seed 0) modulo the
-- number of partitions, made non-negative. PostgreSQL computes it, so every engine agrees whatever asks.
--   index, count  the partition I/N
--   device_ids    text[] to choose among, or NULL for every registered device

-- name: devices_in_partition --
-- The registered devices of partition index/count (among device_ids when given), in byte order of id.
SELECT d.id
FROM devices d
WHERE (%(device_ids)s::text[] IS NULL OR d.id = ANY(%(device_ids)s::text[]))
  AND mod(mod(hashtextextended(d.id, 0), %(count)s) + %(count)s, %(count)s) = %(index)s
ORDER BY d.id COLLATE "C"

-- name: lock_partition_evaluation --
-- One evaluation at a time per partition: shared with the other partitions, exclusive with a whole-fleet
-- evaluation (which takes the same key exclusively, rules/queries.sql lock_evaluation) and with its own partition.
SELECT pg_advisory_xact_lock_shared(hashtext('careloop.rules.evaluation')),
       pg_advisory_xact_lock(hashtext('careloop.rules.evaluation'), hashtext(%(partition)s))
