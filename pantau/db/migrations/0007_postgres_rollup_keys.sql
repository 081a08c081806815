-- Plain PostgreSQL mode, version 7: each materialised rollup's key carries the value columns.
--
-- A refresh writes one bucket of every series at a time, so the rows of one series lie on as
-- many heap pages as it has rows, and a history read (one sensor and metric over a range)
-- visited one page per bucket. With the values in the key's leaf pages it reads a handful of
-- index pages instead (an index-only scan, wherever the visibility map says a page is
-- all-visible). The key itself is unchanged, so ON CONFLICT (sensor_id, metric, bucket) still
-- infers it; a second, covering index would make every refresh write two.
--
-- The constraints kept the names they had before migration 3 renamed the tables.
ALTER TABLE readings_1m_mat
    DROP CONSTRAINT readings_1m_pkey,
    ADD CONSTRAINT readings_1m_mat_pkey PRIMARY KEY (sensor_id, metric, bucket)
        INCLUDE (value_avg, value_min, value_max, value_count, value_last, last_time);

ALTER TABLE readings_1h_mat
    DROP CONSTRAINT readings_1h_pkey,
    ADD CONSTRAINT readings_1h_mat_pkey PRIMARY KEY (sensor_id, metric, bucket)
        INCLUDE (value_avg, value_min, value_max, value_count, value_last, last_time);

ALTER TABLE readings_1d_mat
    DROP CONSTRAINT readings_1d_pkey,
    ADD CONSTRAINT readings_1d_mat_pkey PRIMARY KEY (sensor_id, metric, bucket)
        INCLUDE (value_avg, value_min, value_max, value_count, value_last, last_time);

-- Refreshes only add rows: vacuumed after every 1 % of new rows (instead of autovacuum's 20 %),
-- the pages they fill are soon marked all-visible and read from the index alone.
ALTER TABLE readings_1m_mat SET (autovacuum_vacuum_insert_scale_factor = 0.01);
ALTER TABLE readings_1h_mat SET (autovacuum_vacuum_insert_scale_factor = 0.01);
ALTER TABLE readings_1d_mat SET (autovacuum_vacuum_insert_scale_factor = 0.01);
