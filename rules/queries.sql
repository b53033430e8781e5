-- name: insert_rule --
-- Create a rule at version 1; answers nothing when the id is taken.
INSERT INTO rules (id, version, enabled, builtin, document)
VALUES (%(id)s, 1, %(enabled)s, %(builtin)s, %(document)s)
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: update_rule --
-- Replace a rule's document, raising its version; answers the new version.
UPDATE rules SET document = %(document)s, enabled = %(enabled)s, version = version + 1, updated_at = now()
WHERE id = %(id)s
RETURNING version

-- name: record_version --
-- Keep a version of a rule's document.
INSERT INTO rule_versions (rule_id, version, enabled, document)
SELECT id, version, enabled, document FROM rules WHERE id = %(id)s
ON CONFLICT DO NOTHING

-- name: get_rule --
-- One rule, locked for update when asked.
SELECT id, version, enabled, builtin, document, created_at, updated_at FROM rules WHERE id = %(id)s

-- name: list_rules --
-- Rules, optionally only the enabled ones.
SELECT id, version, enabled, builtin, document, created_at, updated_at, count(*) OVER () AS total
FROM rules WHERE (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s)
ORDER BY id LIMIT %(limit)s OFFSET %(offset)s

-- name: rule_versions --
-- Every kept version of a rule, newest first.
SELECT version, enabled, document, created_at FROM rule_versions WHERE rule_id = %(id)s ORDER BY version DESC
