-- Gateways: devices that report for other sensors (SenML packs on their own uplink), and the
-- sensors each may report for. A reading for sensor S on the uplink of device D is accepted only
-- if S is D itself or D is a gateway linked to S (pantau.payload.decode applies the rule, in
-- ingest, the alert service and replays alike).
CREATE TABLE gateways (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL,
    kecamatan   text REFERENCES kecamatan (name),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateway_sensors (
    gateway_id  text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    sensor_id   text NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, sensor_id)
);
CREATE INDEX gateway_sensors_sensor ON gateway_sensors (sensor_id);

GRANT SELECT ON gateways, gateway_sensors TO pantau_readonly;
