-- The API's login group. The public API only reads; operators change a few things through it:
-- acknowledgements, the registry and thresholds, replays of rejected payloads. A deployment logs
-- the API in as `pantau_api`, a member of this group, instead of the database owner, so that a
-- flaw in the API can neither drop nor rewrite what it has no business changing. The group role is
-- cluster-wide, so it may exist already (another Pantau database on the same server).
DO $$
BEGIN
    CREATE ROLE pantau_operator NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT pantau_readonly TO pantau_operator;

-- Keys are made and revoked with `pantau keys` (as the owner); the API checks them.
GRANT USAGE ON SCHEMA pantau_private TO pantau_operator;
GRANT SELECT, UPDATE (last_used_at) ON pantau_private.api_keys TO pantau_operator;

GRANT INSERT, UPDATE ON sensors TO pantau_operator;
GRANT INSERT ON flood_thresholds TO pantau_operator;
GRANT UPDATE (acknowledged_at, acknowledged_by) ON alerts TO pantau_operator;
GRANT INSERT ON alert_events TO pantau_operator;
-- A replayed payload goes through the same write path as ingest's.
GRANT INSERT ON readings TO pantau_operator;
GRANT INSERT, UPDATE ON latest_readings TO pantau_operator;
GRANT INSERT, UPDATE, DELETE ON rejected_payloads TO pantau_operator;
DO $$
BEGIN
    -- Plain PostgreSQL mode notes written time ranges for the rollup refresh.
    IF to_regclass('rollup_invalidations') IS NOT NULL THEN
        GRANT INSERT ON rollup_invalidations TO pantau_operator;
    END IF;
END
$$;
