-- TimescaleDB mode, version 7: an index per continuous aggregate for reading one series.
--
-- The materialisation hypertables have no key, only the aggregates' default indexes on
-- (sensor_id, bucket DESC), (metric, bucket DESC) and (bucket DESC): a history read (one sensor
-- and metric over a range) found its rows through the sensor's index, filtered the metric and
-- visited one heap page per bucket, as a refresh writes one bucket of every series at a time.
-- With the value columns included, it reads a handful of index pages instead (an index-only
-- scan, wherever the visibility map says a page is all-visible). TimescaleDB creates the index
-- on the materialisation hypertable and each of its chunks. The default indexes stay: refreshes
-- and retention find buckets by time, and reads by sensor or by metric alone need the others.
CREATE INDEX readings_1m_series ON readings_1m (sensor_id, metric, bucket)
    INCLUDE (value_avg, value_min, value_max, value_count, value_last, last_time);
CREATE INDEX readings_1h_series ON readings_1h (sensor_id, metric, bucket)
    INCLUDE (value_avg, value_min, value_max, value_count, value_last, last_time);
CREATE INDEX readings_1d_series ON readings_1d (sensor_id, metric, bucket)
    INCLUDE (value_avg, value_min, value_max, value_count, value_last, last_time);
