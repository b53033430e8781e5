-- A device cannot be given to an erased customer (an anonymous stub: nobody to own it). Checked here, beside the
-- foreign key that checks the owner exists, so the devices domain needs no look into customers; the share lock
-- waits for an erasure under way (it locks the customer's row) and then sees it.

CREATE FUNCTION devices_owner_not_erased() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.owner_id IS NOT NULL
       AND (SELECT erased_at FROM customers WHERE id = NEW.owner_id FOR SHARE) IS NOT NULL THEN
        RAISE EXCEPTION 'customer % was erased', NEW.owner_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'devices_owner_not_erased';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER devices_owner_not_erased BEFORE INSERT OR UPDATE OF owner_id ON devices
    FOR EACH ROW EXECUTE FUNCTION devices_owner_not_erased();
