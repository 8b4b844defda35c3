//! The arguments of one `pgml.transform` call, checked: which task, which model, the
//! pipeline arguments and the inputs.

use pgmld_ml::{ClassifyInput, ScoreFn};
use pgmld_sql::Value;
use serde_json::{Map, Value as Json};

use crate::error::TransformError;

/// Tasks pgmld serves now.
const SUPPORTED_TASKS: &str =
    "text-classification (alias sentiment-analysis, text-pair-classification), conversational, text-generation";

/// Hugging Face pipeline tasks pgmld knows but does not serve yet (0A000, not 22023).
const LATER_TASKS: &[&str] = &[
    "text2text-generation",
    "summarization",
    "translation",
    "question-answering",
    "token-classification",
    "ner",
    "fill-mask",
    "zero-shot-classification",
    "feature-extraction",
    "sentence-similarity",
];

/// Keys of the task object pgmld uses or accepts without effect (device placement is
/// pgmld's configuration, not the caller's).
const TASK_KEYS: &[&str] = &[
    "task",
    "model",
    "revision",
    "device",
    "device_map",
    "torch_dtype",
    "dtype",
    "trust_remote_code",
];

/// The precision of a classifier's forward passes: `"dtype"` (or the older
/// `"torch_dtype"`) in the task object, as Hugging Face pipelines take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// bfloat16 where it is faster (a CPU with AVX512-BF16 or AMX), float32 elsewhere (the
    /// default).
    Auto,
    /// float32 throughout: the pipeline's own default, exact scores.
    Float32,
    /// bfloat16 autocast: matrix products in bfloat16, layer norms and softmax in float32.
    BFloat16,
}

impl Dtype {
    /// Reads `"dtype"` / `"torch_dtype"` (`"auto"`, `"float32"`, `"bfloat16"`, with or
    /// without `torch.`); absent or null: [`Dtype::Auto`].
    pub fn parse(task: &Map<String, Json>) -> Result<Dtype, TransformError> {
        let (key, value) = match (task.get("dtype"), task.get("torch_dtype")) {
            (Some(v), _) if !v.is_null() => ("dtype", v),
            (_, Some(v)) if !v.is_null() => ("torch_dtype", v),
            _ => return Ok(Dtype::Auto),
        };
        let hint = "Use \"auto\" (the default: bfloat16 on CPUs with AVX512-BF16 or AMX, else float32), \"float32\" or \"bfloat16\".";
        let Json::String(s) = value else {
            return Err(TransformError::bad(format!("{key} must be a string, not {value}"), hint));
        };
        let name = s.trim().to_ascii_lowercase();
        match name.strip_prefix("torch.").unwrap_or(&name) {
            "auto" => Ok(Dtype::Auto),
            "float32" | "float" | "fp32" => Ok(Dtype::Float32),
            "bfloat16" | "bf16" => Ok(Dtype::BFloat16),
            "float16" | "half" | "fp16" => Err(TransformError::Unsupported(format!(
                "{key} \"{s}\" is not supported for text classification: use \"bfloat16\" (as fast, with float32's range) or \"float32\""
            ))),
            _ => Err(TransformError::bad(format!("unknown {key} \"{s}\""), hint)),
        }
    }
}

/// Keys of `args` for text classification.
const ARGS_KEYS: &[&str] =
    &["top_k", "function_to_apply", "return_all_scores", "truncation", "padding", "batch_size"];

/// How many classes each input reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopK {
    /// The best class as one object per input (the pipeline's default).
    Best,
    /// The best `k` classes (all when `None`) as an array per input, highest first.
    Ranked(Option<usize>),
}

/// A parsed text-classification call.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyRequest {
    /// Model name as given: `pgml:<id>`, a path, a project or a Hub repo id.
    pub model: String,
    /// Hub revision (`"revision"` in the task object).
    pub revision: Option<String>,
    /// Output shape.
    pub top_k: TopK,
    /// Scoring function; the model's default when `None`.
    pub score_fn: Option<ScoreFn>,
    /// Precision of the forward passes.
    pub dtype: Dtype,
}

/// The task argument as a JSON object: jsonb objects as they are, a text task name as
/// `{"task": name}` (PostgresML's shorthand).
pub fn task_object(task: &Value) -> Result<Map<String, Json>, TransformError> {
    let json = match task {
        Value::Null => return Err(TransformError::bad(
            "task must not be NULL",
            "Pass e.g. task => '{\"task\": \"text-classification\", \"model\": \"...\"}'::jsonb.",
        )),
        Value::Json(j) => j.clone(),
        Value::Text(t) => {
            let trimmed = t.trim_start();
            if trimmed.starts_with('{') || trimmed.starts_with('"') {
                serde_json::from_str(t).map_err(|e| {
                    TransformError::InvalidJson(format!("task is not valid JSON: {e}"))
                })?
            } else {
                Json::String(t.clone())
            }
        }
        other => {
            return Err(TransformError::bad(
                format!("task must be jsonb or text, not {}", other.describe()),
                "",
            ))
        }
    };
    match json {
        Json::Object(m) => Ok(m),
        Json::String(s) => Ok(Map::from_iter([("task".to_string(), Json::String(s))])),
        other => Err(TransformError::bad(
            format!("task must be a JSON object or a task name, not {other}"),
            "Pass e.g. '{\"task\": \"text-classification\", \"model\": \"...\"}'::jsonb.",
        )),
    }
}

fn unknown_key(what: &str, key: &str, allowed: &[&str]) -> TransformError {
    TransformError::bad(
        format!("unknown {what} key \"{key}\""),
        format!("Supported keys: {}.", allowed.join(", ")),
    )
}

/// Checks the task object and `args` of a text-classification call.
pub fn classify_request(
    task: &Map<String, Json>,
    args: &Value,
) -> Result<ClassifyRequest, TransformError> {
    let name = match task.get("task") {
        Some(Json::String(s)) => s.as_str(),
        Some(other) => return Err(TransformError::bad(format!("\"task\" must be a string, not {other}"), "")),
        None => {
            return Err(TransformError::bad(
                "the task object has no \"task\" key",
                format!("Add one, e.g. {{\"task\": \"text-classification\", \"model\": \"...\"}}. Supported: {SUPPORTED_TASKS}."),
            ))
        }
    };
    match name {
        "text-classification" | "sentiment-analysis" | "text-pair-classification" => {}
        other if LATER_TASKS.contains(&other) => {
            return Err(TransformError::Unsupported(format!(
                "task \"{other}\" is not served by pgmld yet; supported: {SUPPORTED_TASKS}"
            )))
        }
        other => {
            return Err(TransformError::bad(
                format!("unknown task \"{other}\""),
                format!("Supported tasks: {SUPPORTED_TASKS}."),
            ))
        }
    }
    if let Some(k) = task.keys().find(|k| !TASK_KEYS.contains(&k.as_str())) {
        return Err(unknown_key("task", k, TASK_KEYS));
    }
    let model = match task.get("model") {
        Some(Json::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(other) if !other.is_string() => return Err(TransformError::bad(format!("\"model\" must be a string, not {other}"), "")),
        _ => {
            return Err(TransformError::bad(
                "the task object names no model",
                "Add \"model\": a Hub repo id, a local directory, a pgml project name or pgml:<model id>.",
            ))
        }
    };
    let revision = task.get("revision").and_then(|r| r.as_str()).map(str::to_string);
    let dtype = Dtype::parse(task)?;
    let args = match args {
        Value::Null => Map::new(),
        Value::Json(Json::Object(m)) => m.clone(),
        Value::Json(other) => {
            return Err(TransformError::bad(format!("args must be a JSON object, not {other}"), ""))
        }
        other => {
            return Err(TransformError::bad(
                format!("args must be jsonb, not {}", other.describe()),
                "",
            ))
        }
    };
    if let Some(k) = args.keys().find(|k| !ARGS_KEYS.contains(&k.as_str())) {
        return Err(unknown_key("args", k, ARGS_KEYS));
    }
    let mut top_k = match args.get("top_k") {
        None => TopK::Best,
        Some(Json::Null) => TopK::Ranked(None),
        Some(v) => match v.as_u64() {
            Some(k) if k >= 1 => TopK::Ranked(Some(k as usize)),
            _ => {
                return Err(TransformError::bad(
                    format!("top_k must be a positive integer or null, not {v}"),
                    "",
                ))
            }
        },
    };
    if args.get("return_all_scores").and_then(|v| v.as_bool()) == Some(true) {
        top_k = TopK::Ranked(None);
    }
    let score_fn = match args.get("function_to_apply") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(ScoreFn::parse(s).ok_or_else(|| {
            TransformError::bad(
                format!("function_to_apply \"{s}\" is not one of softmax, sigmoid, none"),
                "",
            )
        })?),
        Some(other) => {
            return Err(TransformError::bad(
                format!("function_to_apply must be a string, not {other}"),
                "",
            ))
        }
    };
    Ok(ClassifyRequest { model, revision, top_k, score_fn, dtype })
}

/// The inputs of a call: each element a text, or a JSON object `{"text", "text_pair"}`
/// for text-pair classification (the form Hugging Face pipelines take).
pub fn classify_inputs(inputs: &Value) -> Result<Vec<ClassifyInput>, TransformError> {
    let items = match inputs {
        Value::Array(items) => items,
        Value::Null => return Err(TransformError::NullInput("inputs is NULL".into())),
        other => {
            return Err(TransformError::bad(
                format!("inputs must be text[], not {}", other.describe()),
                "",
            ))
        }
    };
    if items.is_empty() {
        return Err(TransformError::bad(
            "inputs is empty: there is nothing to classify",
            "Pass at least one text, e.g. inputs => ARRAY['I loved it'].",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Null => Err(TransformError::NullInput(format!("inputs[{}] is NULL", i + 1))),
            Value::Text(t) => Ok(pair_or_text(t)),
            Value::Json(j) => Ok(pair_or_text(&j.to_string())),
            other => Err(TransformError::bad(
                format!("inputs[{}] must be text, not {}", i + 1, other.describe()),
                "",
            )),
        })
        .collect()
}

fn pair_or_text(t: &str) -> ClassifyInput {
    if t.trim_start().starts_with('{') {
        if let Ok(Json::Object(m)) = serde_json::from_str::<Json>(t) {
            if let Some(Json::String(text)) = m.get("text") {
                let text_pair = m.get("text_pair").and_then(|p| p.as_str()).map(str::to_string);
                return ClassifyInput { text: text.clone(), text_pair };
            }
        }
    }
    ClassifyInput { text: t.to_string(), text_pair: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Json) -> Map<String, Json> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn text_task_is_shorthand() {
        let m = task_object(&Value::Text("text-classification".into())).unwrap();
        assert_eq!(Json::Object(m), json!({"task": "text-classification"}));
        let m = task_object(&Value::Text("{\"task\": \"x\"}".into())).unwrap();
        assert_eq!(m.get("task"), Some(&json!("x")));
        assert!(matches!(
            task_object(&Value::Text("{\"task\": ".into())),
            Err(TransformError::InvalidJson(_))
        ));
    }

    #[test]
    fn dtypes_parse_as_pipelines_take_them_and_bad_ones_are_named() {
        let dtype = |v: Json| Dtype::parse(&obj(v));
        assert_eq!(dtype(json!({})).unwrap(), Dtype::Auto);
        assert_eq!(dtype(json!({"torch_dtype": null})).unwrap(), Dtype::Auto);
        assert_eq!(dtype(json!({"torch_dtype": "torch.bfloat16"})).unwrap(), Dtype::BFloat16);
        assert_eq!(dtype(json!({"dtype": "Float32"})).unwrap(), Dtype::Float32);
        assert_eq!(dtype(json!({"dtype": "auto", "torch_dtype": "bf16"})).unwrap(), Dtype::Auto);
        let e = dtype(json!({"torch_dtype": "int4"})).unwrap_err();
        assert!(
            matches!(&e, TransformError::BadArgument { .. }) && e.to_string().contains("\"int4\""),
            "{e}"
        );
        let e = dtype(json!({"dtype": "float16"})).unwrap_err();
        assert!(matches!(e, TransformError::Unsupported(_)), "{e}");
        assert!(dtype(json!({"dtype": 16})).is_err());
        let r = classify_request(
            &obj(json!({"task": "text-classification", "model": "m", "dtype": "bfloat16"})),
            &Value::Null,
        )
        .unwrap();
        assert_eq!(r.dtype, Dtype::BFloat16);
    }

    #[test]
    fn requests_are_checked() {
        let ok = classify_request(
            &obj(json!({"task": "text-classification", "model": "m"})),
            &Value::Json(json!({"top_k": 2})),
        )
        .unwrap();
        assert_eq!(ok.top_k, TopK::Ranked(Some(2)));
        let all = classify_request(
            &obj(json!({"task": "sentiment-analysis", "model": "m"})),
            &Value::Json(json!({"top_k": null})),
        )
        .unwrap();
        assert_eq!(all.top_k, TopK::Ranked(None));
        let err =
            |t: Json, a: Json| classify_request(&obj(t), &Value::Json(a)).unwrap_err().to_string();
        assert!(err(json!({"task": "text-classification"}), json!({})).contains("names no model"));
        assert!(err(json!({"task": "summarize", "model": "m"}), json!({}))
            .contains("unknown task \"summarize\""));
        assert!(matches!(
            classify_request(&obj(json!({"task": "summarization", "model": "m"})), &Value::Null),
            Err(TransformError::Unsupported(_))
        ));
        assert!(err(json!({"task": "text-classification", "model": "m"}), json!({"topk": 1}))
            .contains("unknown args key \"topk\""));
        assert!(err(json!({"task": "text-classification", "model": "m"}), json!({"top_k": 0}))
            .contains("top_k"));
    }

    #[test]
    fn inputs_take_pairs_and_reject_nulls() {
        let v = Value::Array(vec![
            Value::Text("plain {".into()),
            Value::Text("{\"text\": \"a\", \"text_pair\": \"b\"}".into()),
        ]);
        let got = classify_inputs(&v).unwrap();
        assert_eq!(got[0], ClassifyInput { text: "plain {".into(), text_pair: None });
        assert_eq!(got[1], ClassifyInput { text: "a".into(), text_pair: Some("b".into()) });
        let e =
            classify_inputs(&Value::Array(vec![Value::Text("a".into()), Value::Null])).unwrap_err();
        assert!(e.to_string().contains("inputs[2] is NULL"));
        assert!(classify_inputs(&Value::Array(vec![])).unwrap_err().to_string().contains("empty"));
    }
}
