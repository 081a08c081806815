-- No JIT compilation for this database's sessions, whoever connects: Pantau's services, Grafana,
-- an operator's psql. Queries over the rollups plan into dozens of partitions or chunks, and their
-- estimated cost passes the JIT threshold although they read a few thousand index entries:
-- compiling them took seconds where running them takes milliseconds (a family's daily CSV over a
-- month: 5.9 s with JIT, 0.24 s without).
-- Only the database's owner may change its defaults: anyone else is told how, and nothing fails.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'JIT is left on: only the owner of database % can turn it off (ALTER DATABASE % SET jit = off)',
        current_database(), current_database();
END
$$;
