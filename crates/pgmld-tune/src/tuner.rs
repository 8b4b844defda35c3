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
use crate::push_relay::{card_metrics, next_push_event, push_final, relay, HubPush};
use crate::{files, progress, records, resolve, resume, split};

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

pub(crate) fn info(ctx: &CallContext, message: String) {
    (ctx.notices)(Notice { severity: "INFO", message });
}

pub(crate) fn warning(ctx: &CallContext, message: String) {
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

/// A model row and what its training needs: a new tune's, or a resumed one's.
struct Run {
    req: TuneRequest,
    task: Task,
    model_name: String,
    source: resolve::ModelSource,
    /// (project, model, job) ids.
    ids: (i64, i64, i64),
    labels: Vec<String>,
    train: Arc<Vec<Example>>,
    eval: Arc<Vec<Example>>,
    relation: String,
    push: Option<PushSetup>,
    /// The checkpoint a resume goes on from (a directory removed afterwards).
    resume_from: Option<PathBuf>,
    /// Whether `checkpoint/dataset.jsonl` is stored already.
    dataset_stored: bool,
}

/// The 22023 of `resume_from_checkpoint` when there is nothing to resume.
fn nothing_to_resume(project: &str) -> TuneError {
    TuneError::bad(
        format!("project \"{project}\" has no interrupted model with a checkpoint to resume from"),
        "resume_from_checkpoint resumes the project's latest model stopped by a cancel, a dropped connection or a \
         pgmld restart, once it has stored a checkpoint (every save_steps optimizer steps). Lower save_steps to \
         checkpoint more often, or leave resume_from_checkpoint out to train a new model.",
    )
}

impl Tuner {
    /// A connection of pgmld's own to `database`.
    pub(crate) async fn connect(&self, database: &str) -> Result<Client> {
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

    /// The databases of the upstream that accept connections.
    pub(crate) async fn databases(&self) -> Result<Vec<String>> {
        let (client, conn) = tokio_postgres::connect(&self.base_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| TuneError::pg("connecting to the upstream", e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let rows = client
            .query("SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1", &[])
            .await
            .map_err(|e| TuneError::pg("listing databases", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Runs one tune for the calling session.
    pub async fn run(&self, req: TuneRequest, ctx: &CallContext) -> Result<Tuned> {
        if req.resume_from_checkpoint {
            return self.resume_call(req, ctx).await;
        }
        // A call that cannot push fails before anything is recorded or trained.
        // Offline, nothing is pushed: the tune says so once its model is recorded.
        let push = match req.training.push_to_hub && !self.hub.offline {
            true => Some(PushSetup::prepare(&req.training, &req.project_name, self.hub_token.as_deref(), &self.hub)?),
            false => None,
        };
        let client = self.connect(&ctx.database).await?;
        let (project_id, task) = records::project(&client, &req.project_name, req.task).await?;
        if task == Task::Conversation {
            return self.run_conversation(client, req, ctx, project_id, push).await;
        }
        req.dataset.check_task(task)?;
        req.conversation.reject_for(task.name())?;
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
        let (model_id, job_id) = records::start_model(&client, &new, &worker_name(), &req.stored_request).await?;
        let run = Run {
            task,
            model_name,
            source,
            ids: (project_id, model_id, job_id),
            labels: prep.labels,
            train: Arc::new(prep.train),
            eval: Arc::new(prep.eval),
            relation: rel.name.clone(),
            push,
            resume_from: None,
            dataset_stored: false,
            req,
        };
        self.execute(client, run, ctx).await
    }

    /// `resume_from_checkpoint`: resumes the project's latest interrupted model that has a
    /// complete checkpoint and no live owner.
    async fn resume_call(&self, req: TuneRequest, ctx: &CallContext) -> Result<Tuned> {
        let client = self.connect(&ctx.database).await?;
        let Some(project_id) = records::project_id(&client, &req.project_name).await? else {
            return Err(nothing_to_resume(&req.project_name));
        };
        for job in records::resumable_jobs(&client, project_id).await? {
            if job.checkpoint_step.is_none() || job.request.is_none() || !files::has_checkpoint(&client, job.model_id).await? {
                continue;
            }
            if !records::lock_job(&client, job.job_id).await? {
                // Its owner is alive: it is not interrupted.
                continue;
            }
            match records::resumable_job(&client, job.job_id).await? {
                Some(job) if job.checkpoint_step.is_some() => {
                    return self.resume_job(client, ctx, job, req.training.hub_token.clone()).await;
                }
                _ => records::unlock_job(&client, job.job_id).await?,
            }
        }
        Err(nothing_to_resume(&req.project_name))
    }

    /// Resumes `job` from its stored checkpoint, on `client`, which holds the job's lock:
    /// the call stored in the job, the training data stored with the checkpoint, the log
    /// rows after the checkpoint's step dropped, the model and job back in progress.
    /// `token` is the Hub token of the call that asked (tokens are never stored). A job
    /// still marked running that cannot be resumed is marked failed (`interrupted`).
    pub(crate) async fn resume_job(
        &self,
        client: Client,
        ctx: &CallContext,
        job: records::JobRow,
        token: Option<pgmld_ml::Secret>,
    ) -> Result<Tuned> {
        let tag = format!("{}-model-{}", ctx.database.replace('/', "_"), job.model_id);
        let from = self.work_dir.join(format!("resume-{tag}"));
        let prepared = self.prepare_resume(&client, &job, token, &from).await;
        let (req, task, source, dataset, step, max_steps) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&from);
                if matches!(job.status.as_str(), "queued" | "running") {
                    if let Err(rec) = records::fail(&client, job.model_id, job.job_id, "interrupted", false).await {
                        tracing::error!(job.model_id, "cannot record the interrupted tune: {rec}");
                    }
                }
                return Err(e);
            }
        };
        let (project_id, model_id, job_id) = (job.project_id, job.model_id, job.job_id);
        records::drop_logs_after(&client, model_id, step).await?;
        records::reopen(&client, model_id, job_id, &worker_name()).await?;
        let logs = json!({"status": "resuming", "model_id": model_id, "from_step": step, "max_steps": max_steps});
        info(ctx, progress::notice_text(&logs));
        records::log(&client, model_id, project_id, &logs).await?;
        let push = match req.training.push_to_hub && !self.hub.offline {
            true => match PushSetup::prepare(&req.training, &req.project_name, self.hub_token.as_deref(), &self.hub) {
                Ok(p) => Some(p),
                Err(e) => {
                    let ev = PushEvent::Failed { step: None, message: e.to_string(), fatal: true };
                    relay(&client, ctx, (project_id, model_id), &ev).await;
                    None
                }
            },
            false => None,
        };
        let run = Run {
            task,
            model_name: req.model_name.clone().unwrap_or_default(),
            source,
            ids: (project_id, model_id, job_id),
            labels: dataset.labels,
            train: Arc::new(dataset.train),
            eval: Arc::new(dataset.eval),
            relation: req.relation_name.clone().unwrap_or_default(),
            push,
            resume_from: Some(from),
            dataset_stored: true,
            req,
        };
        self.execute(client, run, ctx).await
    }

    /// What a resume reads before it changes anything: the request, the project's task, the
    /// base model, the checkpoint (into `from`) and its training data.
    #[allow(clippy::type_complexity)]
    async fn prepare_resume(
        &self,
        client: &Client,
        job: &records::JobRow,
        token: Option<pgmld_ml::Secret>,
        from: &std::path::Path,
    ) -> Result<(TuneRequest, Task, resolve::ModelSource, resume::Dataset, i64, i64)> {
        let stored = job.request.as_ref().ok_or_else(|| TuneError::Internal(format!("job {} has no stored request", job.job_id)))?;
        let mut req = TuneRequest::from_stored(stored)?;
        if token.is_some() {
            req.training.hub_token = token;
        }
        let task = records::project_task(client, job.project_id).await?;
        let model_name = req.model_name.clone().ok_or_else(|| TuneError::Internal(format!("job {} has no model_name", job.job_id)))?;
        let _ = std::fs::remove_dir_all(from);
        files::load_checkpoint(client, job.model_id, from).await?;
        let ck = pgmld_ml::load_checkpoint(from)?;
        let dataset = resume::read_dataset(&from.join(files::DATASET_FILE))?;
        let source = resolve::resolve(client, &model_name, &self.hub, &self.work_dir).await?;
        Ok((req, task, source, dataset, ck.state.global_step, ck.state.max_steps))
    }

    /// Trains, stores and deploys the model of `run`, on `client` (which holds its job's
    /// lock); records a failure.
    async fn execute(&self, mut client: Client, run: Run, ctx: &CallContext) -> Result<Tuned> {
        let Run { req, task, model_name, source, ids, labels, train, eval, relation, push, resume_from, mut dataset_stored } = run;
        let (project_id, model_id, job_id) = ids;
        if req.training.push_to_hub && self.hub.offline {
            let message = "HF_HUB_OFFLINE is set, so pgmld does not reach the Hub".to_string();
            relay(&client, ctx, (project_id, model_id), &PushEvent::Failed { step: None, message, fatal: true }).await;
        }
        let tag = format!("{}-model-{model_id}", ctx.database.replace('/', "_"));
        let mut hub = push.map(|setup| {
            let checkpoints = self.work_dir.join(format!("ckpt-{tag}"));
            let card = ModelCard {
                project: req.project_name.clone(),
                task: task.name().to_string(),
                base_model: model_name.clone(),
                base_origin: source.origin.clone(),
                relation: relation.clone(),
                labels: labels.clone(),
                rows: Some((train.len(), eval.len())),
                setup: card_setup(&req),
                metrics: vec![],
                repo_id: None,
            };
            HubPush { pusher: Pusher::start(setup, checkpoints), card }
        });
        let out_dir = self.work_dir.join(format!("out-{tag}"));
        let _ = std::fs::remove_dir_all(&out_dir);
        let resume_dir = self.work_dir.join(format!("save-{tag}"));
        let _ = std::fs::remove_dir_all(&resume_dir);
        let spec = TrainSpec {
            model_dir: source.dir.clone(),
            labels: labels.clone(),
            train: train.clone(),
            eval: eval.clone(),
            training: req.training.clone(),
            tokenizer: req.tokenizer.clone(),
            out_dir,
            checkpoint_dir: hub.as_ref().and_then(|h| h.pusher.checkpoint_dir()),
            resume_dir: Some(resume_dir.clone()),
            resume_from: resume_from.clone(),
        };
        let data = (labels.as_slice(), train.as_slice(), eval.as_slice());
        let outcome = self.train(&mut client, ctx, spec, ids, &mut hub, data, &mut dataset_stored).await;
        let cleanup = || {
            let _ = std::fs::remove_dir_all(&resume_dir);
            if let Some(d) = &resume_from {
                let _ = std::fs::remove_dir_all(d);
            }
        };
        cleanup();
        let (outcome, out_dir) = match outcome {
            Ok(o) => o,
            Err(e) => {
                let cancelled = matches!(e, TuneError::Cancelled);
                if let Err(rec) = records::fail(&client, model_id, job_id, &e.reason(), cancelled).await {
                    tracing::error!(model_id, "cannot record the failed tune: {rec}");
                }
                if !cancelled {
                    // A resume would fail the same way: the checkpoint only takes space.
                    if let Err(rec) = files::delete_checkpoint(&mut client, model_id).await {
                        tracing::warn!(model_id, "cannot delete the failed tune's checkpoint: {rec}");
                    }
                }
                return Err(e);
            }
        };
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
    /// At every `save_steps` the checkpoint goes to pgml.files, with `data` (label names,
    /// training and evaluation examples) the first time (`dataset_stored` false).
    #[allow(clippy::too_many_arguments)]
    async fn train(
        &self,
        client: &mut Client,
        ctx: &CallContext,
        spec: TrainSpec,
        (project_id, model_id, job_id): (i64, i64, i64),
        hub: &mut Option<HubPush>,
        (labels, train, eval): (&[String], &[Example], &[Example]),
        dataset_stored: &mut bool,
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
        let (mut max_steps, mut start_step) = (0, 0);
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
                Progress::Started { device, max_length, parameters, start_step: first } => {
                    start_step = first;
                    json!({"status": "training", "model_id": model_id, "device": device,
                           "max_length": max_length, "trainable_parameters": parameters})
                }
                Progress::Event(TrainEvent::Log(ev), elapsed) => {
                    max_steps = ev.max_steps;
                    let _ = records::progress(client, job_id, ev.step as f64 / ev.max_steps.max(1) as f64).await;
                    progress::log_event(&ev, elapsed, start_step)
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
                Progress::Checkpoint { step, dir } => {
                    let dataset = (!*dataset_stored).then(|| resume::encode_dataset(labels, train, eval));
                    let ids = (model_id, job_id);
                    match files::store_checkpoint(client, ids, step, &dir, dataset.as_deref(), self.file_part_bytes).await {
                        Ok(bytes) => {
                            *dataset_stored |= dataset.is_some();
                            tracing::debug!(model_id, step, bytes, "checkpoint stored in pgml.files");
                        }
                        Err(e) => checkpoint_failed(client, ctx, (project_id, model_id), step, &e.to_string()).await,
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                Progress::CheckpointFailed { step, message } => {
                    checkpoint_failed(client, ctx, (project_id, model_id), step, &message).await;
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
        if let Some(h) = hub.take() {
            push_final(client, ctx, (project_id, model_id), h, (outcome.train.global_step, out_dir), &metrics).await;
        }
        Ok(deployed)
    }
}

/// The training setup a model card lists: the training arguments as stored (no token), the
/// tokenizer arguments and the split.
pub(crate) fn card_setup(req: &TuneRequest) -> Vec<(String, Json)> {
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

/// A checkpoint that could not be written or stored: a WARNING and a log row; training
/// goes on (a resume then starts from the previous checkpoint).
async fn checkpoint_failed(client: &Client, ctx: &CallContext, (project_id, model_id): (i64, i64), step: i64, message: &str) {
    warning(ctx, format!("the checkpoint of step {step} could not be stored for resuming: {message}; training goes on"));
    let logs = json!({"checkpoint": "failed", "step": step, "error": message});
    if let Err(e) = records::log(client, model_id, project_id, &logs).await {
        tracing::warn!(model_id, "cannot log a failed checkpoint: {e}");
    }
}

/// The `worker` recorded in pgml.jobs.
pub(crate) fn worker_name() -> String {
    format!("pgmld-{}", std::process::id())
}

/// Resolves once `flag` is set (polled every 100 ms).
pub(crate) async fn cancelled(flag: &std::sync::atomic::AtomicBool) {
    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
