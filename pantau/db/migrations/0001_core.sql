-- Core tables shared by both storage modes: the registry, latest values, rejections, alerts.

CREATE TABLE kecamatan (
    name            text PRIMARY KEY,
    lat             double precision NOT NULL,
    lon             double precision NOT NULL,
    flood_prone     boolean NOT NULL DEFAULT false,
    landslide_prone boolean NOT NULL DEFAULT false
);

CREATE TABLE sensors (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    family      text NOT NULL CHECK (family IN ('flood_gauge', 'traffic_counter', 'street_node')),
    name        text NOT NULL,
    kecamatan   text NOT NULL REFERENCES kecamatan (name),
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    interval_s  double precision NOT NULL CHECK (interval_s > 0),
    river       text,
    river_km    double precision,
    road        text,
    road_class  text CHECK (road_class IN ('national', 'provincial', 'town')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Thresholds change over time (agencies recalibrate gauges): keep every version.
CREATE TABLE flood_thresholds (
    sensor_id   text NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    valid_from  timestamptz NOT NULL DEFAULT now(),
    waspada     double precision NOT NULL,
    siaga       double precision NOT NULL,
    awas        double precision NOT NULL,
    PRIMARY KEY (sensor_id, valid_from),
    CHECK (waspada < siaga AND siaga < awas)
);

CREATE VIEW current_flood_thresholds AS
SELECT DISTINCT ON (sensor_id) sensor_id, valid_from, waspada, siaga, awas
FROM flood_thresholds
ORDER BY sensor_id, valid_from DESC;

-- Newest value per sensor and metric, by observation time (a late reading never replaces a
-- newer one).
CREATE TABLE latest_readings (
    sensor_id   text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    time        timestamptz NOT NULL,
    value       double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, metric)
);

-- Payloads ingest refused. One row per distinct payload and reason: a redelivered or repeated
-- payload bumps times_seen instead of adding rows.
CREATE TABLE rejected_payloads (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest       bytea NOT NULL,
    reason       text NOT NULL,
    topic        text NOT NULL,
    detail       text NOT NULL,
    payload      bytea NOT NULL,
    received_at  timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    times_seen   integer NOT NULL DEFAULT 1,
    UNIQUE (digest, reason)
);
CREATE INDEX rejected_payloads_received ON rejected_payloads (received_at);

CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id       text NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    kind            text NOT NULL,
    level           smallint NOT NULL CHECK (level BETWEEN 0 AND 3),
    previous_level  smallint CHECK (previous_level BETWEEN 0 AND 3),
    value           double precision,
    observed_at     timestamptz NOT NULL,
    raised_at       timestamptz NOT NULL DEFAULT now(),
    predicted_level smallint CHECK (predicted_level BETWEEN 0 AND 3),
    predicted_at    timestamptz,
    message         text NOT NULL,
    UNIQUE (sensor_id, kind, observed_at)
);
CREATE INDEX alerts_raised ON alerts (raised_at DESC);

-- Read-only access for Grafana and the public API. The group role is cluster-wide, so it may
-- exist already (another Pantau database on the same server).
DO $$
BEGIN
    CREATE ROLE pantau_readonly NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA public TO pantau_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO pantau_readonly;
