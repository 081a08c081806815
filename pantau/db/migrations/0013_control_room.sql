-- The control room at work: who holds each operator key, what operators did with each alert (an
-- append-only trail), the commands the alert service sent to the warning posts, and the forecast
-- of each rising gauge that the gauge view and Grafana draw.

-- The person a key was given to ("Budi Santoso, BPBD"): what an acknowledgement records.
ALTER TABLE pantau_private.api_keys
    ADD COLUMN holder text CHECK (length(holder) BETWEEN 1 AND 100 AND holder !~ '[[:cntrl:]]');

-- Who is handling an alert now; the trail below keeps every change of it.
ALTER TABLE alerts
    ADD COLUMN assigned_to text CHECK (length(assigned_to) BETWEEN 1 AND 100),
    ADD COLUMN assigned_at timestamptz;

-- What operators did with alerts, through the API: acknowledgements (with the note), assignments
-- and comments. Private: notes are the control room's own words, not open data. No foreign key:
-- the trail outlives an alert removed with its sensor.
CREATE TABLE pantau_private.alert_actions (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint NOT NULL,
    action    text NOT NULL CHECK (action IN ('acknowledged', 'assigned', 'unassigned', 'commented')),
    operator  text NOT NULL,  -- the key's holder when it has one, else the key's name
    key_name  text NOT NULL,
    assignee  text CHECK (length(assignee) BETWEEN 1 AND 100),
    note      text CHECK (length(note) BETWEEN 1 AND 2000),
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_actions_alert ON pantau_private.alert_actions (alert_id, id);

-- Acknowledgements made before the trail existed, so that every alert's history has them.
INSERT INTO pantau_private.alert_actions (alert_id, action, operator, key_name, at)
SELECT alert_id, 'acknowledged', coalesce(details ->> 'by', 'unknown'),
       coalesce(details ->> 'by', 'unknown'), recorded_at
FROM alert_events WHERE change = 'acknowledged' ORDER BY id;

-- The second line behind the grants: rows of an audit trail are never changed nor removed, by
-- anyone short of the owner dropping this trigger.
CREATE FUNCTION pantau_private.refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER alert_actions_append_only BEFORE UPDATE OR DELETE ON pantau_private.alert_actions
    FOR EACH ROW EXECUTE FUNCTION pantau_private.refuse_rewrite();
CREATE TRIGGER alert_actions_no_truncate BEFORE TRUNCATE ON pantau_private.alert_actions
    FOR EACH STATEMENT EXECUTE FUNCTION pantau_private.refuse_rewrite();
-- Alert changes are appended too; rows go only with their alert (a removed sensor).
CREATE TRIGGER alert_events_append_only BEFORE UPDATE ON alert_events
    FOR EACH ROW EXECUTE FUNCTION pantau_private.refuse_rewrite();
-- An acknowledgement, once made, stays as it was made.
CREATE TRIGGER alerts_acknowledged_once BEFORE UPDATE OF acknowledged_at, acknowledged_by ON alerts
    FOR EACH ROW WHEN (OLD.acknowledged_at IS NOT NULL)
    EXECUTE FUNCTION pantau_private.refuse_rewrite();

-- The API adds to the trail and reads it; the time and id are the database's, never the caller's.
GRANT SELECT, INSERT (alert_id, action, operator, key_name, assignee, note)
    ON pantau_private.alert_actions TO pantau_operator;
GRANT UPDATE (assigned_to, assigned_at) ON alerts TO pantau_operator;

-- Every command the alert service sent to the warning posts of a gauge (ROOT/warning/GAUGE), when
-- it changed, with the alerts whose changes led to it; recorded before it is published.
CREATE TABLE warning_commands (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gauge_id    text NOT NULL,
    command     jsonb NOT NULL,
    alert_ids   bigint[] NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX warning_commands_gauge ON warning_commands (gauge_id, id);
CREATE INDEX warning_commands_alerts ON warning_commands USING gin (alert_ids);
CREATE TRIGGER warning_commands_append_only BEFORE UPDATE OR DELETE ON warning_commands
    FOR EACH ROW EXECUTE FUNCTION pantau_private.refuse_rewrite();
-- The alert service's group (migration 10) records them.
GRANT SELECT, INSERT ON warning_commands TO pantau_alerter;

-- The forecast of each rising gauge: the alert service's fitted rise (gauge_status) from the
-- level on the line at the newest reading to the predicted crossing of the next threshold. The
-- line passes through the threshold at next_level_at, so its level at observed_at is the
-- threshold less the rise over that time. Two rows per gauge, for charts: the gauge view and the
-- Grafana flood dashboard draw the same line.
CREATE VIEW flood_forecast AS
SELECT g.sensor_id, p.point, p.time, p.value, g.next_level, g.rate_m_per_h, g.observed_at
FROM gauge_status g
JOIN current_flood_thresholds t ON t.sensor_id = g.sensor_id
CROSS JOIN LATERAL (
    SELECT CASE g.next_level WHEN 1 THEN t.waspada WHEN 2 THEN t.siaga WHEN 3 THEN t.awas END
        AS threshold
) n
CROSS JOIN LATERAL (
    VALUES
        ('fit', g.observed_at,
         n.threshold - g.rate_m_per_h * extract(epoch FROM g.next_level_at - g.observed_at) / 3600),
        ('crossing', g.next_level_at, n.threshold)
) AS p (point, time, value)
WHERE g.next_level_at IS NOT NULL AND g.rate_m_per_h > 0 AND n.threshold IS NOT NULL;

GRANT SELECT ON warning_commands, flood_forecast TO pantau_readonly;
