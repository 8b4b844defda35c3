//! `pgml.transform(task jsonb|text, args jsonb DEFAULT '{}', inputs text[] DEFAULT '{}')
//! RETURNS jsonb`, called once (real time) or per row of a query (batched across rows for
//! classification). `inputs` binds `text[]` and `jsonb[]` alike (PostgresML has both
//! overloads; chat messages arrive as jsonb and are read back as JSON).

use std::collections::HashMap;
use std::sync::Arc;

use pgmld_ml::ClassifyInput;
use pgmld_sql::function::{CallFuture, ParamSpec, RowsFuture};
use pgmld_sql::{
    Args, CallContext, Output, PgmlFunction, Returns, Signature, SqlError, SqlType, Value,
};
use serde_json::Value as Json;

use crate::error::TransformError;
use crate::generation::{GenTask, GenerateCall};
use crate::request::{self, ClassifyRequest};
use crate::transformer::Transformer;

/// The SQL function, bound to a [`Transformer`].
pub struct Transform {
    signature: Signature,
    transformer: Arc<Transformer>,
}

impl Transform {
    /// The function over `transformer`.
    pub fn new(transformer: Arc<Transformer>) -> Self {
        let empty_json = Value::Json(Json::Object(Default::default()));
        Transform {
            signature: Signature {
                name: "transform",
                params: vec![
                    // Text, so both a task name and a jsonb object (cast to text) bind.
                    ParamSpec::required("task", SqlType::Text),
                    ParamSpec::optional("args", SqlType::Jsonb, empty_json),
                    ParamSpec::optional("inputs", SqlType::TextArray, Value::Array(vec![])),
                ],
                returns: Returns::Scalar(SqlType::Jsonb),
            },
            transformer,
        }
    }
}

/// A call, parsed: classification or generation.
enum Call {
    Classify(ClassifyRequest, Vec<ClassifyInput>),
    /// Boxed: a generation request is several times the size of a classification one.
    Generate(Box<GenerateCall>),
}

/// A call's parsed request and inputs.
fn parse(args: &Args) -> Result<Call, TransformError> {
    let (task_arg, args_arg, inputs_arg) = (
        args.get("task").unwrap_or(&Value::Null),
        args.get("args").unwrap_or(&Value::Null),
        args.get("inputs").unwrap_or(&Value::Null),
    );
    let task = request::task_object(task_arg)?;
    if task.get("task").and_then(Json::as_str).and_then(GenTask::parse).is_some() {
        return GenerateCall::parse(task_arg, args_arg, inputs_arg)
            .map(|call| Call::Generate(Box::new(call)));
    }
    let req = request::classify_request(&task, args_arg)?;
    let inputs = request::classify_inputs(inputs_arg)?;
    Ok(Call::Classify(req, inputs))
}

impl PgmlFunction for Transform {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, mut args: Args) -> CallFuture {
        let transformer = self.transformer.clone();
        Box::pin(async move {
            transformer.complete_task(&ctx, &mut args).await.map_err(SqlError::from)?;
            match parse(&args).map_err(SqlError::from)? {
                Call::Classify(req, inputs) => {
                    let results =
                        transformer.classify(&ctx, &req, &inputs).await.map_err(SqlError::from)?;
                    Ok(Output::Scalar(Value::Json(Json::Array(results))))
                }
                Call::Generate(call) => Ok(Output::Scalar(Value::Json(
                    transformer.generate(&ctx, &call).await.map_err(SqlError::from)?,
                ))),
            }
        })
    }

    /// Rows that ask the same model the same way are scored together: their inputs go to
    /// the model's worker as one list, so a query over 1,000 rows runs a few dozen
    /// forward passes, not 1,000. Generation rows queue at their model's worker, each its
    /// own conversation or prompts.
    fn call_rows(self: Arc<Self>, ctx: CallContext, mut rows: Vec<Args>) -> RowsFuture {
        Box::pin(async move {
            let n = rows.len();
            // Rows usually share one task object: it is completed once.
            let mut completed: HashMap<String, Value> = HashMap::new();
            for (r, args) in rows.iter_mut().enumerate() {
                let key = format!("{:?}", args.get("task"));
                if let Some(task) = completed.get(&key) {
                    args.insert("task", task.clone());
                    continue;
                }
                self.transformer.complete_task(&ctx, args).await.map_err(|e| row_error(e, r, n))?;
                completed.insert(key, args.get("task").cloned().unwrap_or(Value::Null));
            }
            let mut groups: HashMap<String, Group> = HashMap::new();
            let mut generations: Vec<(usize, GenerateCall)> = Vec::new();
            for (r, args) in rows.iter().enumerate() {
                let (req, inputs) = match parse(args).map_err(|e| row_error(e, r, n))? {
                    Call::Classify(req, inputs) => (req, inputs),
                    Call::Generate(call) => {
                        generations.push((r, *call));
                        continue;
                    }
                };
                let key = format!("{:?}", req);
                let group = groups.entry(key).or_insert_with(|| (req, Vec::new(), Vec::new()));
                let start = group.2.len();
                group.1.push((r, start));
                group.2.extend(inputs);
            }
            let mut out: Vec<Value> = vec![Value::Null; n];
            let answers = futures_util::future::join_all(
                generations.iter().map(|(_, call)| self.transformer.generate(&ctx, call)),
            )
            .await;
            for ((row, _), answer) in generations.iter().zip(answers) {
                out[*row] = Value::Json(answer.map_err(|e| row_error(e, *row, n))?);
            }
            for (req, members, inputs) in groups.into_values() {
                let results =
                    self.transformer.classify(&ctx, &req, &inputs).await.map_err(SqlError::from)?;
                let mut bounds: Vec<(usize, usize)> = members.clone();
                bounds.push((usize::MAX, inputs.len()));
                for w in bounds.windows(2) {
                    let ((row, start), (_, end)) = (w[0], w[1]);
                    out[row] = Value::Json(Json::Array(results[start..end].to_vec()));
                }
            }
            Ok(out)
        })
    }
}

/// Rows asking one model the same way: the request, (row, first input index) of each
/// member, and all their inputs in row order.
type Group = (ClassifyRequest, Vec<(usize, usize)>, Vec<ClassifyInput>);

/// Names the row of a per-row call in input errors (rows are counted from 1).
pub(crate) fn row_error(e: TransformError, row: usize, rows: usize) -> SqlError {
    let whole_query = matches!(e, TransformError::Cancelled);
    let mut err = SqlError::from(e);
    if rows > 1 && !whole_query {
        err.message = format!("{} (row {} of the query)", err.message, row + 1);
    }
    err
}
