//! `pgml.tune(project_name text, task text DEFAULT NULL, relation_name text DEFAULT NULL,
//! y_column_name text DEFAULT NULL, model_name text DEFAULT NULL, hyperparams jsonb DEFAULT
//! '{}', test_size real DEFAULT 0.25, test_sampling text DEFAULT 'stratified',
//! automatic_deploy bool DEFAULT true, materialize_snapshot bool DEFAULT false, wait bool
//! DEFAULT true) RETURNS TABLE(status text, task text, algorithm text, deployed bool)`.
//!
//! `wait => false` queues the job and returns at once with status `queued` (the job id is
//! in an INFO notice and in pgml.jobs; `pgml.wait_job` attaches to it later).

use std::sync::Arc;

use pgmld_sql::function::{CallFuture, ParamSpec};
use pgmld_sql::{
    Args, CallContext, Output, PgmlFunction, Returns, Signature, SqlError, SqlType, Value,
};

use crate::options::TuneRequest;
use crate::tuner::{Tuned, Tuner};

/// The SQL function, bound to a [`Tuner`].
pub struct Tune {
    signature: Signature,
    tuner: Arc<Tuner>,
}

impl Tune {
    /// The function over `tuner`.
    pub fn new(tuner: Arc<Tuner>) -> Self {
        let text_null = |name| ParamSpec::optional(name, SqlType::Text, Value::Null);
        Tune {
            signature: Signature {
                name: "tune",
                params: vec![
                    ParamSpec::required("project_name", SqlType::Text),
                    text_null("task"),
                    text_null("relation_name"),
                    text_null("y_column_name"),
                    text_null("model_name"),
                    ParamSpec::optional(
                        "hyperparams",
                        SqlType::Jsonb,
                        Value::Json(serde_json::json!({})),
                    ),
                    ParamSpec::optional("test_size", SqlType::Float4, Value::Float(0.25)),
                    ParamSpec::optional(
                        "test_sampling",
                        SqlType::Text,
                        Value::Text("stratified".into()),
                    ),
                    ParamSpec::optional("automatic_deploy", SqlType::Bool, Value::Bool(true)),
                    ParamSpec::optional("materialize_snapshot", SqlType::Bool, Value::Bool(false)),
                    ParamSpec::optional("wait", SqlType::Bool, Value::Bool(true)),
                ],
                returns: tune_columns(),
            },
            tuner,
        }
    }
}

impl PgmlFunction for Tune {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, args: Args) -> CallFuture {
        let tuner = self.tuner.clone();
        Box::pin(async move {
            let req = TuneRequest::from_args(&args).map_err(SqlError::from)?;
            let done = tuner.run(req, &ctx).await.map_err(SqlError::from)?;
            Ok(tune_row(done))
        })
    }
}

/// The columns pgml.tune returns (PostgresML's), which pgml.wait_job returns too.
pub(crate) fn tune_columns() -> Returns {
    Returns::Table(vec![
        ("status", SqlType::Text),
        ("task", SqlType::Text),
        ("algorithm", SqlType::Text),
        ("deployed", SqlType::Bool),
    ])
}

/// The row of a tune, as [`tune_columns`] lays it out.
pub(crate) fn tune_row(done: Tuned) -> Output {
    Output::Rows(vec![vec![
        Value::Text(done.status.into()),
        Value::Text(done.task.name().into()),
        Value::Text(done.algorithm),
        Value::Bool(done.deployed),
    ]])
}
