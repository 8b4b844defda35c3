-- pgmld 0005: PostgresML's pgml.trained_models and pgml.deployed_models views, which its
-- documentation and examples query after pgml.tune / pgml.train. Same names and columns:
-- one row per model (with whether it is its project's current deployment) and one row per
-- deployed project. A project's current deployment is its newest pgml.deployments row (highest id), as
-- pgml.deploy and pgml.transform read it. Models whose snapshot was removed still appear.
--
-- On Postgres 15 and later the views are security_invoker, so a role reading them needs the
-- same privileges on the pgml tables (and passes the same row-level security) as reading
-- those tables directly: a view grants nothing the tables would not.

CREATE VIEW pgml.trained_models AS
SELECT
    m.id,
    p.name,
    p.task,
    m.algorithm,
    m.runtime,
    m.created_at,
    s.test_sampling,
    s.test_size,
    d.model_id IS NOT NULL AS deployed
FROM pgml.projects p
JOIN pgml.models m ON m.project_id = p.id
LEFT JOIN pgml.snapshots s ON s.id = m.snapshot_id
LEFT JOIN (
    SELECT DISTINCT ON (project_id) project_id, model_id
    FROM pgml.deployments
    ORDER BY project_id, id DESC
) d ON d.model_id = m.id
ORDER BY m.created_at DESC, m.id DESC;

CREATE VIEW pgml.deployed_models AS
SELECT
    m.id,
    p.name,
    p.task,
    m.algorithm,
    m.runtime,
    d.created_at AS deployed_at
FROM pgml.projects p
JOIN (
    SELECT DISTINCT ON (project_id) project_id, model_id, created_at
    FROM pgml.deployments
    ORDER BY project_id, id DESC
) d ON d.project_id = p.id
JOIN pgml.models m ON m.id = d.model_id
ORDER BY p.name;

DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER VIEW pgml.trained_models SET (security_invoker = true);
        ALTER VIEW pgml.deployed_models SET (security_invoker = true);
    END IF;
END
$$;

COMMENT ON VIEW pgml.trained_models IS 'pgmld: every model with its project, snapshot split and whether it is deployed (PostgresML''s view)';
COMMENT ON VIEW pgml.deployed_models IS 'pgmld: the model each project serves now (PostgresML''s view)';
