-- Who wrote each rule and each of its versions: the person whose API request did it (the token's name, set for
-- the request's transaction as careloop.actor), or NULL for what no person wrote (the built-in catalog loaded by
-- `careloop migrate --with-catalog`).

ALTER TABLE rules ADD COLUMN changed_by text;
ALTER TABLE rule_versions ADD COLUMN changed_by text DEFAULT NULLIF(current_setting('careloop.actor', true), '');

CREATE FUNCTION rules_changed_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_by := NULLIF(current_setting('careloop.actor', true), '');
    RETURN NEW;
END
$$;

CREATE TRIGGER rules_changed_by BEFORE INSERT OR UPDATE ON rules FOR EACH ROW EXECUTE FUNCTION rules_changed_by();
