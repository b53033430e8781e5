-- Tokens expire, can be listed without being shown, and revoked; who created and who revoked each is kept.

ALTER TABLE api_tokens ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
-- the first characters of the token, enough to recognise it in a list (never enough to use it)
ALTER TABLE api_tokens ADD COLUMN prefix text;
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
-- tokens issued before expiry existed live 90 days more, as a new one does by default
UPDATE api_tokens SET expires_at = now() + interval '90 days';
ALTER TABLE api_tokens ALTER COLUMN expires_at SET NOT NULL;
ALTER TABLE api_tokens ADD COLUMN created_by text;
ALTER TABLE api_tokens ADD COLUMN revoked_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN revoked_by text;
CREATE INDEX api_tokens_prefix_idx ON api_tokens (prefix);
