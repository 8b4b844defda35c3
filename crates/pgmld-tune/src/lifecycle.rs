//! The life of a tune's model row once it is recorded, for both tasks: the training job on
//! the worker pool with its progress relayed (notices, `pgml.logs`, the job's progress),
//! resumable checkpoints into pgml.files, Hub pushes, then the files, metrics and
//! deployment; or the failure recorded.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pgmld_sql::CallContext;
use serde_json::{json, Map, Value as Json};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::conversation::job::postgresml_default_lora;
use crate::error::{Result, TuneError};
use crate::job::{Outcome, Progress, RunDirs, Work};
use crate::options::{Task, TestSize, TuneRequest};
use crate::push::{PushEvent, PushSetup, Pusher};
use crate::push_relay::{card_metrics, next_push_event, push_final, relay, HubPush};
pub(crate) use crate::run_data::RunData;
use crate::submit::Submission;
use crate::tuner::{info, warning, Tuned, Tuner};
use pgmld_models::{files, resolve};

use crate::{progress, records};
use pgmld_hub::card::{self, ModelCard};

/// How often a running job beats its heartbeat and looks for a cancel from another
/// session.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// A model row and what its training needs: a new tune's, or a resumed one's.
pub(crate) struct Run {
    pub(crate) req: TuneRequest,
    pub(crate) task: Task,
    pub(crate) model_name: String,
    /// The base model (kept alive, with any directory extracted for it, until the run ends).
    pub(crate) source: resolve::ModelSource,
    /// (project, model, job) ids.
    pub(crate) ids: (i64, i64, i64),
    pub(crate) data: RunData,
    pub(crate) relation: String,
    pub(crate) push: Option<PushSetup>,
    /// The checkpoint a resume goes on from (a directory removed afterwards).
    pub(crate) resume_from: Option<PathBuf>,
    /// Whether `checkpoint/dataset.jsonl` is stored already.
    pub(crate) dataset_stored: bool,
    /// The training thread (slot of the worker pool) the job was claimed for.
    pub(crate) slot: usize,
}

/// The snapshot of a new tune's relation.
pub(crate) struct Snapshot {
    /// The relation, as resolved.
    pub(crate) relation: String,
    /// The snapshot's `y_column_name`.
    pub(crate) y_column: String,
    /// The relation's columns and types.
    pub(crate) columns: Vec<(String, String)>,
    /// Row counts and the like (`pgml.snapshots.analysis`).
    pub(crate) analysis: Json,
}

/// A new tune of either task, read and split, before anything is recorded.
pub(crate) struct Fresh {
    pub(crate) req: TuneRequest,
    /// (project id, its task).
    pub(crate) project: (i64, Task),
    pub(crate) model_name: String,
    pub(crate) source: resolve::ModelSource,
    pub(crate) data: RunData,
    pub(crate) snapshot: Snapshot,
    pub(crate) push: Option<PushSetup>,
}

/// Records the snapshot, the model and its queued job (which this connection then holds the
/// lock of, so no worker claims it yet). Returns (model, job) ids.
async fn record_new(
    client: &Client,
    req: &TuneRequest,
    (project_id, parent_id): (i64, Option<i64>),
    s: Snapshot,
    base_model: &str,
    owner: &str,
) -> Result<(i64, i64)> {
    let test_size = match req.test_size {
        TestSize::Fraction(f) => f,
        TestSize::Rows(n) => n as f64,
    };
    let columns: Map<String, Json> =
        s.columns.into_iter().map(|(c, t)| (c, Json::String(t))).collect();
    let info = records::SnapshotInfo {
        relation: &s.relation,
        y_column: &s.y_column,
        test_size,
        test_sampling: req.test_sampling.name(),
        columns: Json::Object(columns),
        analysis: s.analysis,
    };
    let snapshot_id = records::snapshot(client, &info, req.materialize_snapshot, owner).await?;
    let new = records::NewModel {
        project_id,
        parent_id,
        snapshot_id,
        base_model,
        hyperparams: &req.stored_hyperparams,
        owner,
    };
    records::queue_model(client, &new, &req.stored_request, req.placement).await
}

/// The training setup a model card lists: the training arguments as stored (no token),
/// the task's own options (tokenizer_args; or LoRA and the sequence options) and the split.
pub(crate) fn card_setup(req: &TuneRequest, task: Task) -> Vec<(String, Json)> {
    let mut setup = card::pairs(&serde_json::to_value(&req.training).unwrap_or_default());
    if task == Task::Conversation {
        let c = &req.conversation;
        let lora =
            if c.lora_config.is_null() { postgresml_default_lora() } else { c.lora_config.clone() };
        setup.push(("lora_config".into(), lora));
        setup.push(("load_in_8bit".into(), json!(c.load_in_8bit)));
        setup.push(("max_seq_length".into(), json!(c.max_seq_length)));
        setup.push(("packing".into(), json!(c.packing)));
        setup.push(("train_on_prompt".into(), json!(c.train_on_prompt)));
        if let Some(t) = &c.prompt_template {
            setup.push(("prompt_template".into(), json!(t)));
        }
    } else {
        setup.push((
            "tokenizer_args".into(),
            serde_json::to_value(&req.tokenizer).unwrap_or_default(),
        ));
    }
    let test_size = match req.test_size {
        TestSize::Fraction(f) => json!(f),
        TestSize::Rows(n) => json!(n),
    };
    setup.push(("test_size".into(), test_size));
    setup.push(("test_sampling".into(), json!(req.test_sampling.name())));
    setup
}

/// The metric deployment compares: `eval_f1` (higher wins) for classifiers, `eval_loss`
/// (lower wins) for conversation adapters.
fn score(task: Task, eval: Option<&Json>) -> records::Score {
    let (metric, higher_is_better) = records::deploy_metric(task);
    records::Score {
        metric,
        value: eval.and_then(|e| e.get(metric)).and_then(Json::as_f64),
        higher_is_better,
    }
}

/// A checkpoint that could not be written or stored: a WARNING and a log row; training
/// goes on (a resume then starts from the previous checkpoint).
async fn checkpoint_failed(
    client: &Client,
    ctx: &CallContext,
    (project_id, model_id): (i64, i64),
    step: i64,
    message: &str,
) {
    warning(ctx, format!("the checkpoint of step {step} could not be stored for resuming: {message}; training goes on"));
    let logs = json!({"checkpoint": "failed", "step": step, "error": message});
    if let Err(e) = records::log(client, model_id, project_id, &logs).await {
        tracing::warn!(model_id, "cannot log a failed checkpoint: {e}");
    }
}

/// Beats the job's heartbeat with its progress and eta when known, and sets the call's
/// cancel flag when a cancel was asked for (pgml.cancel_job, the waiting session's cancel).
pub(crate) async fn heartbeat(
    client: &Client,
    ctx: &CallContext,
    (model_id, job_id): (i64, i64),
    progress: Option<f64>,
    eta: Option<f64>,
) {
    match pgmld_jobs::lease::heartbeat(client, job_id, progress, eta).await {
        Ok(true) if !ctx.cancelled.swap(true, Ordering::Relaxed) => {
            tracing::info!(job_id, model_id, "cancel requested: stopping the tune");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(job_id, "cannot beat the job's heartbeat: {e}"),
    }
}

impl Tuner {
    /// Records a new tune's snapshot, model and job, stores its training data
    /// (`checkpoint/dataset.jsonl`, what any worker trains on), then queues the job and
    /// waits for it ([`Tuner::submit_and_wait`]).
    pub(crate) async fn run_fresh(
        self: &Arc<Self>,
        mut client: Client,
        ctx: &CallContext,
        fresh: Fresh,
    ) -> Result<Tuned> {
        let Fresh { req, project: (project_id, task), model_name, source, data, snapshot, push } =
            fresh;
        // The base model was resolved to check it; the worker resolves it again.
        let parent_id = source.parent_id;
        drop((source, push));
        let (model_id, job_id) = record_new(
            &client,
            &req,
            (project_id, parent_id),
            snapshot,
            &model_name,
            &ctx.caller.role,
        )
        .await?;
        if let Err(e) =
            files::store_dataset(&mut client, model_id, &data.encode(), self.file_part_bytes).await
        {
            let e = TuneError::from(e);
            let _ = records::fail(&client, model_id, job_id, &e.reason(), false).await;
            return Err(e);
        }
        let submission = Submission {
            job_id,
            model_id,
            task,
            device: req.placement.device,
            wait: req.wait,
            token: req.training.hub_token.clone(),
        };
        self.submit(client, ctx, submission).await
    }

    /// Trains, stores and deploys the model of `run`, on `client` (which holds its job's
    /// lock); records a failure. A cancelled or interrupted model keeps its checkpoint; one
    /// that failed otherwise loses it (a resume would fail the same way).
    pub(crate) async fn execute(
        &self,
        mut client: Client,
        run: Run,
        ctx: &CallContext,
    ) -> Result<Tuned> {
        let Run {
            req,
            task,
            model_name,
            source,
            ids,
            data,
            relation,
            push,
            resume_from,
            mut dataset_stored,
            slot,
        } = run;
        let (project_id, model_id, job_id) = ids;
        if req.training.push_to_hub && self.hub.offline {
            let message = "HF_HUB_OFFLINE is set, so pgmld does not reach the Hub".to_string();
            relay(
                &client,
                ctx,
                (project_id, model_id),
                &PushEvent::Failed { step: None, message, fatal: true },
            )
            .await;
        }
        let tag = format!("{}-model-{model_id}", ctx.database.replace('/', "_"));
        let mut hub = push.map(|setup| {
            let card = ModelCard {
                project: req.project_name.clone(),
                task: task.name().to_string(),
                base_model: model_name.clone(),
                base_origin: source.origin.clone(),
                relation: relation.clone(),
                labels: data.labels(),
                rows: Some(data.rows()),
                setup: card_setup(&req, task),
                metrics: vec![],
                repo_id: None,
            };
            HubPush {
                pusher: Pusher::start(setup, self.work_dir.join(format!("ckpt-{tag}"))),
                card,
            }
        });
        let dirs = RunDirs {
            out_dir: self.work_dir.join(format!("out-{tag}")),
            checkpoint_dir: hub.as_ref().and_then(|h| h.pusher.checkpoint_dir()),
            resume_dir: Some(self.work_dir.join(format!("save-{tag}"))),
            resume_from: resume_from.clone(),
        };
        let (out_dir, resume_dir) =
            (dirs.out_dir.clone(), dirs.resume_dir.clone().unwrap_or_default());
        let _ = std::fs::remove_dir_all(&out_dir);
        let _ = std::fs::remove_dir_all(&resume_dir);
        let work = data.work(&req, &source.dir, dirs);
        let outcome = self
            .train(&mut client, ctx, (work, slot), ids, &mut hub, &data, &mut dataset_stored)
            .await;
        // Keeps an extracted base alive until the worker is done with it.
        drop(source);
        let _ = std::fs::remove_dir_all(&resume_dir);
        if let Some(d) = &resume_from {
            let _ = std::fs::remove_dir_all(d);
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e @ (TuneError::Released | TuneError::RankLost(_))) => {
                if let TuneError::RankLost(why) = &e {
                    let step = records::checkpoint_step(&client, job_id).await.ok().flatten();
                    let from = step
                        .map_or("the start".to_string(), |s| format!("its checkpoint at step {s}"));
                    warning(ctx, format!("a rank of data-parallel job {job_id} was lost ({why}): the job goes back to the queue and resumes from {from} with the workers available"));
                }
                // Back to the queue, checkpoint kept: the next worker goes on from it.
                if let Err(rec) = pgmld_jobs::queue::requeue(&client, job_id).await {
                    tracing::error!(model_id, "cannot put the job back in the queue: {rec}");
                }
                let _ = std::fs::remove_dir_all(&out_dir);
                return Err(e);
            }
            Err(e) => {
                let cancelled = matches!(e, TuneError::Cancelled);
                if let Err(rec) =
                    records::fail(&client, model_id, job_id, &e.reason(), cancelled).await
                {
                    tracing::error!(model_id, "cannot record the failed tune: {rec}");
                }
                if !cancelled {
                    if let Err(rec) = files::delete_checkpoint(&mut client, model_id).await {
                        tracing::warn!(
                            model_id,
                            "cannot delete the failed tune's checkpoint: {rec}"
                        );
                    }
                }
                let _ = std::fs::remove_dir_all(&out_dir);
                return Err(e);
            }
        };
        let finished =
            self.finish(&mut client, (&req, task), ctx, ids, (&outcome, &out_dir), &mut hub).await;
        let _ = std::fs::remove_dir_all(&out_dir);
        match finished {
            Ok(deployed) => {
                let algorithm = records::ALGORITHM.to_string();
                Ok(Tuned { status: "successful", task, algorithm, deployed, model_id })
            }
            Err(e) => {
                if let Err(rec) = records::fail(&client, model_id, job_id, &e.reason(), false).await
                {
                    tracing::error!(model_id, "cannot record the failed tune: {rec}");
                }
                Err(e)
            }
        }
    }

    /// Runs the job on a worker and relays its progress and the uploader's events until it
    /// ends. At every `save_steps` the resumable checkpoint goes to pgml.files, with the
    /// run's data (`checkpoint/dataset.jsonl`) the first time (`dataset_stored` false).
    #[allow(clippy::too_many_arguments)]
    async fn train(
        &self,
        client: &mut Client,
        ctx: &CallContext,
        (work, slot): (Work, usize),
        (project_id, model_id, job_id): (i64, i64, i64),
        hub: &mut Option<HubPush>,
        data: &RunData,
        dataset_stored: &mut bool,
    ) -> Result<Outcome> {
        let (train_rows, test_rows) = data.rows();
        let mut queued = json!({"status": "queued", "model_id": model_id, "train_rows": train_rows, "test_rows": test_rows});
        if let RunData::Classification { labels, .. } = data {
            queued["labels"] = json!(labels);
        }
        info(ctx, progress::notice_text(&queued));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let world_size = work.world_size();
        let work = match world_size > 1 {
            true => {
                let ids = (project_id, model_id, job_id);
                match self.rendezvous(client, ctx, ids, world_size).await? {
                    Some(group) => work.with_group(group),
                    None => work,
                }
            }
            false => work,
        };
        let cancel = ctx.cancelled.clone();
        let result = self.pool.submit_on(slot, move |device| work.run(device, cancel, tx));
        let (mut max_steps, mut start_step) = (0, 0);
        // Set when this worker shuts down: the run stops after its next stored checkpoint
        // (or at the drain's deadline) and the job goes back to the queue.
        let mut releasing = false;
        let mut release = |why: &str| {
            if !releasing {
                releasing = true;
                tracing::info!(job_id, model_id, "shutting down: releasing the job ({why})");
                ctx.cancelled.store(true, Ordering::Relaxed);
            }
        };
        // The job's lease: a heartbeat every few seconds, which also brings a cancel asked
        // for from another session (pgml.cancel_job).
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = beat.tick() => {
                    heartbeat(client, ctx, (model_id, job_id), None, None).await;
                    if self.jobs.draining().is_some_and(|d| std::time::Instant::now() >= d) {
                        release("no checkpoint before the drain's deadline");
                    }
                    continue;
                }
            };
            let logs = match p {
                Progress::Started { info, start_step: first } => {
                    start_step = first;
                    if let Some(device) = info.get("device").and_then(Json::as_str) {
                        let _ = records::started_on(client, job_id, device).await;
                    }
                    let mut v = json!({"status": "training", "model_id": model_id});
                    if let (Json::Object(o), Json::Object(extra)) = (&mut v, info) {
                        o.extend(extra);
                    }
                    v
                }
                Progress::Log(ev, elapsed) => {
                    max_steps = ev.max_steps;
                    let logs = progress::log_event(&ev, elapsed, start_step);
                    let done = ev.step as f64 / ev.max_steps.max(1) as f64;
                    let eta = logs.get("eta_seconds").and_then(Json::as_f64);
                    heartbeat(client, ctx, (model_id, job_id), Some(done), eta).await;
                    logs
                }
                Progress::Eval { step, epoch, metrics } => {
                    let e = progress::metrics_event(metrics, epoch, step, max_steps.max(step));
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
                Progress::Checkpoint { step, dir } => {
                    let dataset = (!*dataset_stored).then(|| data.encode());
                    let ids = (model_id, job_id);
                    match files::store_checkpoint(
                        client,
                        ids,
                        step,
                        &dir,
                        dataset.as_deref(),
                        self.file_part_bytes,
                    )
                    .await
                    {
                        Ok(bytes) => {
                            *dataset_stored |= dataset.is_some();
                            if self.jobs.draining().is_some() {
                                release("its checkpoint is stored");
                            }
                            tracing::debug!(
                                model_id,
                                step,
                                bytes,
                                "checkpoint stored in pgml.files"
                            );
                        }
                        Err(e) => {
                            checkpoint_failed(
                                client,
                                ctx,
                                (project_id, model_id),
                                step,
                                &e.to_string(),
                            )
                            .await
                        }
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                Progress::CheckpointFailed { step, message } => {
                    checkpoint_failed(client, ctx, (project_id, model_id), step, &message).await;
                    continue;
                }
                Progress::Warning { message } => {
                    warning(ctx, message);
                    continue;
                }
                Progress::SaveFailed { step, message } => {
                    let message = format!("the checkpoint could not be written: {message}");
                    relay(
                        client,
                        ctx,
                        (project_id, model_id),
                        &PushEvent::Failed { step: Some(step), message, fatal: false },
                    )
                    .await;
                    continue;
                }
            };
            info(ctx, progress::notice_text(&logs));
            records::log(client, model_id, project_id, &logs).await?;
        }
        let outcome = result.await.map_err(|_| {
            TuneError::Internal(
                "the training worker stopped without a result (it panicked; see pgmld's log)"
                    .into(),
            )
        })?;
        match outcome {
            Err(TuneError::Cancelled) if releasing => Err(TuneError::Released),
            other => other,
        }
    }

    /// Reports the summaries, stores the files, records metrics, deploys when the model
    /// beats the deployed one ([`score`]) and pushes the final model.
    async fn finish(
        &self,
        client: &mut Client,
        (req, task): (&TuneRequest, Task),
        ctx: &CallContext,
        (project_id, model_id, job_id): (i64, i64, i64),
        (outcome, out_dir): (&Outcome, &Path),
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
        let (n_files, bytes) =
            files::store_dir(client, model_id, out_dir, self.file_part_bytes).await?;
        metrics.insert("stored_files".into(), json!(n_files));
        metrics.insert("stored_bytes".into(), json!(bytes));
        let metrics = Json::Object(metrics);
        records::succeed(client, model_id, job_id, &metrics).await?;
        let score = score(task, outcome.eval.as_ref());
        let deployed = req.automatic_deploy
            && records::deploy_if_better_by(client, (project_id, model_id), score).await?;
        tracing::info!(
            model_id,
            deployed,
            task = task.name(),
            files = n_files,
            bytes,
            "pgml.tune finished"
        );
        if let Some(h) = hub.take() {
            push_final(client, ctx, (project_id, model_id), h, (steps, out_dir), &metrics).await;
        }
        Ok(deployed)
    }
}
