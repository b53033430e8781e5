-- Every evaluation reads which detections are open, and since when, for its rules over the whole fleet.
-- With opened_at in the open-detection index that read is an index-only scan: detection rows are wide
-- (explanation, actions), and 100,000 open detections fill about 100 MB of table but a few MB of index.
-- Same name, same key and the same uniqueness as 003's index.
CREATE UNIQUE INDEX detections_open_idx ON detections (rule_id, device_id) INCLUDE (opened_at) WHERE cleared_at IS NULL;
DROP INDEX detections_one_open_idx;
ALTER INDEX detections_open_idx RENAME TO detections_one_open_idx;
