//! One `pgml.tune(task => 'conversation')` call on the async side: checks, data, split,
//! base model, records, the training job on the worker pool with its progress relayed as
//! notices and `pgml.logs` rows, then the adapter's files, metrics and deployment.

use std::sync::Arc;

use pgmld_sql::CallContext;
use serde_json::{json, Map, Value as Json};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::data::{self, ChatRow, Conversations};
use super::job::{self, ConversationOutcome, ConversationProgress, ConversationSpec};
use super::base;
use crate::error::{Result, TuneError};
use crate::options::{Task, TestSize, TuneRequest};
use crate::card::{self, ModelCard};
use crate::push::{PushEvent, PushSetup, Pusher};
use crate::push_relay::{card_metrics, next_push_event, push_final, relay, HubPush};
use crate::tuner::{info, warning, worker_name, Tuned, Tuner};
use crate::{files, progress, records, resolve, split};

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
    let mut take = |idx: &[usize]| -> Vec<ChatRow> { idx.iter().filter_map(|&i| rows[i].take()).collect() };
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
/// dataset_args keys, no tokenizer_args (max_seq_length replaces them), no push to the Hub
/// (the adapter is stored in pgml.files), a valid lora_config.
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

/// What a conversation model card lists as its setup: the training arguments as stored (no
/// token), the conversation options and the split.
fn card_setup(req: &TuneRequest) -> Vec<(String, Json)> {
    let mut setup = card::pairs(&serde_json::to_value(&req.training).unwrap_or_default());
    let c = &req.conversation;
    let lora = if c.lora_config.is_null() { job::postgresml_default_lora() } else { c.lora_config.clone() };
    setup.push(("lora_config".into(), lora));
    setup.push(("load_in_8bit".into(), json!(c.load_in_8bit)));
    setup.push(("max_seq_length".into(), json!(c.max_seq_length)));
    setup.push(("packing".into(), json!(c.packing)));
    setup.push(("train_on_prompt".into(), json!(c.train_on_prompt)));
    if let Some(t) = &c.prompt_template {
        setup.push(("prompt_template".into(), json!(t)));
    }
    let test_size = match req.test_size {
        TestSize::Fraction(f) => json!(f),
        TestSize::Rows(n) => json!(n),
    };
    setup.push(("test_size".into(), test_size));
    setup.push(("test_sampling".into(), json!(req.test_sampling.name())));
    setup
}

impl Tuner {
    /// Runs a conversation tune for project `project_id` (already found or created with
    /// task conversation) on `client`; `push` uploads the adapter to the Hub.
    pub(crate) async fn run_conversation(
        &self,
        client: Client,
        req: TuneRequest,
        ctx: &CallContext,
        project_id: i64,
        push: Option<PushSetup>,
    ) -> Result<Tuned> {
        check_request(&req)?;
        let relation = req.relation_name.as_deref().ok_or_else(|| {
            TuneError::Null("pgml.tune relation_name must name a table or view with the training conversations".into())
        })?;
        let model_name = req.model_name.clone().ok_or_else(|| {
            TuneError::Null(
                "pgml.tune model_name must name a base causal LM (a Hugging Face id, a local directory or a .gguf file)".into(),
            )
        })?;
        let conv = data::read(&client, relation, &req.dataset).await?;
        let (relation_name, columns) = (conv.name.clone(), conv.columns.clone());
        let Split { train, eval, analysis } = split_rows(conv, &req)?;
        if eval.is_empty() {
            warning(ctx, "test_size leaves no test rows: the model gets no eval_loss, and deploys only onto a project without a deployed model".into());
        }
        let mut hub = self.hub.clone();
        if let Some(token) = &req.conversation.token {
            hub.token = Some(token.0.clone());
        }
        let located = resolve::locate(&client, &model_name).await?;
        let source = resolve::fetch(&client, &located, &hub, &self.work_dir).await?;
        let (dir, name) = (source.dir.clone(), model_name.clone());
        tokio::task::spawn_blocking(move || base::check(&dir, &name))
            .await
            .map_err(|e| TuneError::Internal(format!("checking the base model: {e}")))??;
        let base_name = base::adapter_base_name(&located, &source.dir);
        let test_size = match req.test_size {
            TestSize::Fraction(f) => f,
            TestSize::Rows(n) => n as f64,
        };
        let columns: Map<String, Json> = columns.into_iter().map(|(c, t)| (c, Json::String(t))).collect();
        let snapshot_id = records::snapshot(
            &client,
            &records::SnapshotInfo {
                relation: &relation_name,
                y_column: &req.dataset.assistant_column,
                test_size,
                test_sampling: req.test_sampling.name(),
                columns: Json::Object(columns),
                analysis,
            },
            req.materialize_snapshot,
        )
        .await?;
        let new = records::NewModel {
            project_id,
            parent_id: source.parent_id,
            snapshot_id,
            algorithm: &model_name,
            hyperparams: &req.stored_hyperparams,
        };
        let (model_id, job_id) = records::start_model(&client, &new, &worker_name(), &req.stored_request).await?;
        let ids = (project_id, model_id, job_id);
        if req.training.push_to_hub && self.hub.offline {
            let message = "HF_HUB_OFFLINE is set, so pgmld does not reach the Hub".to_string();
            relay(&client, ctx, (project_id, model_id), &PushEvent::Failed { step: None, message, fatal: true }).await;
        }
        let tag = format!("{}-model-{model_id}", ctx.database.replace('/', "_"));
        let mut hub_push = push.map(|setup| {
            let card = ModelCard {
                project: req.project_name.clone(),
                task: Task::Conversation.name().to_string(),
                base_model: model_name.clone(),
                base_origin: source.origin.clone(),
                relation: relation_name.clone(),
                labels: vec![],
                rows: Some((train.len(), eval.len())),
                setup: card_setup(&req),
                metrics: vec![],
                repo_id: None,
            };
            HubPush { pusher: Pusher::start(setup, self.work_dir.join(format!("ckpt-{tag}"))), card }
        });
        let out_dir = self.work_dir.join(format!("out-{tag}"));
        let _ = std::fs::remove_dir_all(&out_dir);
        let spec = ConversationSpec {
            base: source.dir.clone(),
            base_name,
            train: Arc::new(train),
            eval: Arc::new(eval),
            training: req.training.clone(),
            options: req.conversation.clone(),
            out_dir: out_dir.clone(),
            checkpoint_dir: hub_push.as_ref().and_then(|h| h.pusher.checkpoint_dir()),
        };
        let mut client = client;
        let trained = self.train_conversation(&client, ctx, spec, ids, &mut hub_push).await;
        // Keeps an extracted base alive until the worker is done with it.
        drop(source);
        let result = match trained {
            Ok(outcome) => {
                let done = (&outcome, out_dir.as_path());
                self.finish_conversation(&mut client, &req, ctx, ids, done, &mut hub_push).await
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&out_dir);
        match result {
            Ok(deployed) => Ok(Tuned { task: Task::Conversation, algorithm: model_name, deployed, model_id }),
            Err(e) => {
                let cancelled = matches!(e, TuneError::Cancelled);
                if let Err(rec) = records::fail(&client, model_id, job_id, &e.reason(), cancelled).await {
                    tracing::error!(model_id, "cannot record the failed tune: {rec}");
                }
                Err(e)
            }
        }
    }

    /// Runs the job on a worker and relays its progress (notices, pgml.logs, the job's
    /// progress) and the uploader's events until it ends.
    async fn train_conversation(
        &self,
        client: &Client,
        ctx: &CallContext,
        spec: ConversationSpec,
        (project_id, model_id, job_id): (i64, i64, i64),
        hub: &mut Option<HubPush>,
    ) -> Result<ConversationOutcome> {
        let ahead = self.pool.jobs_ahead();
        if ahead > 0 {
            info(ctx, format!("waiting for a training worker: {ahead} job(s) ahead of model {model_id}"));
        }
        info(
            ctx,
            progress::notice_text(&json!({
                "status": "queued", "model_id": model_id, "train_rows": spec.train.len(), "test_rows": spec.eval.len(),
            })),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = ctx.cancelled.clone();
        let result = self.pool.submit(move |device| job::run(spec, device, cancel, tx));
        let mut max_steps = 0;
        loop {
            let p = tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => break,
                },
                ev = next_push_event(hub) => {
                    relay(client, ctx, (project_id, model_id), &ev).await;
                    continue;
                }
            };
            let logs = match p {
                ConversationProgress::Started(started) => {
                    let mut v = json!({"status": "training", "model_id": model_id});
                    if let (Json::Object(o), Json::Object(extra)) = (&mut v, started) {
                        o.extend(extra);
                    }
                    v
                }
                ConversationProgress::Log(ev, elapsed) => {
                    max_steps = ev.max_steps;
                    let _ = records::progress(client, job_id, ev.step as f64 / ev.max_steps.max(1) as f64).await;
                    progress::log_event(&ev, elapsed, 0)
                }
                ConversationProgress::Eval { step, epoch, metrics } => {
                    let e = progress::metrics_event(metrics, epoch, step, max_steps.max(step));
                    if let Some(h) = hub.as_mut() {
                        h.card.metrics = card_metrics(&e);
                    }
                    e
                }
                ConversationProgress::Saved { step, dir } => {
                    match hub.as_ref() {
                        Some(h) => h.pusher.checkpoint(step, dir, h.card.clone()),
                        None => {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                    }
                    continue;
                }
                ConversationProgress::SaveFailed { step, message } => {
                    let message = format!("the checkpoint could not be written: {message}");
                    relay(client, ctx, (project_id, model_id), &PushEvent::Failed { step: Some(step), message, fatal: false }).await;
                    continue;
                }
            };
            info(ctx, progress::notice_text(&logs));
            records::log(client, model_id, project_id, &logs).await?;
        }
        result
            .await
            .map_err(|_| TuneError::Internal("the training worker stopped without a result (it panicked; see pgmld's log)".into()))?
    }

    /// Reports the summaries, stores the adapter's files, records metrics, deploys when the
    /// model's eval_loss is lower than the deployed one's, and pushes the adapter.
    async fn finish_conversation(
        &self,
        client: &mut Client,
        req: &TuneRequest,
        ctx: &CallContext,
        (project_id, model_id, job_id): (i64, i64, i64),
        (outcome, out_dir): (&ConversationOutcome, &std::path::Path),
        hub: &mut Option<HubPush>,
    ) -> Result<bool> {
        let steps = outcome.train.global_step;
        let train = progress::train_summary(&outcome.train, steps);
        info(ctx, progress::notice_text(&train));
        records::log(client, model_id, project_id, &train).await?;
        let mut metrics = train.as_object().cloned().unwrap_or_default();
        if let Some(eval) = &outcome.eval {
            let e = progress::metrics_event(eval.clone(), outcome.train.epoch, steps, steps);
            info(ctx, progress::notice_text(&e));
            records::log(client, model_id, project_id, &e).await?;
            if let Some(o) = e.as_object() {
                metrics.extend(o.clone());
            }
        }
        for k in ["timestamp", "progress", "eta_seconds", "max_steps"] {
            metrics.remove(k);
        }
        if let Json::Object(extra) = &outcome.stats {
            metrics.extend(extra.clone());
        }
        let (n_files, bytes) = files::store_dir(client, model_id, out_dir, self.file_part_bytes).await?;
        metrics.insert("stored_files".into(), json!(n_files));
        metrics.insert("stored_bytes".into(), json!(bytes));
        let metrics = Json::Object(metrics);
        records::succeed(client, model_id, job_id, &metrics).await?;
        let eval_loss = outcome.eval.as_ref().and_then(|e| e.get("eval_loss")).and_then(Json::as_f64);
        let score = records::Score { metric: "eval_loss", value: eval_loss, higher_is_better: false };
        let deployed = req.automatic_deploy && records::deploy_if_better_by(client, (project_id, model_id), score).await?;
        tracing::info!(model_id, deployed, files = n_files, bytes, "pgml.tune (conversation) finished");
        if let Some(h) = hub.take() {
            push_final(client, ctx, (project_id, model_id), h, (steps, out_dir), &metrics).await;
        }
        Ok(deployed)
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
                .map(|i| ChatRow { system: (i % 2 == 0).then(|| "sys".into()), user: format!("u{i}"), assistant: format!("a{i}") })
                .collect(),
        }
    }

    #[test]
    fn last_sampling_holds_out_the_last_rows_in_order() {
        let req = request(&[("test_size", Value::Float(0.25)), ("test_sampling", Value::Text("last".into()))]);
        let s = split_rows(rows(8), &req).unwrap();
        let users = |v: &[ChatRow]| v.iter().map(|r| r.user.clone()).collect::<Vec<_>>();
        assert_eq!(users(&s.train), ["u0", "u1", "u2", "u3", "u4", "u5"]);
        assert_eq!(users(&s.eval), ["u6", "u7"]);
        assert_eq!(s.analysis["rows_with_system"], json!(4));
        assert_eq!((s.analysis["train_rows"].clone(), s.analysis["test_rows"].clone()), (json!(6), json!(2)));
        assert!(split_rows(rows(0), &req).unwrap_err().to_string().contains("no rows"));
    }

    #[test]
    fn classification_keys_are_refused() {
        let hp = |v: Json| request(&[("hyperparams", Value::Json(v))]);
        let e = check_request(&hp(json!({"dataset_args": {"text_column": "t"}}))).unwrap_err();
        assert!(e.to_string().contains("text_column") && e.to_string().contains("conversation"), "{e}");
        let e = check_request(&hp(json!({"tokenizer_args": {"max_length": 8}}))).unwrap_err();
        assert!(e.to_string().contains("tokenizer_args"), "{e}");
        check_request(&hp(json!({"dataset_args": {"user_column": "q"}}))).unwrap();
        let e = check_request(&hp(json!({"lora_config": {"r": 0}}))).unwrap_err();
        assert!(matches!(e, TuneError::BadArgument { .. }) && e.to_string().contains('r'), "{e}");
    }
}
