-- Plain PostgreSQL mode, version 14: the size of the raw readings (every partition) under the
-- name and columns that TimescaleDB mode has; no compression, so no ratio.
CREATE FUNCTION storage_usage(OUT readings_bytes bigint, OUT compression_ratio numeric)
LANGUAGE sql STABLE
AS $$
    SELECT (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('readings'))::bigint,
           NULL::numeric
$$;
COMMENT ON FUNCTION storage_usage() IS
    'Bytes of the raw readings (every partition); the compression ratio is NULL: plain PostgreSQL compresses nothing.';
