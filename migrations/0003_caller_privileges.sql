-- pgmld 0003: the caller's privileges.
--
--   * Catalog entries for every function pgmld serves, with the signatures pgmld binds
--     calls against, so `\df pgml.*` lists them, ORMs can introspect them, and Postgres's
--     own privilege model applies: before it runs a call, pgmld asks the caller's session
--     for USAGE on schema pgml and EXECUTE on the function (GRANT / REVOKE work as for any
--     function; new functions are executable by PUBLIC, as Postgres makes them). Called
--     on the upstream directly, they raise 0A000: only pgmld runs them.
--   * Owners: projects, models, files and jobs record the role that created them (the
--     caller's current_user). Using another role's project or model through pgmld needs
--     membership in its owner role; superusers may use all. Rows from before this
--     migration belong to the role that ran it (pgmld's own), so only superusers and that
--     role's members keep using them until an administrator reassigns them:
--     UPDATE pgml.projects SET owner = 'app' WHERE name = '...';  (and models, files, jobs).
-- A test compares these signatures with the ones pgmld binds against.

CREATE FUNCTION pgml.served_by_pgmld(function_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgml.% is served by pgmld, not by this database', function_name
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Connect through pgmld to call it. This catalog entry holds its signature and privileges.';
END;
$$;
COMMENT ON FUNCTION pgml.served_by_pgmld(text) IS 'pgmld: raises for a pgml function called without pgmld';

CREATE FUNCTION pgml.version() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgml.served_by_pgmld('version');
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION pgml.version() IS 'pgmld: the version of the pgmld serving this session';

CREATE FUNCTION pgml.load_dataset(
    source text, subset text DEFAULT NULL, "limit" bigint DEFAULT NULL, kwargs jsonb DEFAULT '{}')
RETURNS TABLE(table_name text, "rows" bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgml.served_by_pgmld('load_dataset');
END;
$$;
COMMENT ON FUNCTION pgml.load_dataset(text, text, bigint, jsonb) IS 'pgmld: loads a Hugging Face dataset or a server file into a table';

CREATE FUNCTION pgml.tune(
    project_name text, task text DEFAULT NULL, relation_name text DEFAULT NULL,
    y_column_name text DEFAULT NULL, model_name text DEFAULT NULL,
    hyperparams jsonb DEFAULT '{}', test_size real DEFAULT 0.25,
    test_sampling text DEFAULT 'stratified', automatic_deploy boolean DEFAULT true,
    materialize_snapshot boolean DEFAULT false)
RETURNS TABLE(status text, task text, algorithm text, deployed boolean)
-- SQL, not PL/pgSQL: the result column "task" shares the parameter's name, as in PostgresML.
LANGUAGE sql VOLATILE AS $$
    SELECT NULL::text, NULL::text, NULL::text, NULL::boolean FROM pgml.served_by_pgmld('tune');
$$;
COMMENT ON FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, text, boolean, boolean) IS 'pgmld: fine-tunes a language model on a relation';

CREATE FUNCTION pgml.transform(task text, args jsonb DEFAULT '{}', inputs text[] DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgml.served_by_pgmld('transform');
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION pgml.transform(text, jsonb, text[]) IS 'pgmld: runs a model (task text or jsonb; inputs text[] or jsonb[] messages)';

CREATE FUNCTION pgml.transform_stream(
    task text, args jsonb DEFAULT '{}', input text DEFAULT NULL, inputs jsonb[] DEFAULT NULL,
    cache boolean DEFAULT false)
RETURNS SETOF jsonb
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgml.served_by_pgmld('transform_stream');
END;
$$;
COMMENT ON FUNCTION pgml.transform_stream(text, jsonb, text, jsonb[], boolean) IS 'pgmld: streams generated text, one row per piece';

ALTER TABLE pgml.projects ADD COLUMN owner name NOT NULL DEFAULT current_user;
ALTER TABLE pgml.models ADD COLUMN owner name NOT NULL DEFAULT current_user;
ALTER TABLE pgml.files ADD COLUMN owner name NOT NULL DEFAULT current_user;
ALTER TABLE pgml.jobs ADD COLUMN owner name NOT NULL DEFAULT current_user;
