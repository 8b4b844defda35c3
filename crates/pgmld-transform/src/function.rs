//! `pgml.transform(task jsonb|text, args jsonb DEFAULT '{}', inputs text[] DEFAULT '{}')
//! RETURNS jsonb`, called once (real time) or per row of a query (batched across rows).

use std::collections::HashMap;
use std::sync::Arc;

use pgmld_ml::ClassifyInput;
use pgmld_sql::function::{CallFuture, ParamSpec, RowsFuture};
use pgmld_sql::{Args, CallContext, Output, PgmlFunction, Returns, Signature, SqlError, SqlType, Value};
use serde_json::Value as Json;

use crate::error::TransformError;
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

/// A call's parsed request and inputs.
fn parse(args: &Args) -> Result<(ClassifyRequest, Vec<ClassifyInput>), TransformError> {
    let task = request::task_object(args.get("task").unwrap_or(&Value::Null))?;
    let req = request::classify_request(&task, args.get("args").unwrap_or(&Value::Null))?;
    let inputs = request::classify_inputs(args.get("inputs").unwrap_or(&Value::Null))?;
    Ok((req, inputs))
}

impl PgmlFunction for Transform {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, args: Args) -> CallFuture {
        let transformer = self.transformer.clone();
        Box::pin(async move {
            let (req, inputs) = parse(&args).map_err(SqlError::from)?;
            let results = transformer.classify(&ctx, &req, &inputs).await.map_err(SqlError::from)?;
            Ok(Output::Scalar(Value::Json(Json::Array(results))))
        })
    }

    /// Rows that ask the same model the same way are scored together: their inputs go to
    /// the model's worker as one list, so a query over 1,000 rows runs a few dozen
    /// forward passes, not 1,000.
    fn call_rows(self: Arc<Self>, ctx: CallContext, rows: Vec<Args>) -> RowsFuture {
        Box::pin(async move {
            let n = rows.len();
            let mut groups: HashMap<String, Group> = HashMap::new();
            for (r, args) in rows.iter().enumerate() {
                let (req, inputs) = parse(args).map_err(|e| row_error(e, r, n))?;
                let key = format!("{:?}", req);
                let group = groups.entry(key).or_insert_with(|| (req, Vec::new(), Vec::new()));
                let start = group.2.len();
                group.1.push((r, start));
                group.2.extend(inputs);
            }
            let mut out: Vec<Value> = vec![Value::Null; n];
            for (req, members, inputs) in groups.into_values() {
                let results = self.transformer.classify(&ctx, &req, &inputs).await.map_err(SqlError::from)?;
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
fn row_error(e: TransformError, row: usize, rows: usize) -> SqlError {
    let mut err = SqlError::from(e);
    if rows > 1 {
        err.message = format!("{} (row {} of the query)", err.message, row + 1);
    }
    err
}
