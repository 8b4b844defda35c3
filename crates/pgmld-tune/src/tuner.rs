//! One `pgml.tune` call end to end: records, data, split, model lookup, the training job on
//! the worker pool, live progress (notices + pgml.logs), files, deployment.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use pgmld_datasets::hub::HubConfig;
use pgmld_ml::{Example, TrainEvent, TrainOutcome};
use pgmld_sql::{CallContext, Notice};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::card::{self, ModelCard};
use crate::data::{self, Relation};
use crate::error::{Result, TuneError};
use crate::job::{self, Progress, TrainSpec};
use crate::options::{Task, TestSize, TuneRequest};
use crate::pool::WorkerPool;
use crate::push::{PushEvent, PushSetup, Pusher};
use crate::{files, progress, records, resolve, split};

/// Serves `pgml.tune` for every database of the upstream.
pub struct Tuner {
    /// Upstream URL for pgmld's own connections; the database is swapped per call.
    pub base_url: String,
    /// Hub endpoint, token, cache (for `model_name` repo ids).
    pub hub: HubConfig,
    /// The training threads.
    pub pool: Arc<WorkerPool>,
    /// Where models are unpacked and trained models written before they are stored.
    pub work_dir: PathBuf,
    /// Part size in pgml.files.
    pub file_part_bytes: usize,
    /// pgmld's `hub_token` setting: the token `push_to_hub` uses when the call passes none
    /// (before `HF_TOKEN`). Never logged.
    pub hub_token: Option<String>,
}

/// A tune's pushes to the Hub: the uploader and the model card it pushes.
struct HubPush {
    pusher: Pusher,
    card: ModelCard,
}

/// The uploader's next event; never resolves when there is no uploader or it has ended.
async fn next_push_event(hub: &mut Option<HubPush>) -> PushEvent {
    if let Some(h) = hub {
        if let Some(ev) = h.pusher.next_event().await {
            return ev;
        }
    }
    std::future::pending().await
}

/// What a successful tune reports.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// The project's task.
    pub task: Task,
    /// The base model name.
    pub algorithm: String,
    /// Whether the new model was deployed.
    pub deployed: bool,
    /// The new model's id.
    pub model_id: i64,
}

fn info(ctx: &CallContext, message: String) {
    (ctx.notices)(Notice { severity: "INFO", message });
}

fn warning(ctx: &CallContext, message: String) {
    (ctx.notices)(Notice { severity: "WARNING", message });
}

/// The data split into examples, with the label names.
struct Prepared {
    labels: Vec<String>,
    train: Vec<Example>,
    eval: Vec<Example>,
    unseen: BTreeSet<String>,
    analysis: Json,
}

fn prepare(rel: &Relation, req: &TuneRequest) -> Result<Prepared> {
    if rel.rows.is_empty() {
        return Err(TuneError::Data(format!("relation {} has no rows to train on", rel.name)));
    }
    // Class keys for stratification, in first-seen order.
    let mut keys: HashMap<&str, usize> = HashMap::new();
    let classes: Vec<usize> = rel
        .rows
        .iter()
        .map(|r| {
            let n = keys.len();
            *keys.entry(r.class.as_str()).or_insert(n)
        })
        .collect();
    let s = split::split(&classes, req.test_size, req.test_sampling, req.training.seed)?;
    let labels = data::label_names(s.train.iter().map(|&i| rel.rows[i].class.as_str()), rel.integer_classes);
    if labels.len() < 2 {
        return Err(TuneError::Data(format!(
            "the training rows of {} have a single class ({}); classification needs at least two",
            rel.name,
            labels.first().map(String::as_str).unwrap_or("none")
        )));
    }
    let ids = data::label_ids(&labels);
    let example = |i: usize| {
        let r = &rel.rows[i];
        ids.get(r.class.as_str()).map(|&label| Example { text: r.text.clone(), text_pair: r.text_pair.clone(), label })
    };
    let train: Vec<Example> = s.train.iter().filter_map(|&i| example(i)).collect();
    let mut unseen = BTreeSet::new();
    let mut eval = Vec::with_capacity(s.test.len());
    for &i in &s.test {
        match example(i) {
            Some(e) => eval.push(e),
            None => {
                unseen.insert(rel.rows[i].class.clone());
            }
        }
    }
    let analysis = json!({
        "rows": rel.rows.len(),
        "train_rows": train.len(),
        "test_rows": eval.len(),
        "test_rows_with_unseen_class": s.test.len() - eval.len(),
        "class_counts": data::class_counts(rel.rows.iter().map(|r| r.class.as_str())),
    });
    Ok(Prepared { labels, train, eval, unseen, analysis })
}

impl Tuner {
    async fn connect(&self, database: &str) -> Result<Client> {
        let url = pgmld_schema::url_with_database(&self.base_url, database)
            .map_err(|e| TuneError::Internal(format!("upstream URL: {e}")))?;
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| TuneError::pg(format!("connecting to database {database}"), e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("pgml.tune connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// Runs one tune for the calling session.
    pub async fn run(&self, req: TuneRequest, ctx: &CallContext) -> Result<Tuned> {
        // A call that cannot push fails before anything is recorded or trained.
        // Offline, nothing is pushed: the tune says so once its model is recorded.
        let push = match req.training.push_to_hub && !self.hub.offline {
            true => Some(PushSetup::prepare(&req.training, &req.project_name, self.hub_token.as_deref(), &self.hub)?),
            false => None,
        };
        let mut client = self.connect(&ctx.database).await?;
        let (project_id, task) = records::project(&client, &req.project_name, req.task).await?;
        if task == Task::Conversation {
            return Err(TuneError::Unsupported {
                message: "task conversation is not served by this pgmld build yet".into(),
                hint: Some("Use text-classification or text-pair-classification.".into()),
            });
        }
        let relation = req.relation_name.as_deref().ok_or_else(|| {
            TuneError::Null("pgml.tune relation_name must name a table or view with the training data".into())
        })?;
        let model_name = req.model_name.clone().ok_or_else(|| {
            TuneError::Null("pgml.tune model_name must name a pretrained model (a Hugging Face id such as distilbert-base-uncased, a local directory, or a pgml project)".into())
        })?;
        let rel = data::read(&client, relation, task, &req.dataset).await?;
        let prep = prepare(&rel, &req)?;
        if !prep.unseen.is_empty() {
            let list: Vec<&str> = prep.unseen.iter().map(String::as_str).collect();
            warning(
                ctx,
                format!(
                    "{} test rows have classes never seen in training ({}); they are left out of the evaluation",
                    prep.analysis["test_rows_with_unseen_class"], list.join(", ")
                ),
            );
        }
        let source = resolve::resolve(&client, &model_name, &self.hub, &self.work_dir).await?;
        let test_size = match req.test_size {
            TestSize::Fraction(f) => f,
            TestSize::Rows(n) => n as f64,
        };
        let columns: serde_json::Map<String, Json> =
            rel.columns.iter().map(|(c, t)| (c.clone(), Json::String(t.clone()))).collect();
        let snapshot_id = records::snapshot(
            &client,
            &records::SnapshotInfo {
                relation: &rel.name,
                y_column: &req.dataset.class_column,
                test_size,
                test_sampling: req.test_sampling.name(),
                columns: Json::Object(columns),
                analysis: prep.analysis.clone(),
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
        let worker = format!("pgmld-{}", std::process::id());
        let (model_id, job_id) = records::start_model(&client, &new, &worker).await?;
        if req.training.push_to_hub && self.hub.offline {
            let message = "HF_HUB_OFFLINE is set, so pgmld does not reach the Hub".to_string();
            relay(&client, ctx, (project_id, model_id), &PushEvent::Failed { step: None, message, fatal: true }).await;
        }
        let mut hub = push.map(|setup| {
            let checkpoints = self.work_dir.join(format!("ckpt-{}-model-{model_id}", ctx.database.replace('/', "_")));
            let card = ModelCard {
                project: req.project_name.clone(),
                task: task.name().to_string(),
                base_model: model_name.clone(),
                base_origin: source.origin.clone(),
                relation: rel.name.clone(),
                labels: prep.labels.clone(),
                rows: Some((prep.train.len(), prep.eval.len())),
                setup: card_setup(&req),
                metrics: vec![],
                repo_id: None,
            };
            HubPush { pusher: Pusher::start(setup, checkpoints), card }
        });
        let out_dir = self.work_dir.join(format!("out-{}-model-{model_id}", ctx.database.replace('/', "_")));
        let _ = std::fs::remove_dir_all(&out_dir);
        let spec = TrainSpec {
            model_dir: source.dir.clone(),
            labels: prep.labels,
            train: prep.train,
            eval: prep.eval,
            training: req.training.clone(),
            tokenizer: req.tokenizer.clone(),
            out_dir,
            checkpoint_dir: hub.as_ref().and_then(|h| h.pusher.checkpoint_dir()),
        };
        let outcome = self.train(&client, ctx, spec, (project_id, model_id, job_id), &mut hub).await;
        let (outcome, out_dir) = match outcome {
            Ok(o) => o,
            Err(e) => {
                let cancelled = matches!(e, TuneError::Cancelled);
                if let Err(rec) = records::fail(&client, model_id, job_id, &e.reason(), cancelled).await {
                    tracing::error!(model_id, "cannot record the failed tune: {rec}");
                }
                return Err(e);
            }
        };
        let ids = (project_id, model_id, job_id);
        let finished = self.finish(&mut client, &req, ctx, ids, (&outcome, &out_dir), &mut hub).await;
        let _ = std::fs::remove_dir_all(&out_dir);
        let deployed = match finished {
            Ok(d) => d,
            Err(e) => {
                if let Err(rec) = records::fail(&client, model_id, job_id, &e.reason(), false).await {
                    tracing::error!(model_id, "cannot record the failed tune: {rec}");
                }
                return Err(e);
            }
        };
        Ok(Tuned { task, algorithm: model_name, deployed, model_id })
    }

    /// Runs the job on a worker and relays its progress until it ends.
    async fn train(
        &self,
        client: &Client,
        ctx: &CallContext,
        spec: TrainSpec,
        (project_id, model_id, job_id): (i64, i64, i64),
        hub: &mut Option<HubPush>,
    ) -> Result<(TrainOutcome, PathBuf)> {
        let out_dir = spec.out_dir.clone();
        let ahead = self.pool.jobs_ahead();
        if ahead > 0 {
            info(ctx, format!("waiting for a training worker: {ahead} job(s) ahead of model {model_id}"));
        }
        info(
            ctx,
            progress::notice_text(&json!({
                "status": "queued", "model_id": model_id, "train_rows": spec.train.len(),
                "test_rows": spec.eval.len(), "labels": spec.labels,
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
                Progress::Started { device, max_length, parameters } => {
                    json!({"status": "training", "model_id": model_id, "device": device,
                           "max_length": max_length, "trainable_parameters": parameters})
                }
                Progress::Event(TrainEvent::Log(ev), elapsed) => {
                    max_steps = ev.max_steps;
                    let _ = records::progress(client, job_id, ev.step as f64 / ev.max_steps.max(1) as f64).await;
                    progress::log_event(&ev, elapsed)
                }
                Progress::Event(TrainEvent::Eval { step, epoch, metrics }, _) => {
                    let e = progress::eval_event(&metrics, epoch, step, max_steps.max(step));
                    if let Some(h) = hub.as_mut() {
                        h.card.metrics = card_metrics(&e);
                    }
                    e
                }
                Progress::Saved { step, dir } => {
                    match hub.as_ref() {
                        Some(h) => h.pusher.checkpoint(step, dir, h.card.clone()),
                        None => {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                    }
                    continue;
                }
                Progress::SaveFailed { step, message } => {
                    let ev = PushEvent::Failed {
                        step: Some(step),
                        message: format!("the checkpoint could not be written: {message}"),
                        fatal: false,
                    };
                    relay(client, ctx, (project_id, model_id), &ev).await;
                    continue;
                }
            };
            info(ctx, progress::notice_text(&logs));
            records::log(client, model_id, project_id, &logs).await?;
        }
        let outcome = result
            .await
            .map_err(|_| TuneError::Internal("the training worker stopped without a result (it panicked; see pgmld's log)".into()))??;
        Ok((outcome, out_dir))
    }

    /// Reports the summaries, stores the files, records metrics and deploys.
    async fn finish(
        &self,
        client: &mut Client,
        req: &TuneRequest,
        ctx: &CallContext,
        (project_id, model_id, job_id): (i64, i64, i64),
        (outcome, out_dir): (&TrainOutcome, &std::path::Path),
        hub: &mut Option<HubPush>,
    ) -> Result<bool> {
        let max_steps = outcome.train.global_step;
        let train = progress::train_summary(&outcome.train, max_steps);
        info(ctx, progress::notice_text(&train));
        records::log(client, model_id, project_id, &train).await?;
        let mut metrics = train.as_object().cloned().unwrap_or_default();
        if let Some(eval) = &outcome.eval {
            let e = progress::eval_event(eval, outcome.train.epoch, outcome.train.global_step, max_steps);
            info(ctx, progress::notice_text(&e));
            records::log(client, model_id, project_id, &e).await?;
            if let Some(o) = e.as_object() {
                metrics.extend(o.clone());
            }
        }
        for k in ["timestamp", "progress", "eta_seconds", "max_steps"] {
            metrics.remove(k);
        }
        let (n_files, bytes) = files::store_dir(client, model_id, out_dir, self.file_part_bytes).await?;
        metrics.insert("stored_files".into(), json!(n_files));
        metrics.insert("stored_bytes".into(), json!(bytes));
        let metrics = Json::Object(metrics);
        records::succeed(client, model_id, job_id, &metrics).await?;
        let f1 = outcome.eval.as_ref().map(|e| e.eval_f1);
        let deployed = req.automatic_deploy && records::deploy_if_better(client, project_id, model_id, f1).await?;
        tracing::info!(model_id, deployed, files = n_files, bytes, "pgml.tune finished");
        if let Some(mut h) = hub.take() {
            // The final model, after pgml.files has it; the call returns once it is pushed.
            h.card.metrics = card_metrics(&metrics);
            let step = outcome.train.global_step;
            h.pusher.finish(step, out_dir.to_path_buf(), h.card.clone());
            loop {
                tokio::select! {
                    ev = h.pusher.next_event() => match ev {
                        Some(ev) => relay(client, ctx, (project_id, model_id), &ev).await,
                        None => break,
                    },
                    // A cancel stops the push (dropping the uploader), not the trained model.
                    _ = cancelled(&ctx.cancelled) => {
                        let message = "cancelled by the client before it finished".to_string();
                        let ev = PushEvent::Failed { step: Some(step), message, fatal: true };
                        relay(client, ctx, (project_id, model_id), &ev).await;
                        break;
                    }
                }
            }
        }
        Ok(deployed)
    }
}

/// The training setup a model card lists: the training arguments as stored (no token), the
/// tokenizer arguments and the split.
fn card_setup(req: &TuneRequest) -> Vec<(String, Json)> {
    let mut setup = card::pairs(&serde_json::to_value(&req.training).unwrap_or_default());
    setup.push(("tokenizer_args".into(), serde_json::to_value(&req.tokenizer).unwrap_or_default()));
    let test_size = match req.test_size {
        TestSize::Fraction(f) => json!(f),
        TestSize::Rows(n) => json!(n),
    };
    setup.push(("test_size".into(), test_size));
    setup.push(("test_sampling".into(), json!(req.test_sampling.name())));
    setup
}

/// The metrics a model card shows: evaluation and training results, not bookkeeping.
fn card_metrics(v: &Json) -> Vec<(String, Json)> {
    const SKIP: &[&str] = &["timestamp", "progress", "eta_seconds", "max_steps", "stored_files", "stored_bytes"];
    card::pairs(v).into_iter().filter(|(k, _)| !SKIP.contains(&k.as_str())).collect()
}

/// Tells the client and pgml.logs what the uploader did: INFO notices for the repo and each
/// commit, WARNINGs for failures. A log row that cannot be written only goes to pgmld's log:
/// pushes never fail a tune.
async fn relay(client: &Client, ctx: &CallContext, (project_id, model_id): (i64, i64), ev: &PushEvent) {
    let logs = ev.log_json();
    match ev.warning() {
        Some(w) => warning(ctx, w),
        None => info(ctx, progress::notice_text(&logs)),
    }
    if let Err(e) = records::log(client, model_id, project_id, &logs).await {
        tracing::warn!(model_id, "cannot log a push_to_hub event: {e}");
    }
}

/// Resolves once `flag` is set (polled every 100 ms).
async fn cancelled(flag: &std::sync::atomic::AtomicBool) {
    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
