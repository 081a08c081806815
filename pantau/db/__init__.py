"""Database access shared by the services: schema, migrations, the write path and the registry."""

# The narrow readings table, identical in both storage modes; each mode adds its own storage
# clause (partitioning or hypertable) after it. Identifiers compare bytewise ("C"): the unique
# key is checked for every reading, and locale-aware comparison buys nothing for ids.
READINGS_TABLE = """
CREATE TABLE readings (
    time           timestamptz NOT NULL,
    sensor_id      text COLLATE "C" NOT NULL,
    metric         text COLLATE "C" NOT NULL,
    value          double precision NOT NULL,
    time_estimated boolean NOT NULL DEFAULT false
)"""
