-- Plain PostgreSQL mode: ingest also keeps the rollups and the partitions (see
-- pantau.db.postgres.maintain). Refreshing the rollups needs only rights on their tables.
GRANT INSERT, DELETE ON rollup_invalidations TO pantau_ingester;
GRANT UPDATE ON rollup_watermarks TO pantau_ingester;
GRANT INSERT, DELETE ON readings_1m_mat, readings_1h_mat, readings_1d_mat TO pantau_ingester;

-- Partitions are tables of their own, and only the owner of `readings` may create, attach and
-- drop them. These two functions run as that owner and do only what maintenance does; every
-- login uses them, so there is one implementation.
CREATE FUNCTION pantau_create_readings_partition(lower timestamptz, upper timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    name text := 'readings_p' || to_char(lower AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI');
BEGIN
    IF lower IS NULL OR upper IS NULL OR upper <= lower THEN
        RAISE EXCEPTION 'a partition needs rising bounds, got % to %', lower, upper;
    END IF;
    IF EXISTS (SELECT 1 FROM readings_default WHERE time >= lower AND time < upper) THEN
        -- Rows for this range sit in the default partition: move them into the new table
        -- before attaching it, or PostgreSQL refuses the partition.
        EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS)', name);
        EXECUTE format(
            'WITH moved AS (DELETE FROM readings_default WHERE time >= $1 AND time < $2 '
            'RETURNING *) INSERT INTO %I SELECT * FROM moved', name) USING lower, upper;
        EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lower, upper);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                       name, lower, upper);
    END IF;
END
$$;

-- Retention: drops the partitions that end at or before `cutoff`, and older rows of the default
-- partition; returns the partitions dropped. A login that does not own `readings` gets no
-- shorter retention than `pantau db migrate` recorded, whatever cutoff it asks for: a flaw in
-- ingest must not be able to drop recent readings.
CREATE FUNCTION pantau_drop_readings_before(cutoff timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    kept interval;
    part record;
    dropped integer := 0;
BEGIN
    IF NOT pg_has_role(session_user,
                       (SELECT relowner FROM pg_class WHERE oid = 'readings'::regclass),
                       'USAGE') THEN
        SELECT value::interval INTO kept FROM pantau_meta WHERE key = 'raw_retention';
        cutoff := least(cutoff, now() - coalesce(kept, interval '90 days'));
    END IF;
    FOR part IN
        SELECT c.oid::regclass AS rel,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                             'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass
    LOOP
        IF part.upper IS NOT NULL AND part.upper <= cutoff THEN
            EXECUTE format('DROP TABLE %s', part.rel);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM readings_default WHERE time < cutoff;
    RETURN dropped;
END
$$;

REVOKE ALL ON FUNCTION pantau_create_readings_partition(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION pantau_drop_readings_before(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pantau_create_readings_partition(timestamptz, timestamptz)
    TO pantau_ingester;
GRANT EXECUTE ON FUNCTION pantau_drop_readings_before(timestamptz) TO pantau_ingester;
