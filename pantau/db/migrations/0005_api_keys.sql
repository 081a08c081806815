-- Operator API keys. Only a SHA-256 digest of each key is kept: the key itself is shown once,
-- when it is made. Keys are 32 random bytes, so a fast hash is enough (there is no dictionary
-- to try) and a request finds its key with one index lookup.
--
-- A schema of its own: `pantau db migrate` grants the read-only role (Grafana, the public API's
-- readers) SELECT on every table of `public`, and key digests and operator names are none of
-- its business.
CREATE SCHEMA IF NOT EXISTS pantau_private;

CREATE TABLE pantau_private.api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    key_prefix   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
