-- pgmld 0001: the pgml schema and the tables pgmld keeps there.
--
-- Follows PostgresML 2.10's tables (as described in postgresml-facts.md) with its
-- bugs left out:
--   * logs.id is bigserial and logs.created_at uses clock_timestamp(), so rows written by one
--     long training transaction still carry their real times and order;
--   * models.status 'failed' and models.error can be stored because training writes from its
--     own connection (jobs table below), not the client's transaction;
--   * models.parent_id records restart-from lineage instead of losing it;
--   * files are deleted with their model.
-- Applied once by pgmld's migration runner (pgml.schema_migrations), inside one transaction,
-- so plain CREATE statements are used: a clash with an existing PostgresML extension's
-- tables fails loudly instead of silently mixing two layouts.

CREATE SCHEMA IF NOT EXISTS pgml;

-- Keeps updated_at honest on every UPDATE without each writer having to remember it.
CREATE FUNCTION pgml.set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$$;

-- One row per pgml.tune project name.
CREATE TABLE pgml.projects (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    task       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The training data a model was made from (relation, split settings, column analysis).
CREATE TABLE pgml.snapshots (
    id            bigserial PRIMARY KEY,
    relation_name text NOT NULL,
    y_column_name text[],
    test_size     real,
    test_sampling text,
    status        text NOT NULL DEFAULT 'in_progress'
                  CHECK (status IN ('in_progress', 'successful', 'failed')),
    columns       jsonb,
    analysis      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    materialized  boolean NOT NULL DEFAULT false
);

-- One row per training run; written before training starts so progress and failure show.
CREATE TABLE pgml.models (
    id             bigserial PRIMARY KEY,
    project_id     bigint NOT NULL REFERENCES pgml.projects (id) ON DELETE CASCADE,
    parent_id      bigint REFERENCES pgml.models (id) ON DELETE SET NULL,
    snapshot_id    bigint REFERENCES pgml.snapshots (id) ON DELETE SET NULL,
    algorithm      text NOT NULL,
    runtime        text NOT NULL DEFAULT 'tch',
    hyperparams    jsonb NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'in_progress'
                   CHECK (status IN ('in_progress', 'successful', 'failed')),
    error          text,
    metrics        jsonb,
    search_results jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX models_project_id_idx ON pgml.models (project_id);
CREATE INDEX models_parent_id_idx ON pgml.models (parent_id);

-- Which model serves a project; the newest row per project wins.
CREATE TABLE pgml.deployments (
    id         bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES pgml.projects (id) ON DELETE CASCADE,
    model_id   bigint NOT NULL REFERENCES pgml.models (id) ON DELETE CASCADE,
    strategy   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployments_project_id_idx ON pgml.deployments (project_id, id);
CREATE INDEX deployments_model_id_idx ON pgml.deployments (model_id);

-- Model weights and other output files, cut into parts. The unique constraint's index also
-- serves lookups by model_id alone, so no separate files(model_id) index is needed.
CREATE TABLE pgml.files (
    id         bigserial PRIMARY KEY,
    model_id   bigint NOT NULL REFERENCES pgml.models (id) ON DELETE CASCADE,
    path       text NOT NULL,
    part       integer NOT NULL CHECK (part >= 0),
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, path, part)
);

-- Training log events, one row each, readable while training runs.
CREATE TABLE pgml.logs (
    id         bigserial PRIMARY KEY,
    model_id   bigint NOT NULL REFERENCES pgml.models (id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES pgml.projects (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    logs       jsonb NOT NULL
);
CREATE INDEX logs_model_id_idx ON pgml.logs (model_id, id);

-- The training job queue: workers claim 'queued' rows (FOR UPDATE SKIP LOCKED), beat
-- heartbeat_at while running, and record how the job ended.
CREATE TABLE pgml.jobs (
    id           bigserial PRIMARY KEY,
    model_id     bigint REFERENCES pgml.models (id) ON DELETE CASCADE,
    project_id   bigint NOT NULL REFERENCES pgml.projects (id) ON DELETE CASCADE,
    kind         text NOT NULL,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    args         jsonb NOT NULL DEFAULT '{}',
    progress     real,
    error        text,
    worker       text,
    heartbeat_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX jobs_queued_idx ON pgml.jobs (id) WHERE status = 'queued';
CREATE INDEX jobs_running_idx ON pgml.jobs (heartbeat_at) WHERE status = 'running';
CREATE INDEX jobs_model_id_idx ON pgml.jobs (model_id);
CREATE INDEX jobs_project_id_idx ON pgml.jobs (project_id);

CREATE TRIGGER projects_updated_at BEFORE UPDATE ON pgml.projects
    FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();
CREATE TRIGGER snapshots_updated_at BEFORE UPDATE ON pgml.snapshots
    FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();
CREATE TRIGGER models_updated_at BEFORE UPDATE ON pgml.models
    FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();
CREATE TRIGGER files_updated_at BEFORE UPDATE ON pgml.files
    FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();
CREATE TRIGGER jobs_updated_at BEFORE UPDATE ON pgml.jobs
    FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();
