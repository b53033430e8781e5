-- A revision number per slow-changing part of the rule engine's facts, bumped in the transaction that changes it.
--
-- The engine reads the whole fleet every minute. The devices' own columns (model, kind, purchase date, the
-- owner's birthday) and the hourly trend fits rarely change between two runs; the engine keeps them in memory
-- and reads them again only when their revision has moved. The bump is an UPDATE of one row, so it commits (or
-- rolls back) with the change itself: a reader that sees the new revision sees the new rows. The number comes
-- from a sequence, so a rolled-back change's revision is never used again for other rows.
CREATE SEQUENCE fact_revision_numbers;
CREATE TABLE fact_revisions (
    name     text PRIMARY KEY,
    revision bigint NOT NULL DEFAULT nextval('fact_revision_numbers')
);
INSERT INTO fact_revisions (name) VALUES ('devices'), ('trend_fits');

CREATE FUNCTION bump_fact_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fact_revisions SET revision = nextval('fact_revision_numbers') WHERE name = TG_ARGV[0];
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_fact_revision AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION bump_fact_revision('devices');
-- A device's facts carry its owner's birthday.
CREATE TRIGGER customers_fact_revision AFTER UPDATE OF birthday OR DELETE OR TRUNCATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_fact_revision('devices');
CREATE TRIGGER trend_fits_fact_revision AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON trend_fits
    FOR EACH STATEMENT EXECUTE FUNCTION bump_fact_revision('trend_fits');
