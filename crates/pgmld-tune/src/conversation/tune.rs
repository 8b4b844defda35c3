//! A new `pgml.tune(task => 'conversation')` up to its recorded model row: the checks,
//! the relation's exchanges, the split and the base model; then [`crate::lifecycle`]
//! trains the adapter (progress, resumable checkpoints, files, deployment by `eval_loss`).

use std::sync::Arc;

use pgmld_sql::{CallContext, Caller};
use serde_json::{json, Value as Json};
use tokio_postgres::Client;

use super::base;
use super::data::{self, ChatRow, Conversations};
use super::job;
use crate::error::{Result, TuneError};
use crate::lifecycle::{Fresh, RunData, Snapshot};
use crate::options::{Task, TuneRequest};
use crate::push::PushSetup;
use crate::tuner::{warning, Tuned, Tuner};
use pgmld_models::resolve;

use crate::{access, split};

/// The data after the split, with the snapshot's analysis.
#[derive(Debug)]
struct Split {
    train: Vec<ChatRow>,
    eval: Vec<ChatRow>,
    analysis: Json,
}

fn split_rows(conv: Conversations, req: &TuneRequest) -> Result<Split> {
    if conv.rows.is_empty() {
        return Err(TuneError::Data(format!("relation {} has no rows to train on", conv.name)));
    }
    // One "class" for all rows: stratified sampling is then a seeded random sample.
    let classes = vec![0usize; conv.rows.len()];
    let s = split::split(&classes, req.test_size, req.test_sampling, req.training.seed)?;
    let mut rows: Vec<Option<ChatRow>> = conv.rows.into_iter().map(Some).collect();
    let mut take =
        |idx: &[usize]| -> Vec<ChatRow> { idx.iter().filter_map(|&i| rows[i].take()).collect() };
    let (train, eval) = (take(&s.train), take(&s.test));
    let with_system = train.iter().chain(&eval).filter(|r| r.system.is_some()).count();
    let analysis = json!({
        "rows": train.len() + eval.len(),
        "train_rows": train.len(),
        "test_rows": eval.len(),
        "system_column": conv.system_column,
        "rows_with_system": with_system,
    });
    Ok(Split { train, eval, analysis })
}

/// The checks a conversation call passes before anything is read or recorded: its own
/// dataset_args keys, no tokenizer_args (max_seq_length replaces them), a valid lora_config.
fn check_request(req: &TuneRequest) -> Result<()> {
    req.dataset.check_task(Task::Conversation)?;
    if req.stored_hyperparams.get("tokenizer_args").is_some_and(|v| !v.is_null()) {
        return Err(TuneError::bad(
            "hyperparams key \"tokenizer_args\" does not apply to task conversation",
            "Task conversation truncates with hyperparams.max_seq_length (default 1024).",
        ));
    }
    job::check_lora_config(&req.conversation.lora_config)
}

impl Tuner {
    /// The base model of a conversation call (`hyperparams.token` reads a gated one),
    /// checked to be a causal LM this build trains, and the name its adapter records.
    pub(crate) async fn conversation_base(
        &self,
        client: &Client,
        req: &TuneRequest,
        model_name: &str,
        caller: &Caller,
    ) -> Result<(resolve::ModelSource, String)> {
        let mut hub = (*self.hub).clone();
        if let Some(token) = &req.conversation.token {
            hub.token = Some(token.0.clone());
        }
        let located = resolve::locate(client, model_name, caller).await?;
        let source = resolve::fetch(client, &located, &hub, &self.work_dir).await?;
        let (dir, name) = (source.dir.clone(), model_name.to_string());
        tokio::task::spawn_blocking(move || base::check(&dir, &name))
            .await
            .map_err(|e| TuneError::Internal(format!("checking the base model: {e}")))??;
        let base_name = base::adapter_base_name(&located, &source.dir);
        Ok((source, base_name))
    }

    /// Runs a new conversation tune for project `project_id` (already found or created
    /// with task conversation) on `client`; `push` uploads the adapter to the Hub.
    pub(crate) async fn run_conversation(
        self: &Arc<Self>,
        client: Client,
        req: TuneRequest,
        ctx: &CallContext,
        project_id: i64,
        push: Option<PushSetup>,
    ) -> Result<Tuned> {
        check_request(&req)?;
        let relation = req.relation_name.as_deref().ok_or_else(|| {
            TuneError::Null(
                "pgml.tune relation_name must name a table or view with the training conversations"
                    .into(),
            )
        })?;
        let model_name = req.model_name.clone().ok_or_else(|| {
            TuneError::Null(
                "pgml.tune model_name must name a base causal LM (a Hugging Face id, a local directory or a .gguf file)".into(),
            )
        })?;
        let conv =
            access::read_as(&client, &ctx.caller.role, data::read(&client, relation, &req.dataset))
                .await?;
        let (relation_name, columns) = (conv.name.clone(), conv.columns.clone());
        let Split { train, eval, analysis } = split_rows(conv, &req)?;
        if eval.is_empty() {
            warning(ctx, "test_size leaves no test rows: the model gets no eval_loss, and deploys only onto a project without a deployed model".into());
        }
        let (source, base_name) =
            self.conversation_base(&client, &req, &model_name, &ctx.caller).await?;
        let fresh = Fresh {
            project: (project_id, Task::Conversation),
            model_name,
            source,
            data: RunData::Conversation { base_name, train: Arc::new(train), eval: Arc::new(eval) },
            snapshot: Snapshot {
                relation: relation_name,
                y_column: req.dataset.assistant_column.clone(),
                columns,
                analysis,
            },
            push,
            req,
        };
        self.run_fresh(client, ctx, fresh).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmld_sql::{Args, Value};

    fn request(extra: &[(&'static str, Value)]) -> TuneRequest {
        let mut args: Args = [("project_name", Value::Text("p".into()))].into_iter().collect();
        for (k, v) in extra {
            args.insert(*k, v.clone());
        }
        TuneRequest::from_args(&args).unwrap()
    }

    fn rows(n: usize) -> Conversations {
        Conversations {
            name: "chats".into(),
            columns: vec![],
            system_column: Some("system".into()),
            rows: (0..n)
                .map(|i| ChatRow {
                    system: (i % 2 == 0).then(|| "sys".into()),
                    user: format!("u{i}"),
                    assistant: format!("a{i}"),
                })
                .collect(),
        }
    }

    #[test]
    fn last_sampling_holds_out_the_last_rows_in_order() {
        let req = request(&[
            ("test_size", Value::Float(0.25)),
            ("test_sampling", Value::Text("last".into())),
        ]);
        let s = split_rows(rows(8), &req).unwrap();
        let users = |v: &[ChatRow]| v.iter().map(|r| r.user.clone()).collect::<Vec<_>>();
        assert_eq!(users(&s.train), ["u0", "u1", "u2", "u3", "u4", "u5"]);
        assert_eq!(users(&s.eval), ["u6", "u7"]);
        assert_eq!(s.analysis["rows_with_system"], json!(4));
        assert_eq!(
            (s.analysis["train_rows"].clone(), s.analysis["test_rows"].clone()),
            (json!(6), json!(2))
        );
        assert!(split_rows(rows(0), &req).unwrap_err().to_string().contains("no rows"));
    }

    #[test]
    fn classification_keys_are_refused() {
        let hp = |v: Json| request(&[("hyperparams", Value::Json(v))]);
        let e = check_request(&hp(json!({"dataset_args": {"text_column": "t"}}))).unwrap_err();
        assert!(
            e.to_string().contains("text_column") && e.to_string().contains("conversation"),
            "{e}"
        );
        let e = check_request(&hp(json!({"tokenizer_args": {"max_length": 8}}))).unwrap_err();
        assert!(e.to_string().contains("tokenizer_args"), "{e}");
        check_request(&hp(json!({"dataset_args": {"user_column": "q"}}))).unwrap();
        let e = check_request(&hp(json!({"lora_config": {"r": 0}}))).unwrap_err();
        assert!(matches!(e, TuneError::BadArgument { .. }) && e.to_string().contains('r'), "{e}");
    }
}
