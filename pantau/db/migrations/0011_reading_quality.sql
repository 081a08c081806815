-- Quality control of readings (docs/alerts.md): the alert service marks a flood gauge's water
-- level as suspect (outside the sensor's range, moving faster than the river can, a spike that
-- came back) and records why here. The reading itself stays in `readings` as it came: the raw
-- data is the raw data; a suspect reading only moves no level.

-- A flood gauge's own limits from the city file (range_min_m, range_max_m, max_rate_m_per_h).
ALTER TABLE sensors ADD COLUMN quality jsonb;

CREATE TABLE reading_flags (
    sensor_id       text COLLATE "C" NOT NULL,
    metric          text COLLATE "C" NOT NULL,
    time            timestamptz NOT NULL,
    value           double precision NOT NULL,
    reason          text NOT NULL CHECK (reason IN ('range', 'gradient', 'spike')),
    -- The last accepted reading it was checked against (none for a range check).
    reference_time  timestamptz,
    reference_value double precision,
    flagged_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, metric, time)
);
-- Operators list the newest first, for the city or one gauge.
CREATE INDEX reading_flags_time ON reading_flags (time DESC);

GRANT SELECT ON reading_flags TO pantau_readonly;
DO $$
BEGIN
    -- The alert service's login group (where the deployment has one) writes the flags.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pantau_alerter') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON reading_flags TO pantau_alerter;
    END IF;
END
$$;
