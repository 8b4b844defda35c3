//! What a task object may leave out, as with PostgresML: the model (each task has a
//! documented default, as a `transformers` pipeline does) or the task (inferred from the
//! model: a pgml project's task, a GGUF file's, or the architecture in its config.json).
//! The call is completed here, before its request is checked, so everything after sees
//! an ordinary `{"task": ..., "model": ...}`.

use std::path::Path;

use pgmld_models::resolve::{self, ModelRef};
use pgmld_sql::{Args, CallContext, Notice, Value};
use serde_json::{Map, Value as Json};

use crate::error::TransformError;
use crate::request::task_object;
use crate::transformer::Transformer;

/// The model of each task when the task object names none. Hub ids, so offline they must
/// be in the Hugging Face cache; a missing one is a 58P01 naming it. Classification uses
/// `transformers`' own pipeline default; generation uses an instruct model of an
/// architecture pgmld serves (`transformers`' `gpt2` is not one).
pub const DEFAULT_MODELS: &[(&str, &str)] = &[
    ("text-classification", "distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    ("sentiment-analysis", "distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    ("text-pair-classification", "cross-encoder/nli-distilroberta-base"),
    ("text-generation", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("conversational", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("conversation", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("chat", "HuggingFaceTB/SmolLM2-135M-Instruct"),
];

/// The default model of `task`, if it has one.
pub fn default_model(task: &str) -> Option<&'static str> {
    DEFAULT_MODELS.iter().find(|(t, _)| *t == task).map(|(_, m)| *m)
}

/// The task a model's config.json implies: its first architecture's head.
pub fn task_of_config(config: &Json) -> Option<&'static str> {
    let arch = config.get("architectures")?.as_array()?.first()?.as_str()?;
    if arch.ends_with("ForSequenceClassification") {
        Some("text-classification")
    } else if arch.ends_with("ForCausalLM") {
        Some("text-generation")
    } else {
        None
    }
}

/// The pgml.transform task of a pgml project's task.
fn task_of_project(task: &str) -> &str {
    match task {
        "conversation" => "conversational",
        other => other,
    }
}

impl Transformer {
    /// Fills in the model or the task a call's task object leaves out (see the module
    /// docs). Anything else, malformed objects included, is left for the request checks to
    /// report.
    pub async fn complete_task(
        &self,
        ctx: &CallContext,
        args: &mut Args,
    ) -> Result<(), TransformError> {
        let Some(given) = args.get("task").filter(|t| !matches!(t, Value::Null)) else {
            return Ok(());
        };
        let Ok(mut task) = task_object(given) else { return Ok(()) };
        let name = task.get("task").and_then(Json::as_str).map(str::to_string);
        match (name, task.get("model")) {
            (Some(name), None) => {
                let Some(model) = default_model(&name) else { return Ok(()) };
                (ctx.notices)(Notice {
                    severity: "NOTICE",
                    message: format!(
                        "the task object names no model: {name} uses its default model, {model}"
                    ),
                });
                task.insert("model".into(), Json::String(model.into()));
            }
            (None, Some(Json::String(model))) if !model.trim().is_empty() => {
                let inferred = self.infer_task(ctx, model, &task).await?;
                task.insert("task".into(), Json::String(inferred));
            }
            _ => return Ok(()),
        }
        args.insert("task", Value::Json(Json::Object(task)));
        Ok(())
    }

    /// The task of `model`, for a task object with only a model.
    async fn infer_task(
        &self,
        ctx: &CallContext,
        model: &str,
        task: &Map<String, Json>,
    ) -> Result<String, TransformError> {
        let client = self.client(&ctx.database).await?;
        let located = resolve::locate(&client, model, &ctx.caller).await?;
        let config_dir = match &located {
            ModelRef::Stored { task, .. } => return Ok(task_of_project(task).to_string()),
            ModelRef::Gguf(_) => return Ok("text-generation".into()),
            ModelRef::Dir(_) | ModelRef::Hub(_) => {
                let revision = task.get("revision").and_then(Json::as_str);
                let tmp_root = self.work_dir.join("transform");
                resolve::fetch_at(&client, &located, revision, &self.hub, &tmp_root).await?.dir
            }
        };
        let config = read_config(&config_dir)?;
        task_of_config(&config).map(str::to_string).ok_or_else(|| {
            let arch = config.get("architectures").map(|a| a.to_string()).unwrap_or("none".into());
            TransformError::bad(
                format!("cannot tell the task of model \"{model}\" from its config.json (architectures: {arch})"),
                "Add \"task\" to the task object, e.g. {\"task\": \"text-classification\", \"model\": \"...\"}.",
            )
        })
    }
}

/// A checkpoint directory's config.json.
fn read_config(dir: &Path) -> Result<Json, TransformError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TransformError::Load {
        model: dir.display().to_string(),
        message: format!("reading {}: {e}", path.display()),
    })?;
    serde_json::from_str(&text).map_err(|e| TransformError::Load {
        model: dir.display().to_string(),
        message: format!("{} is not valid JSON: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_supported_task_has_a_default_and_architectures_imply_tasks() {
        for task in
            ["text-classification", "text-pair-classification", "text-generation", "conversational"]
        {
            assert!(default_model(task).is_some(), "{task}");
        }
        assert_eq!(default_model("summarization"), None);
        let bert = json!({"architectures": ["BertForSequenceClassification"]});
        assert_eq!(task_of_config(&bert), Some("text-classification"));
        let llama = json!({"architectures": ["LlamaForCausalLM"]});
        assert_eq!(task_of_config(&llama), Some("text-generation"));
        assert_eq!(task_of_config(&json!({"architectures": ["BertModel"]})), None);
        assert_eq!(task_of_config(&json!({})), None);
        assert_eq!(task_of_project("conversation"), "conversational");
    }
}
