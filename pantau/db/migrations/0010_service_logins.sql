-- Ingest and the alert service log in with their own logins, like the API: `pantau_ingest` in
-- the group `pantau_ingester`, `pantau_alerts` in `pantau_alerter` (passwords set by `pantau db
-- migrate` from PANTAU_INGEST_PASSWORD and PANTAU_ALERTS_PASSWORD). Ingest parses what every
-- device sends and the alert service decides the sirens: a flaw in either must not let it
-- rewrite what it has no business changing. Each group gets exactly the statements its service
-- runs, no more. The group roles are cluster-wide, so they may exist already (another Pantau
-- database on the same server).
DO $$
BEGIN
    CREATE ROLE pantau_ingester NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
DO $$
BEGIN
    CREATE ROLE pantau_alerter NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
-- Both read the registry, thresholds and latest values; everything readable is open data.
GRANT pantau_readonly TO pantau_ingester, pantau_alerter;

-- Ingest: the write path of pantau.db.store (readings through a temporary staging table, the
-- latest values, rejected payloads counted by digest). It never updates or deletes a reading,
-- and never touches alerts or the registry.
GRANT INSERT ON readings TO pantau_ingester;
GRANT INSERT, UPDATE ON latest_readings TO pantau_ingester;
GRANT INSERT, UPDATE ON rejected_payloads TO pantau_ingester;

-- The alert service: its alerts, their events, its rule state, gauge statuses and its clock.
-- It never deletes an alert or an event, and never writes readings or the registry.
GRANT INSERT, UPDATE ON alerts TO pantau_alerter;
GRANT INSERT ON alert_events TO pantau_alerter;
GRANT INSERT, UPDATE ON alert_rule_state, gauge_status, alert_service_state TO pantau_alerter;
