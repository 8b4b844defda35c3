//! Rows pgmld writes about a tune in the pgml schema, on its own connection so they commit
//! at once and other sessions see them while training runs.

use serde_json::Value as Json;
use tokio_postgres::Client;

use crate::error::{Result, TuneError};
use crate::options::Task;

/// Finds the project by name or creates it. An existing project keeps its task: asking for
/// another is an error; `task` may be omitted for an existing project.
pub async fn project(client: &Client, name: &str, task: Option<Task>) -> Result<(i64, Task)> {
    let ctx = || format!("looking up project {name}");
    let existing = client
        .query_opt("SELECT id, task FROM pgml.projects WHERE name = $1", &[&name])
        .await
        .map_err(|e| TuneError::pg(ctx(), e))?;
    if let Some(row) = existing {
        let id: i64 = row.get(0);
        let stored: String = row.get(1);
        let stored_task = Task::parse(&stored)?;
        return match task {
            Some(t) if t != stored_task => Err(TuneError::bad(
                format!("project \"{name}\" exists with task {stored}, not {}", t.name()),
                "Use another project name for another task, or omit task to reuse the project's.",
            )),
            _ => Ok((id, stored_task)),
        };
    }
    let task = task.ok_or_else(|| {
        TuneError::bad(
            format!("project \"{name}\" does not exist and no task was given"),
            format!("Pass task => one of {}.", Task::NAMES.join(", ")),
        )
    })?;
    let row = client
        .query_one(
            "INSERT INTO pgml.projects (name, task) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET updated_at = now() RETURNING id, task",
            &[&name, &task.name()],
        )
        .await
        .map_err(|e| TuneError::pg(format!("creating project {name}"), e))?;
    let stored: String = row.get(1);
    if stored != task.name() {
        // Created concurrently by another call with another task.
        return Err(TuneError::bad(
            format!("project \"{name}\" exists with task {stored}, not {}", task.name()),
            "Use another project name.",
        ));
    }
    Ok((row.get(0), task))
}

/// What a snapshot row records about the data.
pub struct SnapshotInfo<'a> {
    /// The relation read.
    pub relation: &'a str,
    /// The class column.
    pub y_column: &'a str,
    /// `test_size` as given.
    pub test_size: f64,
    /// `test_sampling` name.
    pub test_sampling: &'a str,
    /// Columns and types.
    pub columns: Json,
    /// Row counts and class balance.
    pub analysis: Json,
}

/// Inserts a snapshot row; with `materialize`, copies the relation into
/// `pgml.snapshot_{id}` so the model's data survives later changes to it.
pub async fn snapshot(client: &Client, s: &SnapshotInfo<'_>, materialize: bool) -> Result<i64> {
    let ctx = |what: &str| format!("{what} snapshot of {}", s.relation);
    let row = client
        .query_one(
            "INSERT INTO pgml.snapshots (relation_name, y_column_name, test_size, test_sampling, status, columns, analysis, materialized) \
             VALUES ($1, ARRAY[$2::text], $3::float8::real, $4, 'successful', $5, $6, $7) RETURNING id",
            &[&s.relation, &s.y_column, &s.test_size, &s.test_sampling, &s.columns, &s.analysis, &materialize],
        )
        .await
        .map_err(|e| TuneError::pg(ctx("recording the"), e))?;
    let id: i64 = row.get(0);
    if materialize {
        let sql = format!("CREATE TABLE pgml.snapshot_{id} AS SELECT * FROM {}", s.relation);
        client.batch_execute(&sql).await.map_err(|e| TuneError::pg(ctx("materializing the"), e))?;
    }
    Ok(id)
}

/// What a new model row holds.
pub struct NewModel<'a> {
    /// Its project.
    pub project_id: i64,
    /// The stored model it starts from, if any.
    pub parent_id: Option<i64>,
    /// Its snapshot.
    pub snapshot_id: i64,
    /// The base model name (`algorithm`).
    pub algorithm: &'a str,
    /// Hyperparameters without secrets.
    pub hyperparams: &'a Json,
}

/// Inserts the model (`in_progress`) and its job row (`running`); returns (model, job) ids.
pub async fn start_model(client: &Client, m: &NewModel<'_>, worker: &str) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "INSERT INTO pgml.models (project_id, parent_id, snapshot_id, algorithm, runtime, hyperparams, status) \
             VALUES ($1, $2, $3, $4, 'tch', $5, 'in_progress') RETURNING id",
            &[&m.project_id, &m.parent_id, &m.snapshot_id, &m.algorithm, m.hyperparams],
        )
        .await
        .map_err(|e| TuneError::pg("recording the model", e))?;
    let model_id: i64 = row.get(0);
    let job = client
        .query_one(
            "INSERT INTO pgml.jobs (model_id, project_id, kind, status, args, worker, started_at, heartbeat_at, progress) \
             VALUES ($1, $2, 'tune', 'running', $3, $4, clock_timestamp(), clock_timestamp(), 0) RETURNING id",
            &[&model_id, &m.project_id, m.hyperparams, &worker],
        )
        .await
        .map_err(|e| TuneError::pg("recording the job", e))?;
    Ok((model_id, job.get(0)))
}

/// Appends one training log event.
pub async fn log(client: &Client, model_id: i64, project_id: i64, logs: &Json) -> Result<()> {
    client
        .execute(
            "INSERT INTO pgml.logs (model_id, project_id, logs) VALUES ($1, $2, $3)",
            &[&model_id, &project_id, logs],
        )
        .await
        .map_err(|e| TuneError::pg("writing pgml.logs", e))?;
    Ok(())
}

/// Records job progress (0–1) and a heartbeat.
pub async fn progress(client: &Client, job_id: i64, progress: f64) -> Result<()> {
    client
        .execute(
            "UPDATE pgml.jobs SET progress = $2::float8::real, heartbeat_at = clock_timestamp() WHERE id = $1",
            &[&job_id, &progress],
        )
        .await
        .map_err(|e| TuneError::pg("updating the job", e))?;
    Ok(())
}

/// Marks the model successful with its metrics, and the job succeeded.
pub async fn succeed(client: &Client, model_id: i64, job_id: i64, metrics: &Json) -> Result<()> {
    client
        .execute(
            "UPDATE pgml.models SET status = 'successful', metrics = $2, error = NULL WHERE id = $1",
            &[&model_id, metrics],
        )
        .await
        .map_err(|e| TuneError::pg("recording the model's metrics", e))?;
    client
        .execute(
            "UPDATE pgml.jobs SET status = 'succeeded', progress = 1, finished_at = clock_timestamp() WHERE id = $1",
            &[&job_id],
        )
        .await
        .map_err(|e| TuneError::pg("finishing the job", e))?;
    Ok(())
}

/// Marks the model failed with `reason` (`cancelled` for a cancel) and ends the job.
pub async fn fail(client: &Client, model_id: i64, job_id: i64, reason: &str, cancelled: bool) -> Result<()> {
    client
        .execute("UPDATE pgml.models SET status = 'failed', error = $2 WHERE id = $1", &[&model_id, &reason])
        .await
        .map_err(|e| TuneError::pg("recording the failure", e))?;
    let status = if cancelled { "cancelled" } else { "failed" };
    client
        .execute(
            "UPDATE pgml.jobs SET status = $2, error = $3, finished_at = clock_timestamp() WHERE id = $1",
            &[&job_id, &status, &reason],
        )
        .await
        .map_err(|e| TuneError::pg("finishing the job", e))?;
    Ok(())
}

/// Deploys `model_id` when no model is deployed or its `eval_f1` beats the deployed
/// one's (a model without eval_f1 only deploys onto an empty project). Returns whether it
/// deployed.
pub async fn deploy_if_better(client: &Client, project_id: i64, model_id: i64, f1: Option<f64>) -> Result<bool> {
    let current = client
        .query_opt(
            "SELECT m.id, (m.metrics->>'eval_f1')::float8 FROM pgml.deployments d \
             JOIN pgml.models m ON m.id = d.model_id WHERE d.project_id = $1 ORDER BY d.id DESC LIMIT 1",
            &[&project_id],
        )
        .await
        .map_err(|e| TuneError::pg("reading the deployed model", e))?;
    let better = match (&current, f1) {
        (None, _) => true,
        (Some(row), Some(new)) => row.get::<_, Option<f64>>(1).is_none_or(|old| new > old),
        (Some(_), None) => false,
    };
    if better {
        client
            .execute(
                "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ($1, $2, 'new_score')",
                &[&project_id, &model_id],
            )
            .await
            .map_err(|e| TuneError::pg("deploying the model", e))?;
    }
    Ok(better)
}
