-- TimescaleDB mode, version 14: the size of the raw readings and their compression ratio, for the
-- platform dashboard, under the same name and columns in both storage modes. A dashboard query
-- cannot name a TimescaleDB function where plain PostgreSQL has none without running SQL text
-- (query_to_xml), which needs a server built with libxml. The body is a string, so the function
-- records no dependency on the extension's functions and never stands in the way of
-- ALTER EXTENSION timescaledb UPDATE.
CREATE FUNCTION storage_usage(OUT readings_bytes bigint, OUT compression_ratio numeric)
LANGUAGE sql STABLE
AS $$
    SELECT hypertable_size('readings'),
           (SELECT round(sum(before_compression_total_bytes)::numeric
                         / nullif(sum(after_compression_total_bytes), 0), 2)
            FROM hypertable_columnstore_stats('readings'))
$$;
COMMENT ON FUNCTION storage_usage() IS
    'Bytes of the raw readings (every chunk, compressed ones included) and bytes before over bytes after compression of the compressed chunks (NULL before any is compressed).';
