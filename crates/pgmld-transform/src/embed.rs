//! `pgml.embed(transformer text, text text, kwargs jsonb DEFAULT '{}') RETURNS real[]`, as
//! PostgresML: a sentence-transformers model (its modules.json pooling and normalisation;
//! a plain checkpoint is mean-pooled) named as a Hub repo id, a directory or a project,
//! served from the model cache `pgml.transform` uses. Called once, or per row of a query,
//! where rows asking one model the same way are embedded together.

use std::collections::HashMap;
use std::sync::Arc;

use pgmld_models::resolve;
use pgmld_sql::function::{CallFuture, ParamSpec, RowsFuture};
use pgmld_sql::{parse_bool, Value};
use pgmld_sql::{Args, CallContext, Output, PgmlFunction, Returns, Signature, SqlError, SqlType};
use serde_json::Value as Json;

use crate::cache::LoadedEmbedder;
use crate::error::TransformError;
use crate::transformer::{cache_key, in_chunks, Transformer};

/// kwargs keys `pgml.embed` reads (sentence-transformers' `encode` arguments).
const KWARGS: &str = "normalize_embeddings, prompt";

/// What a call's `kwargs` ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbedOptions {
    /// L2-normalise each vector (`normalize_embeddings`), also for a model whose modules
    /// do not normalise.
    pub normalize: bool,
    /// Text put before every input (`prompt`, e.g. "query: " for E5 models).
    pub prompt: Option<String>,
}

impl EmbedOptions {
    /// Reads `kwargs` (already coerced to jsonb by the signature; NULL means none). Unknown
    /// keys are errors naming them.
    pub fn parse(kwargs: &Value) -> Result<Self, TransformError> {
        let map = match kwargs {
            Value::Null => return Ok(EmbedOptions::default()),
            Value::Json(Json::Object(m)) => m,
            other => {
                return Err(TransformError::bad(
                    format!("pgml.embed kwargs must be a jsonb object, got {}", other.describe()),
                    format!("For example '{{\"normalize_embeddings\": true}}'; keys: {KWARGS}."),
                ))
            }
        };
        let mut opts = EmbedOptions::default();
        for (key, value) in map {
            match key.as_str() {
                "normalize_embeddings" => {
                    opts.normalize = match value {
                        Json::Bool(b) => *b,
                        Json::String(s) => parse_bool(s).ok_or_else(|| bad_value(key, value))?,
                        _ => return Err(bad_value(key, value)),
                    }
                }
                "prompt" => match value {
                    Json::String(s) => opts.prompt = Some(s.clone()),
                    Json::Null => opts.prompt = None,
                    _ => return Err(bad_value(key, value)),
                },
                other => {
                    return Err(TransformError::bad(
                        format!("pgml.embed does not take kwarg \"{other}\""),
                        format!("pgml.embed reads: {KWARGS}."),
                    ))
                }
            }
        }
        Ok(opts)
    }

    /// `text` as the model sees it.
    fn input(&self, text: &str) -> String {
        match &self.prompt {
            Some(p) => format!("{p}{text}"),
            None => text.to_string(),
        }
    }
}

fn bad_value(key: &str, value: &Json) -> TransformError {
    let expected = if key == "prompt" { "a string" } else { "a boolean" };
    TransformError::bad(
        format!("invalid value for kwarg \"{key}\": {}", shorten(&value.to_string())),
        format!("\"{key}\" takes {expected}."),
    )
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl Transformer {
    /// The sentence encoder `name` resolves to (as the caller: a project's model needs
    /// SELECT on pgml.models), loaded once for all sessions.
    pub async fn embedder(
        &self,
        ctx: &CallContext,
        name: &str,
    ) -> Result<Arc<LoadedEmbedder>, TransformError> {
        let client = self.client(&ctx.database).await?;
        let r = resolve::locate(&client, name, &ctx.caller).await?;
        if let resolve::ModelRef::Stored { id, task, via } = &r {
            // Fine-tuned encoders (classifiers) embed with their encoder; causal LMs do not.
            if !task.contains("classification") {
                return Err(TransformError::WrongTask {
                    message: format!("model \"{name}\" was trained for {task}, not embeddings"),
                    detail: format!("{via} resolves to pgml.models id {id}, a {task} model."),
                    hint: "Embed with a sentence-transformers model, or a project fine-tuned for \
                           text classification (its encoder, mean-pooled)."
                        .into(),
                });
            }
        }
        if let resolve::ModelRef::Gguf(path) = &r {
            return Err(TransformError::bad(
                format!(
                    "model \"{name}\" is a GGUF file ({}), not a sentence encoder",
                    path.display()
                ),
                "Embed with a sentence-transformers model (safetensors or pytorch_model.bin).",
            ));
        }
        let key = format!("embed:{}", cache_key(&r, &ctx.database, None));
        let tmp_root = self.work_dir.join("transform");
        self.cache
            .get_or_load_embedder(&key, name, || async {
                Ok(resolve::fetch_at(&client, &r, None, &self.hub, &tmp_root).await?)
            })
            .await
    }

    /// One vector per text from the model `name`, as `opts` asks.
    pub async fn embed(
        &self,
        ctx: &CallContext,
        name: &str,
        texts: &[String],
        opts: &EmbedOptions,
    ) -> Result<Vec<Vec<f32>>, TransformError> {
        let model = self.embedder(ctx, name).await?;
        let inputs: Vec<String> = texts.iter().map(|t| opts.input(t)).collect();
        let mut vectors = in_chunks(
            ctx,
            &inputs,
            self.chunk,
            |i| inputs[i].len(),
            |part| model.embed(part, ctx.cancelled.clone()),
        )
        .await?;
        if opts.normalize {
            vectors.iter_mut().for_each(|v| normalize(v));
        }
        Ok(vectors)
    }
}

/// L2-normalises `v` in place (sentence-transformers divides by max(norm, 1e-12)).
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// The SQL function, bound to the [`Transformer`] `pgml.transform` uses.
pub struct Embed {
    signature: Signature,
    transformer: Arc<Transformer>,
}

impl Embed {
    /// The function over `transformer`.
    pub fn new(transformer: Arc<Transformer>) -> Self {
        Embed {
            signature: Signature {
                name: "embed",
                params: vec![
                    ParamSpec::required("transformer", SqlType::Text),
                    ParamSpec::required("text", SqlType::Text),
                    ParamSpec::optional(
                        "kwargs",
                        SqlType::Jsonb,
                        Value::Json(Json::Object(Default::default())),
                    ),
                ],
                returns: Returns::Scalar(SqlType::Float4Array),
            },
            transformer,
        }
    }
}

/// One row's call: model, text and options; `None` when the model or the text is NULL
/// (the result is NULL, as for PostgresML's strict function).
fn row_call(args: &Args) -> Result<Option<(String, String, EmbedOptions)>, TransformError> {
    let text_of = |name: &str| match args.get(name) {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let (Some(model), Some(text)) = (text_of("transformer"), text_of("text")) else {
        return Ok(None);
    };
    if model.trim().is_empty() {
        return Err(TransformError::bad(
            "pgml.embed needs a model name, got an empty string",
            "Name a sentence-transformers model: a Hub repo id such as \
             'sentence-transformers/all-MiniLM-L6-v2', a directory, or a project.",
        ));
    }
    let opts = EmbedOptions::parse(args.get("kwargs").unwrap_or(&Value::Null))?;
    Ok(Some((model, text, opts)))
}

fn real_array(v: &[f32]) -> Value {
    Value::Array(v.iter().map(|&x| Value::real(x)).collect())
}

impl PgmlFunction for Embed {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, args: Args) -> CallFuture {
        let transformer = self.transformer.clone();
        Box::pin(async move {
            let Some((model, text, opts)) = row_call(&args).map_err(SqlError::from)? else {
                return Ok(Output::Scalar(Value::Null));
            };
            let vectors = transformer
                .embed(&ctx, &model, std::slice::from_ref(&text), &opts)
                .await
                .map_err(SqlError::from)?;
            Ok(Output::Scalar(vectors.first().map_or(Value::Null, |v| real_array(v))))
        })
    }

    /// Rows naming the same model with the same kwargs go to its worker as one list.
    fn call_rows(self: Arc<Self>, ctx: CallContext, rows: Vec<Args>) -> RowsFuture {
        Box::pin(async move {
            let n = rows.len();
            // (model, options) -> (options, rows, texts)
            let mut groups: HashMap<String, (String, EmbedOptions, Vec<usize>, Vec<String>)> =
                HashMap::new();
            for (r, args) in rows.iter().enumerate() {
                let call = row_call(args).map_err(|e| crate::function::row_error(e, r, n))?;
                let Some((model, text, opts)) = call else { continue };
                let key = format!("{model}\u{0}{opts:?}");
                let g = groups.entry(key).or_insert_with(|| (model, opts, vec![], vec![]));
                g.2.push(r);
                g.3.push(text);
            }
            let mut out = vec![Value::Null; n];
            for (model, opts, members, texts) in groups.into_values() {
                let vectors = self
                    .transformer
                    .embed(&ctx, &model, &texts, &opts)
                    .await
                    .map_err(SqlError::from)?;
                for (r, v) in members.into_iter().zip(&vectors) {
                    out[r] = real_array(v);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwargs_are_read_and_unknown_ones_named() {
        let parse = |j: &str| EmbedOptions::parse(&Value::Json(serde_json::from_str(j).unwrap()));
        assert_eq!(parse("{}").unwrap(), EmbedOptions::default());
        let o = parse(r#"{"normalize_embeddings": "on", "prompt": "query: "}"#).unwrap();
        assert!(o.normalize);
        assert_eq!(o.input("x"), "query: x");
        let e = parse(r#"{"device": "cuda"}"#).unwrap_err();
        assert!(e.to_string().contains("\"device\""), "{e}");
        let e = parse(r#"{"normalize_embeddings": 3}"#).unwrap_err();
        assert!(e.to_string().contains("normalize_embeddings") && e.to_string().contains('3'));
        let e = EmbedOptions::parse(&Value::Json(Json::from(5))).unwrap_err();
        assert_eq!(SqlError::from(e).code, "22023");
        assert_eq!(EmbedOptions::parse(&Value::Null).unwrap(), EmbedOptions::default());
    }

    #[test]
    fn normalizing_gives_unit_vectors_and_leaves_zero_vectors_at_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn null_model_or_text_is_a_null_result_and_an_empty_model_an_error() {
        let mut args = Args::new();
        args.insert("transformer", Value::Text("m".into()));
        args.insert("text", Value::Null);
        assert_eq!(row_call(&args).unwrap(), None);
        args.insert("text", Value::Text("hi".into()));
        args.insert("transformer", Value::Text(" ".into()));
        assert!(row_call(&args).is_err());
    }
}
