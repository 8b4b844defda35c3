//! What the pages show, read from `pgml.*` on pgmld's own connection to the viewer's
//! database, every row filtered by ownership exactly as pgml.tune and pgml.transform decide
//! who may use a project or model ([`pgmld_models::access::may_use_sql`]): the viewer's own
//! rows, those of roles it is a member of, and everything for a superuser. A row another
//! role may not use reads as absent, so ids reveal nothing. `$1` is always the viewer.

use serde::Serialize;
use serde_json::Value as Json;
use tokio_postgres::{Client, Row};

use crate::error::{Error, Result};

/// `created_at`-style columns as text, to the second, in the server's time zone.
fn ts(col: &str) -> String {
    format!("to_char({col}, 'YYYY-MM-DD HH24:MI:SS')")
}

/// The ownership condition for a row whose owner is `owner`.
fn visible(owner: &str) -> String {
    pgmld_models::access::may_use_sql("$1", owner)
}

/// The model a project serves now: its newest `pgml.deployments` row, as pgml.deploy and
/// pgml.transform read it.
fn deployed_model(project_id: &str) -> String {
    format!(
        "(SELECT d.model_id FROM pgml.deployments d WHERE d.project_id = {project_id} \
          ORDER BY d.id DESC LIMIT 1)"
    )
}

fn pg(what: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::postgres(what, e)
}

/// What the viewer's role may do in this database.
#[derive(Debug, Clone, Serialize)]
pub struct Viewer {
    /// The role.
    pub role: String,
    /// The database.
    pub database: String,
    /// Superusers see every row.
    pub superuser: bool,
}

/// Checks that `role` still exists, that the database has a pgml schema, and that `role`
/// has USAGE on it (as calling any pgml function needs).
pub async fn viewer(client: &Client, role: &str, database: &str) -> Result<Viewer> {
    let row = client
        .query_opt(
            "SELECT r.rolsuper, to_regnamespace('pgml') IS NOT NULL, \
                    CASE WHEN to_regnamespace('pgml') IS NULL THEN false \
                         ELSE pg_catalog.has_schema_privilege(r.oid, 'pgml', 'USAGE') END \
               FROM pg_catalog.pg_roles r WHERE r.rolname = $1::text::name",
            &[&role],
        )
        .await
        .map_err(pg("reading the viewer's role"))?;
    let Some(row) = row else {
        return Err(Error::LoggedOut);
    };
    let (superuser, schema, usage): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if !schema {
        return Err(Error::NoSchema(database.to_string()));
    }
    if !usage {
        return Err(Error::Forbidden(format!(
            "role \"{role}\" has no USAGE on schema pgml in database \"{database}\", so it may \
             not call pgml functions there either. An administrator can run: \
             GRANT USAGE ON SCHEMA pgml TO \"{role}\";"
        )));
    }
    Ok(Viewer { role: role.to_string(), database: database.to_string(), superuser })
}

/// One project in the list.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    /// `pgml.projects.id`.
    pub id: i64,
    /// The name pgml.tune and pgml.transform use.
    pub name: String,
    /// The task (text-classification, conversation, ...).
    pub task: String,
    /// The role that created it.
    pub owner: String,
    /// When it was created.
    pub created_at: String,
    /// Models trained into it that the viewer may see.
    pub models: i64,
    /// Of those, models still training.
    pub training: i64,
    /// The model serving it now (its newest deployment).
    pub deployed_model: Option<i64>,
}

const PROJECT_COLUMNS: &str = "p.id, p.name, p.task, p.owner::text";

fn project(r: &Row) -> Project {
    Project {
        id: r.get(0),
        name: r.get(1),
        task: r.get(2),
        owner: r.get(3),
        created_at: r.get(4),
        models: r.get(5),
        training: r.get(6),
        deployed_model: r.get(7),
    }
}

fn project_query(filter: &str) -> String {
    format!(
        "SELECT {PROJECT_COLUMNS}, {created}, \
                (SELECT count(*) FROM pgml.models m WHERE m.project_id = p.id AND {vm}), \
                (SELECT count(*) FROM pgml.models m WHERE m.project_id = p.id AND m.status = 'in_progress' AND {vm}), \
                {deployed} \
           FROM pgml.projects p WHERE {vp} {filter}",
        created = ts("p.created_at"),
        vm = visible("m.owner"),
        vp = visible("p.owner"),
        deployed = deployed_model("p.id"),
    )
}

/// The projects the viewer may use, newest first.
pub async fn projects(client: &Client, v: &Viewer) -> Result<Vec<Project>> {
    let sql = project_query("ORDER BY p.created_at DESC, p.id DESC");
    let rows = client.query(&sql, &[&v.role]).await.map_err(pg("listing projects"))?;
    Ok(rows.iter().map(project).collect())
}

/// One project, if the viewer may use it.
pub async fn project_by_id(client: &Client, v: &Viewer, id: i64) -> Result<Project> {
    let sql = project_query("AND p.id = $2");
    let row = client.query_opt(&sql, &[&v.role, &id]).await.map_err(pg("reading a project"))?;
    row.as_ref().map(project).ok_or_else(|| Error::NotFound(format!("project {id}")))
}

/// One model in a project's list or on its own page.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// `pgml.models.id` (`pgml:<id>` names it in pgml.transform).
    pub id: i64,
    /// Its project.
    pub project_id: i64,
    /// The project's name.
    pub project: String,
    /// in_progress, successful or failed.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// PostgresML's algorithm column (`transformers`).
    pub algorithm: String,
    /// The model the fine-tune started from (Hub id, directory, `pgml:<id>`, project).
    pub base_model: Option<String>,
    /// The model it was trained on top of, when recorded.
    pub parent_id: Option<i64>,
    /// Its owner role.
    pub owner: String,
    /// When training started.
    pub created_at: String,
    /// Last change (status, metrics).
    pub updated_at: String,
    /// The evaluation metrics, as stored.
    pub metrics: Option<Json>,
    /// `metrics` in a line: the main scores.
    pub scores: String,
    /// The hyperparameters pgml.tune got, pretty-printed.
    pub hyperparams: String,
    /// Whether it is its project's current deployment.
    pub deployed: bool,
}

fn model_query(filter: &str) -> String {
    format!(
        "SELECT m.id, m.project_id, p.name, m.status, m.error, m.algorithm, m.base_model, m.parent_id, \
                m.owner::text, {created}, {updated}, m.metrics, m.hyperparams, \
                m.id = {deployed} IS TRUE \
           FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id \
          WHERE {vm} {filter}",
        created = ts("m.created_at"),
        updated = ts("m.updated_at"),
        vm = visible("m.owner"),
        deployed = deployed_model("m.project_id"),
    )
}

fn model(r: &Row) -> Model {
    let metrics: Option<Json> = r.get(11);
    let hyperparams: Json = r.get(12);
    Model {
        id: r.get(0),
        project_id: r.get(1),
        project: r.get(2),
        status: r.get(3),
        error: r.get(4),
        algorithm: r.get(5),
        base_model: r.get(6),
        parent_id: r.get(7),
        owner: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
        scores: metrics.as_ref().map(scores).unwrap_or_default(),
        metrics,
        hyperparams: serde_json::to_string_pretty(&hyperparams).unwrap_or_default(),
        deployed: r.get(13),
    }
}

/// The models of a project the viewer may use, newest first.
pub async fn models_of(client: &Client, v: &Viewer, project_id: i64) -> Result<Vec<Model>> {
    let sql = model_query("AND m.project_id = $2 ORDER BY m.id DESC");
    let rows = client.query(&sql, &[&v.role, &project_id]).await.map_err(pg("listing models"))?;
    Ok(rows.iter().map(model).collect())
}

/// One model, if the viewer may use it.
pub async fn model_by_id(client: &Client, v: &Viewer, id: i64) -> Result<Model> {
    let sql = model_query("AND m.id = $2");
    let row = client.query_opt(&sql, &[&v.role, &id]).await.map_err(pg("reading a model"))?;
    row.as_ref().map(model).ok_or_else(|| Error::NotFound(format!("model {id}")))
}

/// The headline scores of a metrics object, in the order people look for them.
pub fn scores(metrics: &Json) -> String {
    const FIRST: &[&str] =
        &["accuracy", "f1", "eval_accuracy", "eval_f1", "eval_loss", "perplexity"];
    let Json::Object(map) = metrics else {
        return String::new();
    };
    FIRST
        .iter()
        .filter_map(|k| map.get(*k).and_then(Json::as_f64).map(|v| format!("{k} {v:.4}")))
        .take(3)
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A stored file of a model (its parts summed).
#[derive(Debug, Clone, Serialize)]
pub struct File {
    /// The path inside the model directory.
    pub path: String,
    /// How many parts it is stored in.
    pub parts: i64,
    /// Its size.
    pub bytes: i64,
}

/// The files stored for a model the viewer may use (the caller checked the model).
pub async fn files_of(client: &Client, v: &Viewer, model_id: i64) -> Result<Vec<File>> {
    let sql = format!(
        "SELECT f.path, count(*), sum(octet_length(f.data))::bigint FROM pgml.files f \
          WHERE f.model_id = $2 AND {} GROUP BY f.path ORDER BY f.path",
        visible("f.owner")
    );
    let rows = client.query(&sql, &[&v.role, &model_id]).await.map_err(pg("listing files"))?;
    Ok(rows.iter().map(|r| File { path: r.get(0), parts: r.get(1), bytes: r.get(2) }).collect())
}

/// The last Hub push recorded for a model.
#[derive(Debug, Clone, Serialize)]
pub struct HubPush {
    /// `namespace/name`.
    pub repo: String,
    /// The repo's page.
    pub url: Option<String>,
    /// The commit id.
    pub commit: Option<String>,
}

/// The Hub repo the model was last pushed to, from its `pgml.logs` events.
pub async fn hub_push(client: &Client, v: &Viewer, model_id: i64) -> Result<Option<HubPush>> {
    let sql = format!(
        "SELECT l.logs->>'repo', l.logs->>'url', l.logs->>'commit' FROM pgml.logs l \
           JOIN pgml.models m ON m.id = l.model_id \
          WHERE l.model_id = $2 AND l.logs->>'hub' = 'pushed' AND {} ORDER BY l.id DESC LIMIT 1",
        visible("m.owner")
    );
    let row = client.query_opt(&sql, &[&v.role, &model_id]).await.map_err(pg("reading pushes"))?;
    Ok(row.and_then(|r| {
        Some(HubPush { repo: r.get::<_, Option<String>>(0)?, url: r.get(1), commit: r.get(2) })
    }))
}

/// One training job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// `pgml.jobs.id`.
    pub id: i64,
    /// The model it trains.
    pub model_id: Option<i64>,
    /// The project's name.
    pub project: String,
    /// queued, running, succeeded, failed, cancelled.
    pub status: String,
    /// 0–1, as the trainer last reported.
    pub progress: Option<f32>,
    /// Why it ended badly.
    pub error: Option<String>,
    /// Which pgmld runs it.
    pub worker: Option<String>,
    /// Its owner role.
    pub owner: String,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Estimated seconds left, from the last training log.
    pub eta_seconds: Option<f64>,
}

fn job_query(filter: &str) -> String {
    format!(
        "SELECT j.id, j.model_id, p.name, j.status, j.progress, j.error, j.worker, j.owner::text, \
                {started}, {finished}, \
                (SELECT (l.logs->>'eta_seconds')::float8 FROM pgml.logs l \
                  WHERE l.model_id = j.model_id AND l.logs ? 'eta_seconds' ORDER BY l.id DESC LIMIT 1) \
           FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id \
          WHERE {vj} {filter}",
        started = ts("j.started_at"),
        finished = ts("j.finished_at"),
        vj = visible("j.owner"),
    )
}

fn job(r: &Row) -> Job {
    Job {
        id: r.get(0),
        model_id: r.get(1),
        project: r.get(2),
        status: r.get(3),
        progress: r.get(4),
        error: r.get(5),
        worker: r.get(6),
        owner: r.get(7),
        started_at: r.get(8),
        finished_at: r.get(9),
        eta_seconds: r.get(10),
    }
}

/// The viewer's jobs: running and queued first, then the 100 newest others.
pub async fn jobs(client: &Client, v: &Viewer) -> Result<Vec<Job>> {
    let sql = job_query("ORDER BY j.status IN ('running', 'queued') DESC, j.id DESC LIMIT 100");
    let rows = client.query(&sql, &[&v.role]).await.map_err(pg("listing jobs"))?;
    Ok(rows.iter().map(job).collect())
}

/// The newest job of a model.
pub async fn job_of(client: &Client, v: &Viewer, model_id: i64) -> Result<Option<Job>> {
    let sql = job_query("AND j.model_id = $2 ORDER BY j.id DESC LIMIT 1");
    let row = client.query_opt(&sql, &[&v.role, &model_id]).await.map_err(pg("reading a job"))?;
    Ok(row.as_ref().map(job))
}

/// A model's training curve from `pgml.logs`, in step order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Curve {
    /// (step, training loss) of each log event.
    pub loss: Vec<(f64, f64)>,
    /// (step, eval_loss) of each evaluation.
    pub eval_loss: Vec<(f64, f64)>,
    /// Each evaluation's other scores (accuracy, f1, perplexity, ...), for the table.
    pub evals: Vec<EvalRow>,
    /// The planned number of optimizer steps (the x axis), when logged.
    pub max_steps: Option<f64>,
    /// The last logged step.
    pub step: Option<f64>,
    /// The last logged progress, 0–1.
    pub progress: Option<f64>,
    /// The last logged estimate of seconds left.
    pub eta_seconds: Option<f64>,
}

/// One evaluation event.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    /// The step it ran at.
    pub step: f64,
    /// Its metrics in a line.
    pub scores: String,
}

/// Reads the training curve of a model the viewer may use.
pub async fn curve(client: &Client, v: &Viewer, model_id: i64) -> Result<Curve> {
    let sql = format!(
        "SELECT l.logs FROM pgml.logs l JOIN pgml.models m ON m.id = l.model_id \
          WHERE l.model_id = $2 AND {} ORDER BY l.id",
        visible("m.owner")
    );
    let rows = client.query(&sql, &[&v.role, &model_id]).await.map_err(pg("reading logs"))?;
    Ok(curve_of(rows.iter().map(|r| r.get::<_, Json>(0))))
}

/// Builds a [`Curve`] from log events (the JSON of `pgml.logs.logs`), oldest first. A
/// resumed run logs its steps again from the checkpoint on: later events for a step
/// replace earlier ones.
pub fn curve_of(events: impl IntoIterator<Item = Json>) -> Curve {
    let mut c = Curve::default();
    for e in events {
        let num = |k: &str| e.get(k).and_then(Json::as_f64);
        let Some(step) = num("step") else { continue };
        if let Some(m) = num("max_steps") {
            c.max_steps = Some(m);
        }
        if let Some(p) = num("progress") {
            c.progress = Some(p);
            c.step = Some(step);
        }
        if let Some(eta) = num("eta_seconds") {
            c.eta_seconds = Some(eta);
        }
        if let Some(loss) = num("loss") {
            c.loss.retain(|(s, _)| *s < step);
            c.loss.push((step, loss));
        }
        if let Some(loss) = num("eval_loss") {
            c.eval_loss.retain(|(s, _)| *s < step);
            c.eval_loss.push((step, loss));
            c.evals.retain(|r| r.step < step);
            c.evals.push(EvalRow { step, scores: scores(&e) });
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn curve_keeps_loss_and_evals_and_the_last_progress() {
        let c = curve_of([
            json!({"loss": 2.0, "step": 5, "max_steps": 20, "progress": 0.25, "eta_seconds": 30.0}),
            json!({"loss": 1.5, "step": 10, "max_steps": 20, "progress": 0.5, "eta_seconds": 20.0}),
            json!({"eval_loss": 1.4, "eval_accuracy": 0.6, "step": 10, "max_steps": 20, "progress": 0.5}),
            json!({"hub": "pushed", "repo": "a/b", "step": 10}),
            json!({"checkpoint": "failed", "error": "x"}),
        ]);
        assert_eq!(c.loss, vec![(5.0, 2.0), (10.0, 1.5)]);
        assert_eq!(c.eval_loss, vec![(10.0, 1.4)]);
        assert_eq!(c.evals[0].scores, "eval_accuracy 0.6000 · eval_loss 1.4000");
        assert_eq!(
            (c.max_steps, c.step, c.progress, c.eta_seconds),
            (Some(20.0), Some(10.0), Some(0.5), Some(20.0))
        );
    }

    #[test]
    fn a_resumed_run_replaces_the_steps_it_logs_again() {
        let c = curve_of([
            json!({"loss": 2.0, "step": 5}),
            json!({"loss": 1.9, "step": 10}),
            json!({"loss": 1.8, "step": 15}),
            // resumed from the checkpoint at step 5
            json!({"loss": 1.95, "step": 10}),
        ]);
        assert_eq!(c.loss, vec![(5.0, 2.0), (10.0, 1.95)]);
    }

    #[test]
    fn scores_pick_the_headline_metrics() {
        assert_eq!(
            scores(&json!({"f1": 0.5, "accuracy": 0.75, "x": 1})),
            "accuracy 0.7500 · f1 0.5000"
        );
        assert_eq!(
            scores(&json!({"eval_loss": 1.25, "perplexity": 3.49})),
            "eval_loss 1.2500 · perplexity 3.4900"
        );
        assert_eq!(scores(&json!("nope")), "");
    }
}
