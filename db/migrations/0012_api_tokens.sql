-- API tokens of mes-api (`mes-api token create|list|revoke`): a token `emt_<id>_<secret>` is
-- found by its id and proven by its secret, of which only a salted SHA-256 is kept. Revoked
-- tokens stay (revoked_at) so the audit trail keeps their names.
CREATE TABLE api_tokens (
    id           text        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    name         text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    role         text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    salt         bytea       NOT NULL,
    secret_hash  bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_api') THEN
        GRANT SELECT, INSERT ON api_tokens TO edge_mes_api;
        GRANT UPDATE (revoked_at, last_used_at) ON api_tokens TO edge_mes_api;
    END IF;
END $$;
