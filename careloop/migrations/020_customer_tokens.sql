-- A customer-facing token: bound to one customer, it sees only that customer's profile, devices, offers and
-- coupons (careloop.auth's permission table). Only a customer's token names a customer, and every one does.

ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('admin', 'dispatcher', 'marketer', 'technician', 'customer'));
-- customers are never deleted (an erased one stays as an anonymous stub), so the reference always holds
ALTER TABLE api_tokens ADD COLUMN customer_id bigint REFERENCES customers (id);
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_customer_only_for_customers
    CHECK ((role = 'customer') = (customer_id IS NOT NULL));
CREATE INDEX api_tokens_customer_idx ON api_tokens (customer_id) WHERE customer_id IS NOT NULL;
