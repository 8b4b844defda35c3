-- pgmld 0009: asynchronous tunes and the workers that serve the queue (#16).
--
--   pgml.tune(..., wait => false)  returns at once, status 'queued'; the job id is in an
--                                  INFO notice and in pgml.jobs
--   pgml.wait_job(job_id)          attaches to a job later: its notices, then the row
--                                  pgml.tune would have returned (or its error)
--   pgml.workers                   every pgmld that serves this database's queue, with its
--                                  devices and a heartbeat: a job that no live worker can
--                                  run is reported when it is queued
--
-- pgml.tune gets a parameter, so its catalog entry is created again; whatever an
-- administrator granted or revoked on the old entry is applied to the new one.

DO $$
DECLARE
    old_acl aclitem[];
    grant_row record;
BEGIN
    SELECT proacl INTO old_acl FROM pg_proc
     WHERE oid = 'pgml.tune(text, text, text, text, text, jsonb, real, text, boolean, boolean)'::regprocedure;
    DROP FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, text, boolean, boolean);
    CREATE FUNCTION pgml.tune(
        project_name text, task text DEFAULT NULL, relation_name text DEFAULT NULL,
        y_column_name text DEFAULT NULL, model_name text DEFAULT NULL,
        hyperparams jsonb DEFAULT '{}', test_size real DEFAULT 0.25,
        test_sampling text DEFAULT 'stratified', automatic_deploy boolean DEFAULT true,
        materialize_snapshot boolean DEFAULT false, wait boolean DEFAULT true)
    RETURNS TABLE(status text, task text, algorithm text, deployed boolean)
    -- SQL, not PL/pgSQL: the result column "task" shares the parameter's name, as in PostgresML.
    LANGUAGE sql VOLATILE AS 'SELECT NULL::text, NULL::text, NULL::text, NULL::boolean FROM pgml.served_by_pgmld(''tune'')';
    IF old_acl IS NOT NULL THEN
        REVOKE ALL ON FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, text, boolean, boolean, boolean) FROM PUBLIC;
        FOR grant_row IN SELECT a.grantee, a.is_grantable FROM aclexplode(old_acl) a
                          WHERE a.privilege_type = 'EXECUTE' LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, text, boolean, boolean, boolean) TO %s%s',
                CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC' ELSE grant_row.grantee::regrole::text END,
                CASE WHEN grant_row.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END IF;
END;
$$;
COMMENT ON FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, text, boolean, boolean, boolean) IS 'pgmld: fine-tunes a language model on a relation (wait => false: queue it and return)';

CREATE FUNCTION pgml.wait_job(job_id bigint)
RETURNS TABLE(status text, task text, algorithm text, deployed boolean)
LANGUAGE sql VOLATILE AS $$
    SELECT NULL::text, NULL::text, NULL::text, NULL::boolean FROM pgml.served_by_pgmld('wait_job');
$$;
COMMENT ON FUNCTION pgml.wait_job(bigint) IS 'pgmld: waits for a pgml.tune job (its notices, then its result)';

CREATE TABLE pgml.workers (
    name text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    devices text[] NOT NULL,
    device_kinds text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE pgml.workers IS 'pgmld: the pgmld processes serving this database''s job queue (devices, heartbeat)';
