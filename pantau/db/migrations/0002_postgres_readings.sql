-- Plain PostgreSQL mode, version 2: the partitioned readings table and rollup tables kept by
-- a statement trigger. Kept as it was applied; migration 3 replaces the trigger.

CREATE TABLE readings (
    time           timestamptz NOT NULL,
    sensor_id      text COLLATE "C" NOT NULL,
    metric         text COLLATE "C" NOT NULL,
    value          double precision NOT NULL,
    time_estimated boolean NOT NULL DEFAULT false
) PARTITION BY RANGE (time);
CREATE UNIQUE INDEX readings_key ON readings (sensor_id, metric, time);
CREATE INDEX readings_time ON readings USING brin (time);
-- Catches anything outside the partitions made ahead; maintenance moves it out again.
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

CREATE TABLE readings_1m (
    bucket      timestamptz NOT NULL,
    sensor_id   text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    value_avg   double precision NOT NULL,
    value_min   double precision NOT NULL,
    value_max   double precision NOT NULL,
    value_count bigint NOT NULL,
    value_last  double precision NOT NULL,
    last_time   timestamptz NOT NULL,
    PRIMARY KEY (sensor_id, metric, bucket)
);
CREATE INDEX readings_1m_bucket ON readings_1m (bucket);

CREATE TABLE readings_1h (
    bucket      timestamptz NOT NULL,
    sensor_id   text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    value_avg   double precision NOT NULL,
    value_min   double precision NOT NULL,
    value_max   double precision NOT NULL,
    value_count bigint NOT NULL,
    value_last  double precision NOT NULL,
    last_time   timestamptz NOT NULL,
    PRIMARY KEY (sensor_id, metric, bucket)
);
CREATE INDEX readings_1h_bucket ON readings_1h (bucket);

CREATE TABLE readings_1d (
    bucket      timestamptz NOT NULL,
    sensor_id   text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    value_avg   double precision NOT NULL,
    value_min   double precision NOT NULL,
    value_max   double precision NOT NULL,
    value_count bigint NOT NULL,
    value_last  double precision NOT NULL,
    last_time   timestamptz NOT NULL,
    PRIMARY KEY (sensor_id, metric, bucket)
);
CREATE INDEX readings_1d_bucket ON readings_1d (bucket);

CREATE FUNCTION pantau_rollup_readings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
WITH raw AS (SELECT time AS b, sensor_id, metric, value AS s, 1 AS n, value AS lo, value AS hi, value AS last, time AS lt FROM new_rows),
readings_1m_part AS (
        SELECT date_trunc('minute', b) AS b, sensor_id, metric, sum(s) AS s, sum(n) AS n, min(lo) AS lo,
               max(hi) AS hi, (array_agg(last ORDER BY lt DESC))[1] AS last, max(lt) AS lt
        FROM raw
        GROUP BY 1, sensor_id, metric
    ),
readings_1h_part AS (
        SELECT date_trunc('hour', b) AS b, sensor_id, metric, sum(s) AS s, sum(n) AS n, min(lo) AS lo,
               max(hi) AS hi, (array_agg(last ORDER BY lt DESC))[1] AS last, max(lt) AS lt
        FROM readings_1m_part
        GROUP BY 1, sensor_id, metric
    ),
readings_1d_part AS (
        SELECT (date_trunc('day', b AT TIME ZONE 'Asia/Jakarta') AT TIME ZONE 'Asia/Jakarta') AS b, sensor_id, metric, sum(s) AS s, sum(n) AS n, min(lo) AS lo,
               max(hi) AS hi, (array_agg(last ORDER BY lt DESC))[1] AS last, max(lt) AS lt
        FROM readings_1h_part
        GROUP BY 1, sensor_id, metric
    ),
readings_1m_merge AS (
        INSERT INTO readings_1m AS r (bucket, sensor_id, metric, value_avg, value_min, value_max,
                                 value_count, value_last, last_time)
        SELECT b, sensor_id, metric, s / n, lo, hi, n, last, lt
        FROM readings_1m_part
        ORDER BY sensor_id, metric, b
        ON CONFLICT (sensor_id, metric, bucket) DO UPDATE SET
            value_avg = (r.value_avg * r.value_count + EXCLUDED.value_avg * EXCLUDED.value_count)
                        / (r.value_count + EXCLUDED.value_count),
            value_min = least(r.value_min, EXCLUDED.value_min),
            value_max = greatest(r.value_max, EXCLUDED.value_max),
            value_count = r.value_count + EXCLUDED.value_count,
            value_last = CASE WHEN EXCLUDED.last_time >= r.last_time
                              THEN EXCLUDED.value_last ELSE r.value_last END,
            last_time = greatest(r.last_time, EXCLUDED.last_time)),
readings_1h_merge AS (
        INSERT INTO readings_1h AS r (bucket, sensor_id, metric, value_avg, value_min, value_max,
                                 value_count, value_last, last_time)
        SELECT b, sensor_id, metric, s / n, lo, hi, n, last, lt
        FROM readings_1h_part
        ORDER BY sensor_id, metric, b
        ON CONFLICT (sensor_id, metric, bucket) DO UPDATE SET
            value_avg = (r.value_avg * r.value_count + EXCLUDED.value_avg * EXCLUDED.value_count)
                        / (r.value_count + EXCLUDED.value_count),
            value_min = least(r.value_min, EXCLUDED.value_min),
            value_max = greatest(r.value_max, EXCLUDED.value_max),
            value_count = r.value_count + EXCLUDED.value_count,
            value_last = CASE WHEN EXCLUDED.last_time >= r.last_time
                              THEN EXCLUDED.value_last ELSE r.value_last END,
            last_time = greatest(r.last_time, EXCLUDED.last_time))
        INSERT INTO readings_1d AS r (bucket, sensor_id, metric, value_avg, value_min, value_max,
                                 value_count, value_last, last_time)
        SELECT b, sensor_id, metric, s / n, lo, hi, n, last, lt
        FROM readings_1d_part
        ORDER BY sensor_id, metric, b
        ON CONFLICT (sensor_id, metric, bucket) DO UPDATE SET
            value_avg = (r.value_avg * r.value_count + EXCLUDED.value_avg * EXCLUDED.value_count)
                        / (r.value_count + EXCLUDED.value_count),
            value_min = least(r.value_min, EXCLUDED.value_min),
            value_max = greatest(r.value_max, EXCLUDED.value_max),
            value_count = r.value_count + EXCLUDED.value_count,
            value_last = CASE WHEN EXCLUDED.last_time >= r.last_time
                              THEN EXCLUDED.value_last ELSE r.value_last END,
            last_time = greatest(r.last_time, EXCLUDED.last_time);
    RETURN NULL;
END
$$;
-- Statement-level with a transition table: only rows the statement really inserted reach the
-- rollups, so a redelivered reading (ON CONFLICT DO NOTHING) is never counted twice, and a
-- late reading lands in its own (older) bucket.
CREATE TRIGGER readings_rollup AFTER INSERT ON readings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pantau_rollup_readings();
