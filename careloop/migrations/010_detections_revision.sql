-- The detections' revision, bumped by every statement that opens, clears or removes detections.
--
-- A whole-fleet evaluation reads which detections are open while its facts load, before it takes the
-- evaluation lock; once it holds the lock it compares this revision with the one read beside that state,
-- and reads the state again only if another evaluation changed it in between. (Acknowledging does not
-- change which detections are open: it does not move the revision.)
INSERT INTO fact_revisions (name) VALUES ('detections');

CREATE TRIGGER detections_fact_revision AFTER INSERT OR UPDATE OF opened_at, cleared_at OR DELETE OR TRUNCATE
    ON detections FOR EACH STATEMENT EXECUTE FUNCTION bump_fact_revision('detections');
