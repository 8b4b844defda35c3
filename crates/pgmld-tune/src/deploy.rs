//! `pgml.deploy(project_name text, strategy text DEFAULT 'best_score', algorithm text
//! DEFAULT NULL, model_id bigint DEFAULT NULL) RETURNS TABLE(project text, strategy text,
//! algorithm text)`: picks which successful model of a project serves it.
//!
//! Every deployment is a `pgml.deployments` row; `pgml.transform` with the project's name
//! serves the model of its newest row from the next call on. The strategies:
//!
//! - `best_score`: the best model by the project's key metric ([`records::deploy_metric`]:
//!   highest `eval_f1` for classifiers, ties to the higher `eval_accuracy`; lowest
//!   `eval_loss` for conversations), ties to the newest. Models without the metric are not
//!   candidates.
//! - `most_recent`: the newest successful model.
//! - `rollback`: walks back through the deployment history ([`rollback_target`]).
//! - `specific`: the model `model_id` (it must be a successful model of the project).
//!
//! `algorithm` restricts `best_score` and `most_recent` to models of that algorithm
//! (`transformers`, as PostgresML) or of that base model (`pgml.models.base_model`).
//! Deploying needs membership in the project's owner role. Nothing is written unless a
//! model is deployed; the project row is locked while choosing, so concurrent deploys of
//! one project apply one after the other.

use std::sync::Arc;

use pgmld_models::access;
use pgmld_sql::function::{CallFuture, ParamSpec};
use pgmld_sql::{
    Args, CallContext, Caller, Output, PgmlFunction, Returns, Signature, SqlError, SqlType, Value,
};
use tokio_postgres::Client;

use crate::error::{Result, TuneError};
use crate::options::Task;
use crate::records;
use crate::tuner::{info, Tuner};

/// How `pgml.deploy` picks the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The best model by the project's key metric.
    BestScore,
    /// The newest successful model.
    MostRecent,
    /// The model deployed before the current one ([`rollback_target`]).
    Rollback,
    /// The model given as `model_id`.
    Specific,
}

impl Strategy {
    /// Every strategy's name, as `pgml.deploy` accepts them.
    pub const NAMES: &'static [&'static str] =
        &["best_score", "most_recent", "rollback", "specific"];

    /// Parses a strategy name (case-insensitive); 22023 listing the valid ones otherwise.
    pub fn parse(name: &str) -> Result<Strategy> {
        match name.trim().to_ascii_lowercase().as_str() {
            "best_score" => Ok(Strategy::BestScore),
            "most_recent" => Ok(Strategy::MostRecent),
            "rollback" => Ok(Strategy::Rollback),
            "specific" => Ok(Strategy::Specific),
            _ => Err(TuneError::bad(
                format!("unknown deployment strategy \"{name}\""),
                format!(
                    "Valid strategies: {}; pin one model with pgml.deploy('<project>', 'specific', model_id => <id>).",
                    Strategy::NAMES.join(", ")
                ),
            )),
        }
    }

    /// The name recorded in `pgml.deployments.strategy` and returned.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::BestScore => "best_score",
            Strategy::MostRecent => "most_recent",
            Strategy::Rollback => "rollback",
            Strategy::Specific => "specific",
        }
    }
}

/// A `pgml.deploy` call's arguments, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployRequest {
    /// The project's name.
    pub project: String,
    /// How to pick the model.
    pub strategy: Strategy,
    /// Only models of this base model (`best_score`, `most_recent`).
    pub algorithm: Option<String>,
    /// The model to pin (`specific`).
    pub model_id: Option<i64>,
}

impl DeployRequest {
    /// Reads bound arguments: 22004 for a NULL project or strategy, 22023 for an unknown
    /// strategy, `specific` without `model_id`, `model_id` with another strategy, or
    /// `algorithm` with `rollback` / `specific`.
    pub fn from_args(args: &Args) -> Result<DeployRequest> {
        let text = |name: &str| match args.get(name) {
            Some(Value::Text(s)) => Some(s.clone()),
            _ => None,
        };
        let project = text("project_name").filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            TuneError::Null("pgml.deploy project_name must not be NULL or empty".into())
        })?;
        let strategy = text("strategy")
            .ok_or_else(|| TuneError::Null("pgml.deploy strategy must not be NULL".into()))?;
        let strategy = Strategy::parse(&strategy)?;
        let algorithm = text("algorithm");
        let model_id = match args.get("model_id") {
            Some(Value::Int(id)) => Some(*id),
            Some(Value::Null) | None => None,
            Some(other) => {
                return Err(TuneError::bad(
                    format!("model_id must be a bigint, got {}", other.describe()),
                    "Pass model_id => <id>.",
                ))
            }
        };
        match (strategy, model_id) {
            (Strategy::Specific, None) => {
                return Err(TuneError::bad(
                    "strategy specific needs model_id",
                    format!("Pin a model with pgml.deploy('{project}', 'specific', model_id => <id>)."),
                ))
            }
            (s, Some(id)) if s != Strategy::Specific => {
                return Err(TuneError::bad(
                    format!("model_id {id} was given with strategy {}", s.name()),
                    format!("Pin a model with pgml.deploy('{project}', 'specific', model_id => {id}), or leave model_id out."),
                ))
            }
            _ => {}
        }
        if algorithm.is_some() && matches!(strategy, Strategy::Rollback | Strategy::Specific) {
            return Err(TuneError::bad(
                format!("algorithm applies to best_score and most_recent, not {}", strategy.name()),
                "Leave algorithm out.",
            ));
        }
        Ok(DeployRequest { project, strategy, algorithm, model_id })
    }
}

/// What a deployment chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    /// The project's name.
    pub project: String,
    /// The strategy used.
    pub strategy: Strategy,
    /// The deployed model's id.
    pub model_id: i64,
    /// The deployed model's algorithm (`pgml.models.algorithm`: `transformers`).
    pub algorithm: String,
}

/// One row of a project's deployment history, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The deployed model.
    pub model_id: i64,
    /// Whether the row was written by a rollback.
    pub rollback: bool,
    /// Whether the model is (still) successful, so a candidate.
    pub successful: bool,
}

/// The model a rollback deploys, given the project's deployment history oldest first;
/// `None` when there is nothing to roll back to.
///
/// The history is replayed as a stack of deployments: every deployment but a rollback
/// pushes its model; a rollback to model M pops entries until M is on top. A rollback then
/// pops every entry of the current model (the newest row's) and every entry of a model
/// that is no longer successful, and deploys the model left on top. So deploying A, B, C
/// then rolling back gives B, rolling back again A, and a third time fails (nothing before
/// A); a deployment after a rollback is pushed on top again. Unlike PostgresML's rollback,
/// which swaps back and forth between the last two models, repeated rollbacks keep going
/// back in history.
pub fn rollback_target(history: &[HistoryEntry]) -> Option<i64> {
    let current = history.last()?.model_id;
    let mut stack: Vec<HistoryEntry> = Vec::with_capacity(history.len());
    for entry in history {
        if entry.rollback {
            while stack.last().is_some_and(|top| top.model_id != entry.model_id) {
                stack.pop();
            }
            if stack.is_empty() {
                stack.push(*entry);
            }
        } else {
            stack.push(*entry);
        }
    }
    while stack.last().is_some_and(|top| top.model_id == current || !top.successful) {
        stack.pop();
    }
    stack.last().map(|top| top.model_id)
}

/// Runs `f` in a transaction on `client`: committed when it succeeds, rolled back otherwise.
async fn in_transaction<T>(
    client: &Client,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    client.batch_execute("BEGIN").await.map_err(|e| TuneError::pg("starting the deployment", e))?;
    match f.await {
        Ok(v) => {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| TuneError::pg("committing the deployment", e))?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Deploys a model of `req.project` for `caller`, on pgmld's own connection `client`.
pub async fn deploy(client: &Client, req: &DeployRequest, caller: &Caller) -> Result<Deployed> {
    in_transaction(client, choose_and_record(client, req, caller)).await
}

/// A hint on where to see a project's models.
fn models_hint(project: &str) -> String {
    format!(
        "SELECT id, algorithm, status, metrics FROM pgml.models WHERE project_id = \
         (SELECT id FROM pgml.projects WHERE name = '{}') lists the project's models.",
        project.replace('\'', "''")
    )
}

async fn choose_and_record(
    client: &Client,
    req: &DeployRequest,
    caller: &Caller,
) -> Result<Deployed> {
    let name = &req.project;
    let row = client
        .query_opt(
            "SELECT id, task, owner::text FROM pgml.projects WHERE name = $1 FOR UPDATE",
            &[name],
        )
        .await
        .map_err(|e| TuneError::pg(format!("looking up project {name}"), e))?;
    let Some(row) = row else {
        return Err(TuneError::NotFound {
            message: format!("project \"{name}\" does not exist"),
            hint: "pgml.tune creates projects; SELECT name FROM pgml.projects lists them.".into(),
        });
    };
    let project_id: i64 = row.get(0);
    access::check(client, caller, row.get(2), &format!("project \"{name}\"")).await?;
    let task = Task::parse(row.get::<_, &str>(1))?;
    let (model_id, algorithm) = match req.strategy {
        Strategy::BestScore => {
            best_score(client, (project_id, name), task, req.algorithm.as_deref()).await?
        }
        Strategy::MostRecent => {
            most_recent(client, (project_id, name), req.algorithm.as_deref()).await?
        }
        Strategy::Rollback => rollback(client, (project_id, name)).await?,
        Strategy::Specific => {
            let id = req.model_id.ok_or_else(|| {
                TuneError::bad("strategy specific needs model_id", "Pass model_id => <id>.")
            })?;
            specific(client, (project_id, name), id).await?
        }
    };
    client
        .execute(
            "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ($1, $2, $3)",
            &[&project_id, &model_id, &req.strategy.name()],
        )
        .await
        .map_err(|e| TuneError::pg("deploying the model", e))?;
    Ok(Deployed { project: name.clone(), strategy: req.strategy, model_id, algorithm })
}

async fn best_score(
    client: &Client,
    (project_id, name): (i64, &str),
    task: Task,
    algorithm: Option<&str>,
) -> Result<(i64, String)> {
    let (metric, higher_is_better) = records::deploy_metric(task);
    let order = if higher_is_better { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT m.id, m.algorithm FROM pgml.models m \
          WHERE m.project_id = $1 AND m.status = 'successful' AND ($2::text IS NULL OR m.algorithm = $2 OR m.base_model = $2) \
            AND jsonb_typeof(m.metrics->$3) = 'number' \
          ORDER BY (m.metrics->>$3)::float8 {order}, \
                   CASE WHEN jsonb_typeof(m.metrics->'eval_accuracy') = 'number' \
                        THEN (m.metrics->>'eval_accuracy')::float8 END DESC NULLS LAST, \
                   m.id DESC LIMIT 1"
    );
    let row = client
        .query_opt(&sql, &[&project_id, &algorithm, &metric])
        .await
        .map_err(|e| TuneError::pg(format!("ranking the models of project {name}"), e))?;
    let row = row.ok_or_else(|| {
        no_candidate(name, "best_score", algorithm, &format!("with {metric} in its metrics"))
    })?;
    Ok((row.get(0), row.get(1)))
}

async fn most_recent(
    client: &Client,
    (project_id, name): (i64, &str),
    algorithm: Option<&str>,
) -> Result<(i64, String)> {
    let row = client
        .query_opt(
            "SELECT m.id, m.algorithm FROM pgml.models m \
              WHERE m.project_id = $1 AND m.status = 'successful' AND ($2::text IS NULL OR m.algorithm = $2 OR m.base_model = $2) \
              ORDER BY m.id DESC LIMIT 1",
            &[&project_id, &algorithm],
        )
        .await
        .map_err(|e| TuneError::pg(format!("reading the models of project {name}"), e))?;
    let row = row.ok_or_else(|| no_candidate(name, "most_recent", algorithm, ""))?;
    Ok((row.get(0), row.get(1)))
}

/// The 22023 for a strategy that finds no model.
fn no_candidate(name: &str, strategy: &str, algorithm: Option<&str>, what: &str) -> TuneError {
    let of = algorithm.map(|a| format!(" of algorithm \"{a}\"")).unwrap_or_default();
    let what = if what.is_empty() { String::new() } else { format!(" {what}") };
    TuneError::bad(
        format!("project \"{name}\" has no successful model{of}{what} to deploy by {strategy}"),
        format!("Tune one with pgml.tune('{name}', ...). {}", models_hint(name)),
    )
}

async fn rollback(client: &Client, (project_id, name): (i64, &str)) -> Result<(i64, String)> {
    let rows = client
        .query(
            "SELECT d.model_id, d.strategy = 'rollback', m.status = 'successful' FROM pgml.deployments d \
               JOIN pgml.models m ON m.id = d.model_id WHERE d.project_id = $1 ORDER BY d.id",
            &[&project_id],
        )
        .await
        .map_err(|e| TuneError::pg(format!("reading the deployments of project {name}"), e))?;
    let history: Vec<HistoryEntry> = rows
        .iter()
        .map(|r| HistoryEntry { model_id: r.get(0), rollback: r.get(1), successful: r.get(2) })
        .collect();
    let target = rollback_target(&history).ok_or_else(|| match history.is_empty() {
        true => TuneError::bad(
            format!("project \"{name}\" has no deployment to roll back"),
            format!("Deploy a model first: pgml.deploy('{}', 'best_score').", name.replace('\'', "''")),
        ),
        false => TuneError::bad(
            format!("project \"{name}\" has no earlier deployment to roll back to"),
            format!(
                "Each rollback goes one deployment further back, and none is left before model {}. Deploy by best_score or \
                 most_recent, or pin a model: pgml.deploy('{}', 'specific', model_id => <id>).",
                history.last().map_or(0, |h| h.model_id),
                name.replace('\'', "''")
            ),
        ),
    })?;
    let row = client
        .query_one("SELECT algorithm FROM pgml.models WHERE id = $1", &[&target])
        .await
        .map_err(|e| TuneError::pg(format!("reading model {target}"), e))?;
    Ok((target, row.get(0)))
}

async fn specific(
    client: &Client,
    (project_id, name): (i64, &str),
    model_id: i64,
) -> Result<(i64, String)> {
    let row = client
        .query_opt(
            "SELECT project_id, status, algorithm FROM pgml.models WHERE id = $1",
            &[&model_id],
        )
        .await
        .map_err(|e| TuneError::pg(format!("looking up model {model_id}"), e))?;
    let row = match row {
        Some(row) if row.get::<_, i64>(0) == project_id => row,
        Some(_) => {
            return Err(TuneError::NotFound {
                message: format!("model {model_id} is not a model of project \"{name}\""),
                hint: models_hint(name),
            })
        }
        None => {
            return Err(TuneError::NotFound {
                message: format!("model {model_id} does not exist"),
                hint: models_hint(name),
            })
        }
    };
    let status: String = row.get(1);
    if status != "successful" {
        return Err(TuneError::bad(
            format!("model {model_id} of project \"{name}\" is {status}, not successful"),
            format!("Only successful models can be deployed. {}", models_hint(name)),
        ));
    }
    Ok((model_id, row.get(2)))
}

/// The SQL function, bound to the [`Tuner`] whose connections it uses.
pub struct Deploy {
    signature: Signature,
    tuner: Arc<Tuner>,
}

impl Deploy {
    /// The function over `tuner`.
    pub fn new(tuner: Arc<Tuner>) -> Self {
        Deploy {
            signature: Signature {
                name: "deploy",
                params: vec![
                    ParamSpec::required("project_name", SqlType::Text),
                    ParamSpec::optional(
                        "strategy",
                        SqlType::Text,
                        Value::Text("best_score".into()),
                    ),
                    ParamSpec::optional("algorithm", SqlType::Text, Value::Null),
                    ParamSpec::optional("model_id", SqlType::Int8, Value::Null),
                ],
                returns: Returns::Table(vec![
                    ("project", SqlType::Text),
                    ("strategy", SqlType::Text),
                    ("algorithm", SqlType::Text),
                ]),
            },
            tuner,
        }
    }
}

impl PgmlFunction for Deploy {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, args: Args) -> CallFuture {
        let tuner = self.tuner.clone();
        Box::pin(async move {
            let req = DeployRequest::from_args(&args).map_err(SqlError::from)?;
            let client = tuner
                .connector
                .connect(&ctx.database)
                .await
                .map_err(|e| SqlError::from(TuneError::from(e)))?;
            let done = deploy(&client, &req, &ctx.caller).await.map_err(SqlError::from)?;
            tracing::info!(project = %done.project, model_id = done.model_id, strategy = done.strategy.name(), "pgml.deploy");
            info(
                &ctx,
                format!(
                    "deployed model {} of project \"{}\" ({})",
                    done.model_id,
                    done.project,
                    done.strategy.name()
                ),
            );
            Ok(Output::Rows(vec![vec![
                Value::Text(done.project),
                Value::Text(done.strategy.name().into()),
                Value::Text(done.algorithm),
            ]]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(model_id: i64) -> HistoryEntry {
        HistoryEntry { model_id, rollback: false, successful: true }
    }

    fn back(model_id: i64) -> HistoryEntry {
        HistoryEntry { model_id, rollback: true, successful: true }
    }

    #[test]
    fn repeated_rollbacks_walk_back_through_history() {
        assert_eq!(rollback_target(&[]), None);
        assert_eq!(rollback_target(&[push(1)]), None);
        assert_eq!(rollback_target(&[push(1), push(2), push(3)]), Some(2));
        assert_eq!(rollback_target(&[push(1), push(2), push(3), back(2)]), Some(1));
        assert_eq!(rollback_target(&[push(1), push(2), push(3), back(2), back(1)]), None);
        // A deployment after a rollback goes on top; rolling back returns to the rollback's model.
        assert_eq!(rollback_target(&[push(1), push(2), push(3), back(2), push(3)]), Some(2));
        // The current model's repeated deployments are skipped as one.
        assert_eq!(rollback_target(&[push(1), push(2), push(2)]), Some(1));
        assert_eq!(rollback_target(&[push(2), push(1), push(2)]), Some(1));
        // A model that is no longer successful is skipped.
        let failed = HistoryEntry { model_id: 5, rollback: false, successful: false };
        assert_eq!(rollback_target(&[push(1), failed, push(3)]), Some(1));
    }

    #[test]
    fn strategies_and_arguments_are_checked() {
        assert_eq!(Strategy::parse("Best_Score").ok(), Some(Strategy::BestScore));
        for name in Strategy::NAMES {
            assert_eq!(Strategy::parse(name).ok().map(Strategy::name), Some(*name));
        }
        let err = SqlError::from(Strategy::parse("newest").unwrap_err());
        assert_eq!(err.code, "22023");
        let args = |strategy: &str, model_id: Value| -> Args {
            let mut a = Args::new();
            a.insert("project_name", Value::Text("p".into()));
            a.insert("strategy", Value::Text(strategy.into()));
            a.insert("algorithm", Value::Null);
            a.insert("model_id", model_id);
            a
        };
        assert!(DeployRequest::from_args(&args("specific", Value::Null)).is_err());
        assert!(DeployRequest::from_args(&args("rollback", Value::Int(3))).is_err());
        let pinned = DeployRequest::from_args(&args("specific", Value::Int(3))).ok();
        assert_eq!(pinned.map(|r| (r.strategy, r.model_id)), Some((Strategy::Specific, Some(3))));
    }
}
