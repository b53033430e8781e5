-- name: upsert_heartbeat --
-- Write a process's heartbeat: its row is created on the first beat and replaced on every later one.
INSERT INTO process_heartbeats AS beat
    (process, kind, host, pid, started_at, beat_at, interval_s, last_commit_at, lag_s, queue_depth, details)
VALUES (%(process)s, %(kind)s, %(host)s, %(pid)s, %(started_at)s, %(beat_at)s, %(interval_s)s,
        %(last_commit_at)s, %(lag_s)s, %(queue_depth)s, %(details)s)
ON CONFLICT (process) DO UPDATE SET
    kind = excluded.kind, host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
    beat_at = excluded.beat_at, interval_s = excluded.interval_s, last_commit_at = excluded.last_commit_at,
    lag_s = excluded.lag_s, queue_depth = excluded.queue_depth, details = excluded.details

-- name: delete_heartbeat --
-- Forget a process that stopped cleanly.
DELETE FROM process_heartbeats WHERE process = %(process)s

-- name: heartbeats_on_host --
-- The other processes of one kind that said they run on this host, for removing the rows of dead ones.
SELECT process, pid FROM process_heartbeats WHERE kind = %(kind)s AND host = %(host)s AND process <> %(process)s

-- name: process_heartbeats --
-- Every process's last heartbeat, by kind and name.
SELECT process, kind, host, pid, started_at, beat_at, interval_s, last_commit_at, lag_s, queue_depth, details
FROM process_heartbeats
ORDER BY kind, process
