//! The calling session's side of a queued tune: release the recorded job to the workers,
//! then relay its notices from whichever worker runs it (LISTEN on the job's channel) and
//! return what the job returned, or raise the error its worker got. A cancel
//! (CancelRequest, a disconnect) cancels the job wherever it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgmld_jobs::{notify, queue, registry, DeviceKind};
use pgmld_sql::{CallContext, Notice, SqlError};
use pgmld_train::Secret;
use pgmld_upstream::Connector;
use serde_json::Value as Json;
use tokio_postgres::{Client, Notification};

use crate::error::{static_code, Result, TuneError};
use crate::options::Task;
use crate::tuner::{info, this_worker, Tuned, Tuner};
use crate::worker::{LocalJobs, END};

/// How often the waiting session reads the job's row (a worker that died without sending
/// the end, a notification lost with a connection).
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long the end of a job whose row says it ended may take to arrive (its last notices
/// travel on another connection than the row's update).
const END_GRACE: Duration = Duration::from_secs(3);

/// Cancels the job if the waiting call is dropped before the job ended (the session went
/// away while it waited).
struct CancelOnDrop {
    connector: Arc<Connector>,
    jobs: Arc<LocalJobs>,
    database: String,
    job_id: i64,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (connector, jobs) = (self.connector.clone(), self.jobs.clone());
        let (db, job_id) = (self.database.clone(), self.job_id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = cancel(&connector, &jobs, &db, job_id).await {
                    tracing::warn!(job_id, "cannot cancel the job its session left: {e}");
                }
            });
        }
    }
}

/// What a cancel of the waiting call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnInterrupt {
    /// Cancels the job (a blocking pgml.tune: the call is the job).
    Cancel,
    /// Stops waiting; the job goes on (pgml.wait_job).
    Detach,
}

/// How a job ended, as its row says.
struct Ended {
    status: String,
    result: Option<Json>,
    error: Option<String>,
    model_id: Option<i64>,
}

/// A recorded job ready to be released to the workers.
pub(crate) struct Submission {
    /// `pgml.jobs.id`; the submitting connection holds its lock.
    pub job_id: i64,
    /// Its model.
    pub model_id: i64,
    /// The project's task (what a `wait => false` call returns).
    pub task: Task,
    /// The device kind it asks for.
    pub device: DeviceKind,
    /// Whether the call waits for the job to end.
    pub wait: bool,
    /// The call's Hub token, which only this process's worker can be given.
    pub token: Option<Secret>,
}

impl Tuner {
    /// Releases a job, recorded and locked on `client` with all it needs stored, to the
    /// workers; then waits for it ([`Tuner::wait_job`]), or returns `queued` at once.
    ///
    /// When this process has a free training thread that can run the job, it runs the job
    /// itself at once; otherwise the job waits in the queue for any worker, and the caller
    /// is told when no live worker can run it.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        client: Client,
        ctx: &CallContext,
        s: Submission,
    ) -> Result<Tuned> {
        let db = ctx.database.as_str();
        let job_id = s.job_id;
        // Listening before the job can be claimed: no notice is missed.
        let listener = match s.wait {
            true => match self.listen_job(db, job_id).await {
                Ok(l) => Some(l),
                Err(e) => {
                    // Nobody would wait for it: it does not run.
                    if let Err(c) = cancel(&self.connector, &self.jobs, db, job_id).await {
                        tracing::warn!(job_id, "cannot cancel a job that was not submitted: {c}");
                    }
                    return Err(e);
                }
            },
            false => None,
        };
        if let Some(t) = s.token {
            self.jobs.hand_token(db, job_id, t);
        }
        queue::mark_queued(&client, job_id).await?;
        let mut local = None;
        if let Some((slot, _, label)) = self.jobs.take_slot(s.device) {
            match queue::claim_locked(&client, &this_worker(), job_id, &label).await {
                Ok(Some(claimed)) => local = Some((slot, claimed)),
                Ok(None) => self.jobs.free_slot(slot),
                Err(e) => {
                    self.jobs.free_slot(slot);
                    return Err(e.into());
                }
            }
        }
        match local {
            // The connection that holds the job's lock runs it.
            Some((slot, claimed)) => crate::worker::start(self, client, db, claimed, slot),
            None => {
                queue::release(&client, job_id).await?;
                self.jobs.watch(db);
                let ahead = queue::ahead(&client, job_id).await.unwrap_or(0);
                if ahead > 0 {
                    info(ctx, format!("job {job_id} is queued: {ahead} job(s) ahead of it"));
                }
                // This process runs the job later when it can; otherwise a live worker must.
                if !self.jobs.can_run(s.device) && !registry::can_run(&client, s.device).await? {
                    notice(ctx, no_worker(job_id, s.device));
                }
            }
        }
        match listener {
            Some(l) => self.wait_job(ctx, job_id, l, OnInterrupt::Cancel).await,
            None => {
                info(ctx, format!(
                    "job {job_id} (model {}) is queued: SELECT * FROM pgml.wait_job({job_id}) waits for it, \
                     SELECT pgml.cancel_job({job_id}) cancels it, pgml.jobs shows its progress",
                    s.model_id
                ));
                Ok(Tuned {
                    status: "queued",
                    task: s.task,
                    algorithm: crate::records::ALGORITHM.to_string(),
                    deployed: false,
                    model_id: s.model_id,
                })
            }
        }
    }

    /// A connection listening on job `job_id`'s channel, and its notifications.
    pub(crate) async fn listen_job(
        &self,
        db: &str,
        job_id: i64,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<Notification>)> {
        let (listener, rx) = self.connector.listen(db).await?;
        notify::listen(&listener, &notify::job_channel(job_id)).await?;
        Ok((listener, rx))
    }

    /// Relays job `job_id`'s notices to the calling session until it ends, then returns
    /// its result or raises its error. `listener` listens on the job's channel already.
    /// A cancel of the call cancels the job, or only stops the wait (`on_interrupt`).
    pub(crate) async fn wait_job(
        &self,
        ctx: &CallContext,
        job_id: i64,
        (listener, mut rx): (Client, tokio::sync::mpsc::UnboundedReceiver<Notification>),
        on_interrupt: OnInterrupt,
    ) -> Result<Tuned> {
        let db = ctx.database.as_str();
        let mut guard = CancelOnDrop {
            connector: self.connector.clone(),
            jobs: self.jobs.clone(),
            database: db.to_string(),
            job_id,
            armed: on_interrupt == OnInterrupt::Cancel,
        };
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cancel_sent = false;
        let mut ended_at: Option<Instant> = None;
        let mut listening = true;
        loop {
            tokio::select! {
                n = rx.recv(), if listening => match n {
                    Some(n) if n.payload() == END => break,
                    Some(n) => relay(ctx, n.payload()),
                    None => listening = false,
                },
                _ = crate::tuner::cancelled(&ctx.cancelled), if !cancel_sent => {
                    cancel_sent = true;
                    if on_interrupt == OnInterrupt::Detach {
                        return Err(TuneError::Relayed(SqlError::new(
                            pgmld_sql::codes::QUERY_CANCELED,
                            format!("canceling statement due to user request: stopped waiting for job {job_id}, which goes on"),
                        ).with_hint(format!("SELECT pgml.cancel_job({job_id}) cancels the job; pgml.wait_job({job_id}) waits again."))));
                    }
                    if cancel(&self.connector, &self.jobs, db, job_id).await? == queue::CancelOutcome::Cancelled {
                        // It was still queued: nothing runs it.
                        break;
                    }
                }
                _ = check.tick() => {
                    let c = self.connector.shared(db).await?;
                    let row = c
                        .query_one("SELECT status IN ('succeeded', 'failed', 'cancelled') FROM pgml.jobs WHERE id = $1", &[&job_id])
                        .await
                        .map_err(|e| TuneError::pg("reading the job", e))?;
                    if row.get::<_, bool>(0) {
                        let since = *ended_at.get_or_insert_with(Instant::now);
                        if !listening || since.elapsed() >= END_GRACE {
                            break;
                        }
                    }
                }
            }
        }
        drop(listener);
        let ended = self.ended(db, job_id).await?;
        let unfinished = matches!(ended.status.as_str(), "queued" | "running");
        guard.armed &= unfinished;
        if unfinished {
            return Err(TuneError::Internal(format!(
                "job {job_id} is still {}: its result is in pgml.jobs once it ends",
                ended.status
            )));
        }
        outcome(job_id, ended)
    }

    /// The row of an ended job.
    async fn ended(&self, db: &str, job_id: i64) -> Result<Ended> {
        let c = self.connector.shared(db).await?;
        let row = c
            .query_one(
                "SELECT status, result, error, model_id FROM pgml.jobs WHERE id = $1",
                &[&job_id],
            )
            .await
            .map_err(|e| TuneError::pg("reading the job", e))?;
        let mut ended = Ended {
            status: row.get(0),
            result: row.get(1),
            error: row.get(2),
            model_id: row.get(3),
        };
        if ended.status == "succeeded" && ended.result.is_none() {
            // Its worker died after the model was stored and before the result was written:
            // the deployment says the rest.
            let deployed: bool = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pgml.deployments WHERE model_id = $1)",
                    &[&ended.model_id],
                )
                .await
                .map_err(|e| TuneError::pg("reading the job's deployment", e))?
                .get(0);
            let task: String = c
                .query_one(
                    "SELECT p.task FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE m.id = $1",
                    &[&ended.model_id],
                )
                .await
                .map_err(|e| TuneError::pg("reading the job's project", e))?
                .get(0);
            ended.result = Some(serde_json::json!({"task": task, "deployed": deployed}));
        }
        Ok(ended)
    }
}

/// The NOTICE of a job that no live worker can run.
fn no_worker(job_id: i64, device: DeviceKind) -> String {
    let (what, start) = match device {
        DeviceKind::Any => ("serves this database's job queue", "pgmld worker --devices cpu"),
        DeviceKind::Cpu => ("has a CPU training thread", "pgmld worker --devices cpu"),
        DeviceKind::Cuda => ("has a CUDA device", "pgmld worker --devices cuda:0"),
    };
    format!(
        "job {job_id} stays queued: no live pgmld worker {what} (pgml.workers); it starts once one does \
         (`{start}`, or a pgmld with train_workers > 0 on such a device). SELECT pgml.cancel_job({job_id}) cancels it."
    )
}

/// Sends a NOTICE to the calling session.
fn notice(ctx: &CallContext, message: String) {
    (ctx.notices)(Notice { severity: "NOTICE", message });
}

/// Sends one relayed notice to the calling session.
fn relay(ctx: &CallContext, payload: &str) {
    let Ok(v) = serde_json::from_str::<Json>(payload) else { return };
    let severity = match v.get("severity").and_then(Json::as_str) {
        Some("WARNING") => "WARNING",
        Some("NOTICE") => "NOTICE",
        _ => "INFO",
    };
    if let Some(message) = v.get("message").and_then(Json::as_str) {
        (ctx.notices)(Notice { severity, message: message.to_string() });
    }
}

/// What an ended job gives its caller.
fn outcome(job_id: i64, ended: Ended) -> Result<Tuned> {
    let result = ended.result.unwrap_or(Json::Null);
    match ended.status.as_str() {
        "succeeded" => Ok(Tuned {
            status: "successful",
            task: Task::parse(result.get("task").and_then(Json::as_str).unwrap_or_default())?,
            algorithm: crate::records::ALGORITHM.to_string(),
            deployed: result.get("deployed").and_then(Json::as_bool).unwrap_or(false),
            model_id: ended.model_id.unwrap_or_default(),
        }),
        status => {
            let Some(e) = result.get("error") else {
                return Err(match status {
                    "cancelled" => TuneError::Cancelled,
                    _ => TuneError::Training(format!(
                        "job {job_id} {status}: {}",
                        ended.error.as_deref().unwrap_or("no reason recorded")
                    )),
                });
            };
            let text = |k: &str| e.get(k).and_then(Json::as_str).map(str::to_string);
            let mut sql = SqlError::new(
                static_code(&text("code").unwrap_or_default()),
                text("message").unwrap_or_else(|| format!("job {job_id} {status}")),
            );
            sql.detail = text("detail");
            sql.hint = text("hint");
            Err(TuneError::Relayed(sql))
        }
    }
}

/// Cancels job `job_id` of `db`: a queued one at once (its model marked failed,
/// `cancelled`), a running one at its worker's next heartbeat, or at once when this
/// process runs it.
pub(crate) async fn cancel(
    connector: &Connector,
    jobs: &LocalJobs,
    db: &str,
    job_id: i64,
) -> Result<queue::CancelOutcome> {
    let c = connector.shared(db).await?;
    let outcome = queue::request_cancel(&c, job_id).await?;
    // A queued job's model was failed by `request_cancel` itself.
    if outcome == queue::CancelOutcome::Requested {
        jobs.cancel_here(db, job_id);
    }
    Ok(outcome)
}
