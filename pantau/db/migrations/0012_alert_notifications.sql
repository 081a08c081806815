-- What the alert service handed to Alertmanager for each alert: each level it was sent as firing,
-- and each level's end, the first time Alertmanager took it. Alertmanager then decides who is
-- told (routes, grouping, silences, inhibition); this is Pantau's side of that record, shown in
-- an alert's history. Written by the alert service only, never changed.
CREATE TABLE alert_notifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    level       smallint NOT NULL CHECK (level BETWEEN 1 AND 3),
    status      text NOT NULL CHECK (status IN ('firing', 'resolved')),
    sent_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (alert_id, level, status)
);

GRANT SELECT, INSERT ON alert_notifications TO pantau_alerter;
GRANT SELECT ON alert_notifications TO pantau_readonly;
