//! `pgml.transform_stream`: generation whose text reaches the client piece by piece.
//!
//! PostgresML declares two overloads, `(task, args jsonb DEFAULT '{}', input text DEFAULT
//! '', cache bool DEFAULT false)` and `(task, args, inputs jsonb[] DEFAULT ARRAY[]::jsonb[],
//! cache bool)`, both `RETURNS SETOF jsonb`. pgmld serves one function with both `input`
//! and `inputs` (by name, as PostgresML's SDK calls it; a positional third argument is
//! `input`). Each row is one piece as the model produces it, a JSON array of the piece's
//! text (`["Hel"]`), as PostgresML's `TextIteratorStreamer` yields it: the SDK reads `[0]`
//! of each row and concatenates. With `"return_usage": true` in `args` a last row
//! `{"finish_reason", "usage"}` carries the token counts.
//!
//! The rows are a stream (see `pgmld_sql::Output::Stream`): `SELECT pgml.transform_stream(...)`
//! and `FETCH` from a cursor over it send each row as soon as it is generated, and
//! dropping the stream (CLOSE, COMMIT, cancel, disconnect) stops the generation.

use std::sync::Arc;

use pgmld_sql::function::{CallFuture, ParamSpec};
use pgmld_sql::{
    codes, Args, CallContext, Output, PgmlFunction, Returns, Signature, SqlError, SqlType, Value,
};
use serde_json::Value as Json;

use crate::generation::{GenTask, GenerateCall};
use crate::transformer::Transformer;

/// The SQL function, bound to a [`Transformer`].
pub struct TransformStream {
    signature: Signature,
    transformer: Arc<Transformer>,
}

impl TransformStream {
    /// The function over `transformer`.
    pub fn new(transformer: Arc<Transformer>) -> Self {
        TransformStream {
            signature: Signature {
                name: "transform_stream",
                params: vec![
                    // Text, so both a task name and a jsonb object (cast to text) bind.
                    ParamSpec::required("task", SqlType::Text),
                    ParamSpec::optional(
                        "args",
                        SqlType::Jsonb,
                        Value::Json(Json::Object(Default::default())),
                    ),
                    ParamSpec::optional("input", SqlType::Text, Value::Null),
                    ParamSpec::optional("inputs", SqlType::JsonbArray, Value::Null),
                    // PostgresML keeps it for compatibility and ignores it; so does pgmld.
                    ParamSpec::optional("cache", SqlType::Bool, Value::Bool(false)),
                ],
                returns: Returns::SetOf(SqlType::Jsonb),
            },
            transformer,
        }
    }
}

/// The generation call of a `transform_stream` call's arguments.
fn parse(args: &Args) -> Result<GenerateCall, SqlError> {
    let task = args.get("task").unwrap_or(&Value::Null);
    let input = args.get("input").unwrap_or(&Value::Null);
    let inputs = args.get("inputs").unwrap_or(&Value::Null);
    let given = match (input, inputs) {
        (Value::Null, Value::Null) => {
            return Err(SqlError::new(codes::NULL_VALUE_NOT_ALLOWED, "pgml.transform_stream needs input (text) or inputs (jsonb[])")
                .with_hint("Pass input => 'a prompt' for text-generation, or inputs => ARRAY['{\"role\": \"user\", \"content\": \"...\"}'::jsonb] for conversational."))
        }
        (Value::Null, inputs) => {
            let conversational = crate::request::task_object(task)
                .ok()
                .and_then(|t| t.get("task").and_then(Json::as_str).and_then(GenTask::parse))
                == Some(GenTask::Conversational);
            if !conversational {
                return Err(SqlError::new(
                    codes::INVALID_PARAMETER_VALUE,
                    "ARRAY[]::JSONB inputs for transform_stream should only be used with a conversational task",
                )
                .with_hint("Pass a prompt as input => 'text' for other tasks."));
            }
            inputs
        }
        (input, Value::Null) => input,
        _ => {
            return Err(SqlError::new(codes::INVALID_PARAMETER_VALUE, "pass either input or inputs to pgml.transform_stream, not both"))
        }
    };
    GenerateCall::parse(task, args.get("args").unwrap_or(&Value::Null), given)
        .map_err(SqlError::from)
}

impl PgmlFunction for TransformStream {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, mut args: Args) -> CallFuture {
        let transformer = self.transformer.clone();
        Box::pin(async move {
            transformer.complete_task(&ctx, &mut args).await.map_err(SqlError::from)?;
            let call = parse(&args)?;
            let mut pieces = transformer.stream(ctx, call);
            let rows = futures_util::stream::poll_fn(move |cx| {
                pieces
                    .poll_recv(cx)
                    .map(|item| item.map(|piece| piece.map(|json| vec![Value::Json(json)])))
            });
            Ok(Output::Stream(Box::pin(rows)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(pairs: &[(&'static str, Value)]) -> Args {
        pairs.iter().cloned().collect()
    }

    fn conversational() -> Value {
        Value::Text(r#"{"task": "conversational", "model": "m"}"#.into())
    }

    #[test]
    fn input_or_inputs_as_postgresml() {
        let message = Value::Array(vec![Value::Json(json!({"role": "user", "content": "Hi"}))]);
        let call = parse(&args(&[
            ("task", conversational()),
            ("inputs", message.clone()),
            ("input", Value::Null),
        ]))
        .unwrap();
        assert_eq!(call.request.task, GenTask::Conversational);
        let generation = Value::Text(r#"{"task": "text-generation", "model": "m"}"#.into());
        let call =
            parse(&args(&[("task", generation.clone()), ("input", Value::Text("Once".into()))]))
                .unwrap();
        assert_eq!(call.request.task, GenTask::TextGeneration);
        let e = parse(&args(&[("task", conversational())])).unwrap_err();
        assert_eq!(e.code, "22004");
        let e = parse(&args(&[("task", generation), ("inputs", message.clone())])).unwrap_err();
        assert_eq!(e.code, "22023");
        assert!(e.message.contains("conversational"), "{}", e.message);
        let e = parse(&args(&[
            ("task", conversational()),
            ("inputs", message),
            ("input", Value::Text("x".into())),
        ]))
        .unwrap_err();
        assert!(e.message.contains("not both"), "{}", e.message);
    }

    #[test]
    fn signature_streams_jsonb() {
        let batching = crate::Batching { max_batch: 1, max_wait: std::time::Duration::ZERO };
        let cache = crate::ModelCache::new(
            1 << 20,
            batching,
            tch::Device::Cpu,
            pgmld_metrics::Metrics::new(),
        );
        let hub = Arc::new(pgmld_hub::HubConfig::from_env());
        let t = Transformer::new(
            Arc::new(pgmld_upstream::Connector::new(
                pgmld_upstream::Upstream::from_url("postgres://x@127.0.0.1/x")
                    .expect("upstream URL"),
            )),
            hub,
            std::env::temp_dir(),
            cache,
            1,
        );
        let f = TransformStream::new(Arc::new(t));
        assert!(matches!(f.signature().returns, Returns::SetOf(SqlType::Jsonb)));
        assert_eq!(
            f.signature().display(),
            "pgml.transform_stream(task text, args jsonb DEFAULT '{}', input text DEFAULT NULL, inputs jsonb[] DEFAULT NULL, \
             cache boolean DEFAULT 'f')"
        );
    }
}
