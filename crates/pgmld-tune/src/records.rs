//! Rows pgmld writes about a tune in the pgml schema, on its own connection so they commit
//! at once and other sessions see them while training runs.

use serde_json::Value as Json;
use tokio_postgres::Client;

use pgmld_schema::roles;
use pgmld_sql::Caller;

use crate::error::{Result, TuneError};
use crate::options::Task;
use pgmld_models::access;

/// Finds the project by name or creates it, owned by the caller. An existing project keeps
/// its task: asking for another is an error; `task` may be omitted for an existing project.
/// Another role's project needs membership in its owner.
pub async fn project(
    client: &Client,
    name: &str,
    task: Option<Task>,
    caller: &Caller,
) -> Result<(i64, Task)> {
    let ctx = || format!("looking up project {name}");
    let existing = client
        .query_opt("SELECT id, task, owner::text FROM pgml.projects WHERE name = $1", &[&name])
        .await
        .map_err(|e| TuneError::pg(ctx(), e))?;
    if let Some(row) = existing {
        let id: i64 = row.get(0);
        let stored: String = row.get(1);
        access::check(client, caller, row.get(2), &format!("project \"{name}\"")).await?;
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
            "INSERT INTO pgml.projects (name, task, owner) VALUES ($1, $2, $3::text::name) \
             ON CONFLICT (name) DO UPDATE SET updated_at = now() RETURNING id, task, owner::text",
            &[&name, &task.name(), &caller.role],
        )
        .await
        .map_err(|e| TuneError::pg(format!("creating project {name}"), e))?;
    let stored: String = row.get(1);
    access::check(client, caller, row.get(2), &format!("project \"{name}\"")).await?;
    if stored != task.name() {
        // Created concurrently by another call with another task.
        return Err(TuneError::bad(
            format!("project \"{name}\" exists with task {stored}, not {}", task.name()),
            "Use another project name.",
        ));
    }
    Ok((row.get(0), task))
}

/// The id and owner of project `name`, when it exists.
pub async fn project_id(client: &Client, name: &str) -> Result<Option<(i64, String)>> {
    let row = client
        .query_opt("SELECT id, owner::text FROM pgml.projects WHERE name = $1", &[&name])
        .await
        .map_err(|e| TuneError::pg(format!("looking up project {name}"), e))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
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
/// `pgml.snapshot_{id}` so the model's data survives later changes to it. The relation is
/// read as `caller` (into a temporary table of the caller's), the copy written by pgmld.
pub async fn snapshot(
    client: &Client,
    s: &SnapshotInfo<'_>,
    materialize: bool,
    caller: &str,
) -> Result<i64> {
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
        roles::begin_as(client, caller)
            .await
            .map_err(|e| TuneError::pg(roles::acting_as(caller), e))?;
        let sql = format!(
            "CREATE TEMPORARY TABLE pgmld_snapshot_rows ON COMMIT DROP AS SELECT * FROM {}; RESET ROLE; \
             CREATE TABLE pgml.snapshot_{id} AS SELECT * FROM pgmld_snapshot_rows; COMMIT",
            s.relation
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(TuneError::pg(ctx("materializing the"), e));
        }
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
    /// The model the fine-tune starts from, as `model_name` named it (`base_model`).
    pub base_model: &'a str,
    /// Hyperparameters without secrets.
    pub hyperparams: &'a Json,
    /// The calling role, recorded as the model's and its job's owner.
    pub owner: &'a str,
}

/// `pgml.models.algorithm` of every fine-tune, as PostgresML records it (the base model is
/// in `base_model`).
pub const ALGORITHM: &str = "transformers";

use crate::placement::Placement;
pub use pgmld_jobs::JOB_LOCK_CLASS;

/// Inserts the model (`in_progress`) and its job row (`queued`, with `request`), taking the
/// job's lock on `client` in the same statement: no worker claims the job (claims skip
/// locked jobs) until the caller, having stored what the job needs, releases it. Returns
/// (model, job) ids.
pub async fn queue_model(
    client: &Client,
    m: &NewModel<'_>,
    request: &Json,
    at: Placement,
) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "INSERT INTO pgml.models (project_id, parent_id, snapshot_id, algorithm, base_model, runtime, hyperparams, status, owner) \
             VALUES ($1, $2, $3, $7, $4, 'tch', $5, 'in_progress', $6::text::name) RETURNING id",
            &[&m.project_id, &m.parent_id, &m.snapshot_id, &m.base_model, m.hyperparams, &m.owner, &ALGORITHM],
        )
        .await
        .map_err(|e| TuneError::pg("recording the model", e))?;
    let model_id: i64 = row.get(0);
    let job = client
        .query_one(
            "INSERT INTO pgml.jobs (model_id, project_id, kind, status, args, progress, request, owner, priority, device, world_size) \
             VALUES ($1, $2, 'tune', 'queued', $3, 0, $4, $6::text::name, $7, $8, $9) \
             RETURNING id, pg_try_advisory_lock($5, (id & 2147483647)::int4)",
            &[
                &model_id,
                &m.project_id,
                m.hyperparams,
                request,
                &JOB_LOCK_CLASS,
                &m.owner,
                &at.priority,
                &at.device.name(),
                &at.world_size,
            ],
        )
        .await
        .map_err(|e| TuneError::pg("recording the job", e))?;
    if !job.get::<_, bool>(1) {
        tracing::warn!(job_id = job.get::<_, i64>(0), "a new job's lock is held elsewhere");
    }
    Ok((model_id, job.get(0)))
}

/// Takes the lock of `job_id` on `client` unless another session holds it.
pub async fn lock_job(client: &Client, job_id: i64) -> Result<bool> {
    Ok(pgmld_jobs::queue::try_lock(client, job_id).await?)
}

/// Releases the lock of `job_id` taken by [`lock_job`] on `client`.
pub async fn unlock_job(client: &Client, job_id: i64) -> Result<()> {
    Ok(pgmld_jobs::queue::unlock(client, job_id).await?)
}

/// A tune job that may be resumed.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// `pgml.jobs.id`.
    pub job_id: i64,
    /// Its model.
    pub model_id: i64,
    /// Its project.
    pub project_id: i64,
    /// `queued`, `running`, `failed` or `cancelled`.
    pub status: String,
    /// The step of its stored checkpoint.
    pub checkpoint_step: Option<i64>,
    /// The call, as [`crate::options::TuneRequest::from_stored`] reads it.
    pub request: Option<Json>,
    /// The role that started it: a resume at startup acts as this role.
    pub owner: String,
}

const JOB_COLUMNS: &str =
    "j.id, j.model_id, j.project_id, j.status, j.checkpoint_step, j.request, j.owner::text";

/// Jobs a resume may pick up: a tune whose model did not succeed and whose job is still
/// `queued` / `running` (orphaned when its lock is free) or ended by a cancel or an
/// interruption.
const RESUMABLE: &str = "j.kind = 'tune' AND m.status <> 'successful' \
     AND (j.status IN ('queued', 'running') OR (j.status IN ('failed', 'cancelled') AND j.error IN ('cancelled', 'interrupted')))";

fn job_row(r: &tokio_postgres::Row) -> JobRow {
    JobRow {
        job_id: r.get(0),
        model_id: r.get(1),
        project_id: r.get(2),
        status: r.get(3),
        checkpoint_step: r.get(4),
        request: r.get(5),
        owner: r.get(6),
    }
}

/// The resumable jobs of a project, newest first.
pub async fn resumable_jobs(client: &Client, project_id: i64) -> Result<Vec<JobRow>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id \
         WHERE j.project_id = $1 AND {RESUMABLE} ORDER BY j.id DESC"
    );
    let rows = client
        .query(&sql, &[&project_id])
        .await
        .map_err(|e| TuneError::pg("looking for interrupted models", e))?;
    Ok(rows.iter().map(job_row).collect())
}

/// Re-reads job `job_id` when it is still resumable (after its lock was taken).
pub async fn resumable_job(client: &Client, job_id: i64) -> Result<Option<JobRow>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id WHERE j.id = $1 AND {RESUMABLE}");
    let row = client
        .query_opt(&sql, &[&job_id])
        .await
        .map_err(|e| TuneError::pg("reading the job", e))?;
    Ok(row.as_ref().map(job_row))
}

/// Every tune job of the database still marked `queued` or `running` and started by a
/// pgmld that holds job locks (one that stores `request`: an older pgmld's running job
/// must not look orphaned), oldest first.
pub async fn active_jobs(client: &Client) -> Result<Vec<JobRow>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id \
         WHERE j.kind = 'tune' AND j.status IN ('queued', 'running') AND j.request IS NOT NULL ORDER BY j.id"
    );
    let rows =
        client.query(&sql, &[]).await.map_err(|e| TuneError::pg("looking for running jobs", e))?;
    Ok(rows.iter().map(job_row).collect())
}

/// The task of project `project_id`.
pub async fn project_task(client: &Client, project_id: i64) -> Result<Task> {
    let row = client
        .query_one("SELECT task FROM pgml.projects WHERE id = $1", &[&project_id])
        .await
        .map_err(|e| TuneError::pg(format!("reading project {project_id}"), e))?;
    Task::parse(row.get::<_, &str>(0))
}

/// Deletes the model's log rows of steps after `step` (written after the checkpoint a resume
/// goes on from), so no step is logged twice.
pub async fn drop_logs_after(client: &Client, model_id: i64, step: i64) -> Result<u64> {
    client
        .execute(
            "DELETE FROM pgml.logs WHERE model_id = $1 AND jsonb_typeof(logs->'step') = 'number' \
             AND (logs->>'step')::float8 > ($2::int8)::float8",
            &[&model_id, &step],
        )
        .await
        .map_err(|e| TuneError::pg("deleting log rows after the checkpoint", e))
}

/// Puts an interrupted model back in progress and its job back in the queue (a resume
/// asked for with `resume_from_checkpoint`), keeping its checkpoint; the caller holds the
/// job's lock.
pub async fn requeue(client: &Client, model_id: i64, job_id: i64) -> Result<()> {
    reopen_model(client, model_id).await?;
    client
        .execute(
            "UPDATE pgml.jobs SET status = 'queued', queued_at = clock_timestamp(), error = NULL, error_code = NULL, \
             error_hint = NULL, result = NULL, finished_at = NULL, cancel_requested_at = NULL, worker = NULL, \
             worker_host = NULL, worker_pid = NULL, worker_device = NULL, eta_seconds = NULL WHERE id = $1",
            &[&job_id],
        )
        .await
        .map_err(|e| TuneError::pg("queueing the job again", e))?;
    Ok(())
}

/// Puts a model back in progress (a claimed job taken over from a dead worker, a resume).
pub async fn reopen_model(client: &Client, model_id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE pgml.models SET status = 'in_progress', error = NULL WHERE id = $1",
            &[&model_id],
        )
        .await
        .map_err(|e| TuneError::pg("reopening the model", e))?;
    Ok(())
}

/// Records what a finished job returned (`pgml.jobs.result`): the waiting session reads it.
pub async fn job_result(client: &Client, job_id: i64, result: &Json) -> Result<()> {
    client
        .execute("UPDATE pgml.jobs SET result = $2 WHERE id = $1", &[&job_id, result])
        .await
        .map_err(|e| TuneError::pg("recording the job's result", e))?;
    Ok(())
}

/// The optimizer step of job `job_id`'s latest stored checkpoint, if any.
pub async fn checkpoint_step(client: &Client, job_id: i64) -> Result<Option<i64>> {
    let row = client
        .query_opt("SELECT checkpoint_step FROM pgml.jobs WHERE id = $1", &[&job_id])
        .await
        .map_err(|e| TuneError::pg("reading the job's checkpoint step", e))?;
    Ok(row.and_then(|r| r.get(0)))
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

/// Records the device a job trains on (`cpu`, `cuda:0`), once its worker thread started.
pub async fn started_on(client: &Client, job_id: i64, device: &str) -> Result<()> {
    client
        .execute("UPDATE pgml.jobs SET worker_device = $2 WHERE id = $1", &[&job_id, &device])
        .await
        .map_err(|e| TuneError::pg("updating the job", e))?;
    Ok(())
}

/// Marks the model successful with its metrics, and the job succeeded, in one statement:
/// no reader sees a successful model whose job still runs, and a pgmld killed in between
/// cannot leave a finished model with a job that a restart would resume.
pub async fn succeed(client: &Client, model_id: i64, job_id: i64, metrics: &Json) -> Result<()> {
    client
        .execute(
            "WITH model AS (UPDATE pgml.models SET status = 'successful', metrics = $2, \
             error = NULL WHERE id = $1) \
             UPDATE pgml.jobs SET status = 'succeeded', progress = 1, \
             finished_at = clock_timestamp(), checkpoint_step = NULL WHERE id = $3",
            &[&model_id, metrics, &job_id],
        )
        .await
        .map_err(|e| TuneError::pg("recording the model's metrics and finishing the job", e))?;
    Ok(())
}

/// Marks the model failed with `reason` (`cancelled` for a cancel, `interrupted` for a job
/// whose pgmld died) and ends the job.
pub async fn fail(
    client: &Client,
    model_id: i64,
    job_id: i64,
    reason: &str,
    cancelled: bool,
) -> Result<()> {
    let status = if cancelled { "cancelled" } else { "failed" };
    // One statement, as in `succeed`: the model and its job end together.
    client
        .execute(
            "WITH model AS (UPDATE pgml.models SET status = 'failed', error = $2 WHERE id = $1) \
             UPDATE pgml.jobs SET status = $4, error = $2, finished_at = clock_timestamp() \
             WHERE id = $3",
            &[&model_id, &reason, &job_id, &status],
        )
        .await
        .map_err(|e| TuneError::pg("recording the failure and finishing the job", e))?;
    Ok(())
}

/// Deploys `model_id` when no model is deployed or its `eval_f1` beats the deployed
/// one's (a model without eval_f1 only deploys onto an empty project). Returns whether it
/// deployed.
pub async fn deploy_if_better(
    client: &Client,
    project_id: i64,
    model_id: i64,
    f1: Option<f64>,
) -> Result<bool> {
    deploy_if_better_by(
        client,
        (project_id, model_id),
        Score { metric: "eval_f1", value: f1, higher_is_better: true },
    )
    .await
}

/// The metric a deployment compares models by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Its key in `pgml.models.metrics` (`eval_f1`, `eval_loss`).
    pub metric: &'static str,
    /// The new model's value, when it was evaluated.
    pub value: Option<f64>,
    /// `eval_f1`: higher wins; `eval_loss`: lower wins.
    pub higher_is_better: bool,
}

/// The metric of `pgml.models.metrics` that ranks a project's models, and whether higher
/// wins: `eval_f1` (higher wins) for classifiers, `eval_loss` (lower wins) for
/// conversation adapters. Automatic deployment after a tune and `pgml.deploy`'s
/// `best_score` both use it.
pub fn deploy_metric(task: Task) -> (&'static str, bool) {
    match task {
        Task::Conversation => ("eval_loss", false),
        _ => ("eval_f1", true),
    }
}

/// Whether a model scoring `new` replaces the deployed one scoring `old` (`None`: nothing
/// deployed; `Some(None)`: deployed without that metric, which any scored model beats).
pub fn beats(score: &Score, old: Option<Option<f64>>) -> bool {
    match (old, score.value) {
        (None, _) => true,
        (Some(None), Some(_)) => true,
        (Some(Some(old)), Some(new)) => {
            if score.higher_is_better {
                new > old
            } else {
                new < old
            }
        }
        (Some(_), None) => false,
    }
}

/// Deploys `model_id` when no model of `project_id` is deployed or it beats the deployed
/// one by `score` ([`beats`]). Returns whether it deployed.
pub async fn deploy_if_better_by(
    client: &Client,
    (project_id, model_id): (i64, i64),
    score: Score,
) -> Result<bool> {
    let current = client
        .query_opt(
            "SELECT m.id, (m.metrics->>$2)::float8 FROM pgml.deployments d \
             JOIN pgml.models m ON m.id = d.model_id WHERE d.project_id = $1 ORDER BY d.id DESC LIMIT 1",
            &[&project_id, &score.metric],
        )
        .await
        .map_err(|e| TuneError::pg("reading the deployed model", e))?;
    let better = beats(&score, current.map(|row| row.get::<_, Option<f64>>(1)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_compares_in_the_metric_direction() {
        let f1 = |v| Score { metric: "eval_f1", value: v, higher_is_better: true };
        let loss = |v| Score { metric: "eval_loss", value: v, higher_is_better: false };
        assert!(
            beats(&f1(None), None) && beats(&loss(None), None),
            "an empty project takes any model"
        );
        assert!(beats(&f1(Some(0.9)), Some(Some(0.8))) && !beats(&f1(Some(0.7)), Some(Some(0.8))));
        assert!(
            beats(&loss(Some(1.2)), Some(Some(1.5))) && !beats(&loss(Some(1.6)), Some(Some(1.5)))
        );
        assert!(!beats(&loss(Some(1.5)), Some(Some(1.5))), "a tie keeps the deployed model");
        assert!(beats(&loss(Some(2.0)), Some(None)) && !beats(&loss(None), Some(Some(1.0))));
    }
}
