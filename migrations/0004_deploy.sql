-- pgmld 0004: pgml.deploy, the catalog entry of the function that picks which model of a
-- project serves it (PostgresML's strategies best_score, most_recent and rollback, plus
-- specific with model_id to pin one model). Like the entries of 0003 it holds the
-- signature pgmld binds calls against and the EXECUTE privilege pgmld checks; called on
-- the upstream directly it raises 0A000. Each deployment is a pgml.deployments row.

CREATE FUNCTION pgml.deploy(
    project_name text, strategy text DEFAULT 'best_score', algorithm text DEFAULT NULL,
    model_id bigint DEFAULT NULL)
RETURNS TABLE(project text, strategy text, algorithm text)
-- SQL, not PL/pgSQL: the result columns strategy and algorithm share the parameters' names,
-- as in PostgresML.
LANGUAGE sql VOLATILE AS $$
    SELECT NULL::text, NULL::text, NULL::text FROM pgml.served_by_pgmld('deploy');
$$;
COMMENT ON FUNCTION pgml.deploy(text, text, text, bigint) IS 'pgmld: deploys a model of a project (best_score, most_recent, rollback, or specific with model_id)';
