-- Alerts: the early-warning service's alerts, their change history, each flood gauge's current
-- level, and the rule state the service rebuilds itself from after a restart. The 0001 `alerts`
-- table was never written by anything; it is replaced.

DROP TABLE IF EXISTS alerts CASCADE;

-- Flood gauges: where a flood wave goes next and how long it takes (city file, optional).
ALTER TABLE sensors
    ADD COLUMN downstream text[] NOT NULL DEFAULT '{}',
    ADD COLUMN travel_time_min double precision CHECK (travel_time_min > 0);

CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id       text NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    rule            text NOT NULL,
    level           smallint NOT NULL CHECK (level BETWEEN 1 AND 3),
    state           text NOT NULL CHECK (state IN ('open', 'resolved')),
    opened_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text,
    value           double precision,
    predicted_level smallint,
    predicted_at    timestamptz,
    message         text NOT NULL,
    message_en      text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (sensor_id, rule) WHERE state = 'open';
CREATE INDEX alerts_updated ON alerts (updated_at DESC);

CREATE TABLE alert_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    sensor_id       text NOT NULL,
    rule            text NOT NULL,
    change          text NOT NULL CHECK (change IN
                      ('opened', 'escalated', 'de-escalated', 'resolved', 'acknowledged')),
    level           smallint NOT NULL,
    previous_level  smallint,
    value           double precision,
    observed_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    predicted_level smallint,
    predicted_at    timestamptz,
    message         text NOT NULL,
    message_en      text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}'
);
-- A transition is caused by one reading: the same change of the same alert at the same
-- observation time is the same transition, so a replay after a crash cannot repeat it.
CREATE UNIQUE INDEX alert_events_once ON alert_events (alert_id, change, observed_at)
    WHERE change <> 'acknowledged';
CREATE INDEX alert_events_sensor ON alert_events (sensor_id, id);

CREATE TABLE gauge_status (
    sensor_id       text PRIMARY KEY REFERENCES sensors (id) ON DELETE CASCADE,
    level           smallint NOT NULL CHECK (level BETWEEN 0 AND 3),
    since           timestamptz NOT NULL,
    observed_at     timestamptz NOT NULL,
    value           double precision NOT NULL,
    rate_m_per_h    double precision,
    next_level      smallint,
    next_level_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- What each rule remembers about a sensor between readings (pending level changes, the value
-- a stuck check compares with, ...), committed with the transitions it led to. `observed_at`
-- is the observation time the state is current at: state never moves backwards in it.
CREATE TABLE alert_rule_state (
    sensor_id       text NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    rule            text NOT NULL,
    observed_at     timestamptz NOT NULL,
    state           jsonb NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, rule)
);

-- The service's clock (newest observation time it has evaluated), so a restart resumes there.
CREATE TABLE alert_service_state (
    key             text PRIMARY KEY,
    value           jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON alerts, alert_events, gauge_status, alert_rule_state, alert_service_state
    TO pantau_readonly;
