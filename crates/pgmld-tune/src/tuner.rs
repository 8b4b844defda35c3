//! One `pgml.tune` call: the [`Tuner`] that serves every database, and the dispatch of a
//! call to a new classification tune ([`crate::classification`]), a new conversation tune
//! ([`crate::conversation::tune`]) or a resume ([`crate::resume`]); all of them then run
//! through [`crate::lifecycle`].

use std::path::PathBuf;
use std::sync::Arc;

use pgmld_hub::HubConfig;
use pgmld_sql::{CallContext, Notice};
use pgmld_upstream::Connector;

use crate::error::Result;
use crate::options::{Task, TuneRequest};
use crate::pool::WorkerPool;
use crate::push::PushSetup;
use crate::records;

/// Serves `pgml.tune` for every database of the upstream.
pub struct Tuner {
    /// pgmld's own connections to the upstream's databases (the database is chosen per
    /// call): the one connector pgmld built at startup.
    pub connector: Arc<Connector>,
    /// Hub endpoint, token, cache (for `model_name` repo ids): the one configuration pgmld
    /// built at startup (a call's own token replaces the token in a copy of it).
    pub hub: Arc<HubConfig>,
    /// The training threads.
    pub pool: Arc<WorkerPool>,
    /// Where models are unpacked and trained models written before they are stored.
    pub work_dir: PathBuf,
    /// Part size in pgml.files.
    pub file_part_bytes: usize,
    /// pgmld's `hub_token` setting: the token `push_to_hub` uses when the call passes none
    /// (before `HF_TOKEN`). Never logged.
    pub hub_token: Option<String>,
    /// What this process's front-end and claim loop share (wake-ups, the databases served,
    /// cancel flags, the tokens of calls queued here).
    pub jobs: Arc<crate::worker::LocalJobs>,
    /// How this process takes part in data-parallel jobs.
    pub dist: crate::data_parallel::DistOptions,
}

/// What a successful tune reports.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// `successful`, or `queued` for a call with `wait => false`.
    pub status: &'static str,
    /// The project's task.
    pub task: Task,
    /// PostgresML's algorithm of a fine-tune: always `transformers` (the model it started
    /// from is recorded in `pgml.models.base_model`).
    pub algorithm: String,
    /// Whether the new model was deployed.
    pub deployed: bool,
    /// The new model's id.
    pub model_id: i64,
}

/// Sends an INFO notice to the calling session.
pub(crate) fn info(ctx: &CallContext, message: String) {
    (ctx.notices)(Notice { severity: "INFO", message });
}

/// Sends a WARNING notice to the calling session.
pub(crate) fn warning(ctx: &CallContext, message: String) {
    (ctx.notices)(Notice { severity: "WARNING", message });
}

impl Tuner {
    /// The uploader setup of a call with `push_to_hub` (none offline: the tune says so once
    /// its model is recorded).
    pub(crate) fn push_setup(&self, req: &TuneRequest) -> Result<Option<PushSetup>> {
        match req.training.push_to_hub && !self.hub.offline {
            true => Ok(Some(PushSetup::prepare(
                &req.training,
                &req.project_name,
                self.hub_token.as_deref(),
                &self.hub,
            )?)),
            false => Ok(None),
        }
    }

    /// Runs one tune for the calling session.
    pub async fn run(self: &Arc<Self>, req: TuneRequest, ctx: &CallContext) -> Result<Tuned> {
        if req.resume_from_checkpoint {
            return self.resume_call(req, ctx).await;
        }
        // A call that cannot push fails before anything is recorded or trained.
        let push = self.push_setup(&req)?;
        let client = self.connector.connect(&ctx.database).await?;
        let (project_id, task) =
            records::project(&client, &req.project_name, req.task, &ctx.caller).await?;
        match task {
            Task::Conversation => self.run_conversation(client, req, ctx, project_id, push).await,
            _ => self.run_classification(client, req, ctx, (project_id, task), push).await,
        }
    }
}

/// This process as pgml.jobs records it (worker, worker_host, worker_pid).
pub(crate) fn this_worker() -> pgmld_jobs::Worker {
    pgmld_jobs::Worker::this_process()
}

/// This process's `pgml.jobs.worker` name, `pgmld-<pid>@<host>`.
pub fn this_worker_name() -> String {
    this_worker().name()
}

/// Resolves once `flag` is set (polled every 100 ms).
pub(crate) async fn cancelled(flag: &std::sync::atomic::AtomicBool) {
    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
