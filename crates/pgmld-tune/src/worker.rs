//! The claim loop: a pgmld with training threads takes queued tune jobs from `pgml.jobs`
//! (see [`pgmld_jobs`]), one per device slot, and runs each on its slot's thread with its
//! notices sent to the job's channel, where the waiting session relays them.
//!
//! Which databases a worker serves: those its own clients queue jobs in, those where the
//! startup scan found jobs to take over, the configured `worker_databases`, or every
//! database of the upstream (`pgmld worker` by default). It wakes on a job queued by this
//! process, on `NOTIFY pgml_jobs_queued` from another one, and every `poll` at the latest;
//! it sweeps every database it serves for jobs whose worker died (see
//! [`pgmld_jobs::lease::sweep`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgmld_jobs::{notify, queue, Claimed, DeviceKind};
use pgmld_sql::{CallContext, SqlError};
use pgmld_train::Secret;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::TuneError;
use crate::records;
use crate::tuner::{this_worker, Tuner};

/// What the front-end and the claim loop of one process share.
#[derive(Default)]
pub struct LocalJobs {
    /// Wakes the claim loop: a job was queued here, or a slot became free.
    wake: Notify,
    /// Databases the claim loop serves besides the configured ones.
    watched: Mutex<BTreeSet<String>>,
    /// Cancel flags of the jobs this process runs, by (database, job id): a cancel asked
    /// for in this process reaches its job at once instead of at the next heartbeat.
    running: Mutex<HashMap<(String, i64), Arc<AtomicBool>>>,
    /// Hub tokens of calls queued here, for this process's worker (tokens are never
    /// stored; a job another pgmld runs uses that pgmld's `hub_token` or `HF_TOKEN`).
    tokens: Mutex<HashMap<(String, i64), Secret>>,
    /// This process's training threads as the queue sees them (empty until the claim
    /// loop starts, and for a front-end that trains nothing).
    slots: Mutex<Vec<Slot>>,
    /// Set on SIGTERM (`pgmld worker`): nothing more is claimed, and each running job goes
    /// back to the queue after its next checkpoint, or at this deadline.
    drain: Mutex<Option<Instant>>,
}

impl LocalJobs {
    /// Serves `database`'s queue from now on, and looks at it at once.
    pub fn watch(&self, database: &str) {
        if let Ok(mut w) = self.watched.lock() {
            w.insert(database.to_string());
        }
        self.wake.notify_one();
    }

    /// The databases [`LocalJobs::watch`] added.
    fn watched(&self) -> Vec<String> {
        self.watched.lock().map(|w| w.iter().cloned().collect()).unwrap_or_default()
    }

    /// Keeps the call's Hub token for this process's worker, should it claim the job.
    pub(crate) fn hand_token(&self, database: &str, job_id: i64, token: Secret) {
        if let Ok(mut t) = self.tokens.lock() {
            t.insert((database.to_string(), job_id), token);
        }
    }

    /// The token [`LocalJobs::hand_token`] kept for a job (forgotten once taken).
    fn take_token(&self, database: &str, job_id: i64) -> Option<Secret> {
        self.tokens.lock().ok()?.remove(&(database.to_string(), job_id))
    }

    /// Stops claiming and releases the running jobs: each goes back to the queue after
    /// its next checkpoint is stored, or at `deadline` at the latest.
    pub fn drain(&self, deadline: Instant) {
        if let Ok(mut d) = self.drain.lock() {
            *d = Some(deadline);
        }
    }

    /// `Some(deadline)` once [`LocalJobs::drain`] was called.
    pub(crate) fn draining(&self) -> Option<Instant> {
        self.drain.lock().ok().and_then(|d| *d)
    }

    /// How many jobs this process runs now.
    pub fn running(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Takes a free training thread whose device may run a job asking for `wanted`:
    /// (slot, its kind, its label such as `cuda:0`).
    pub(crate) fn take_slot(&self, wanted: DeviceKind) -> Option<(usize, DeviceKind, String)> {
        if self.draining().is_some() {
            return None;
        }
        let mut slots = self.slots.lock().ok()?;
        let (i, s) =
            slots.iter_mut().enumerate().find(|(_, s)| !s.busy && s.kind.can_run(wanted))?;
        s.busy = true;
        Some((i, s.kind, s.label.clone()))
    }

    /// Gives back a slot [`LocalJobs::take_slot`] took, and wakes the claim loop.
    pub(crate) fn free_slot(&self, slot: usize) {
        if let Some(s) = self.slots.lock().ok().as_mut().and_then(|s| s.get_mut(slot)) {
            s.busy = false;
        }
        self.wake.notify_one();
    }

    /// Whether this process has a training thread that may run a job asking for `wanted`
    /// (busy or not: the claim loop takes the job once one is free).
    pub(crate) fn can_run(&self, wanted: DeviceKind) -> bool {
        self.slots.lock().map(|s| s.iter().any(|s| s.kind.can_run(wanted))).unwrap_or(false)
    }

    /// The labels and kinds of the training threads, as pgml.workers records them.
    fn devices(&self) -> (Vec<String>, Vec<DeviceKind>) {
        self.slots
            .lock()
            .map(|s| s.iter().map(|s| (s.label.clone(), s.kind)).unzip())
            .unwrap_or_default()
    }

    /// The kinds of the free slots.
    pub(crate) fn free_kinds(&self) -> Vec<DeviceKind> {
        let mut kinds: Vec<DeviceKind> = self
            .slots
            .lock()
            .map(|s| s.iter().filter(|s| !s.busy).map(|s| s.kind).collect())
            .unwrap_or_default();
        kinds.sort_by_key(|k| k.name());
        kinds.dedup();
        kinds
    }

    /// Sets the cancel flag of a job this process runs; false when it runs elsewhere.
    pub(crate) fn cancel_here(&self, database: &str, job_id: i64) -> bool {
        let flag =
            self.running.lock().ok().and_then(|r| r.get(&(database.to_string(), job_id)).cloned());
        match flag {
            Some(f) => {
                f.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// Which databases the claim loop serves besides those [`LocalJobs::watch`] adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// These (none: only the watched ones).
    Listed(Vec<String>),
    /// Every database of the upstream that has the job queue.
    All,
}

/// How the claim loop runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Databases to serve.
    pub scope: Scope,
    /// How long a running job's heartbeat may be silent before its worker counts as hung.
    pub lease: Duration,
    /// The longest the loop sleeps between looks at the queues.
    pub poll: Duration,
}

/// How often the loop sweeps for jobs whose worker died.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How often the list of all databases is read again ([`Scope::All`]).
const DATABASES_EVERY: Duration = Duration::from_secs(30);

/// One training thread as the queue sees it.
#[derive(Debug)]
struct Slot {
    kind: DeviceKind,
    label: String,
    busy: bool,
}

/// Runs the claim loop for `tuner`'s training threads until the process ends.
pub async fn run(tuner: Arc<Tuner>, options: WorkerOptions) {
    let slots: Vec<Slot> = tuner
        .pool
        .devices()
        .iter()
        .map(|d| Slot { kind: d.kind(), label: d.label(), busy: false })
        .collect();
    if slots.is_empty() {
        return;
    }
    tracing::info!(slots = slots.len(), scope = ?options.scope, "claiming pgml.tune jobs");
    if let Ok(mut s) = tuner.jobs.slots.lock() {
        *s = slots;
    }
    let mut listeners: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut all: (Vec<String>, Option<Instant>) = (Vec::new(), None);
    let mut last_sweep: Option<Instant> = None;
    loop {
        let databases = databases(&tuner, &options.scope, &mut all).await;
        for db in &databases {
            if listeners.get(db).is_none_or(|h| h.is_finished()) {
                if let Some(h) = listen_for_jobs(&tuner, db).await {
                    listeners.insert(db.clone(), h);
                }
            }
        }
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            last_sweep = Some(Instant::now());
            for db in &databases {
                sweep(&tuner, db, options.lease).await;
            }
        }
        for db in &databases {
            claim_for_free_slots(&tuner, db).await;
            crate::data_parallel::join_for_free_slots(&tuner, db).await;
        }
        tokio::select! {
            _ = tuner.jobs.wake.notified() => {}
            _ = tokio::time::sleep(options.poll) => {}
        }
    }
}

/// The databases to serve now: the watched ones, the listed ones, or all with a queue.
async fn databases(
    tuner: &Tuner,
    scope: &Scope,
    all: &mut (Vec<String>, Option<Instant>),
) -> Vec<String> {
    let mut out: BTreeSet<String> = tuner.jobs.watched().into_iter().collect();
    match scope {
        Scope::Listed(list) => out.extend(list.iter().cloned()),
        Scope::All => {
            if all.1.is_none_or(|t| t.elapsed() >= DATABASES_EVERY) {
                all.1 = Some(Instant::now());
                match with_queue(tuner).await {
                    Ok(d) => all.0 = d,
                    Err(e) => tracing::warn!("listing the databases with a pgml.jobs queue: {e}"),
                }
            }
            out.extend(all.0.iter().cloned());
        }
    }
    out.into_iter().collect()
}

/// Every database of the upstream whose pgml schema has the job queue (migration 0008).
async fn with_queue(tuner: &Tuner) -> crate::error::Result<Vec<String>> {
    let mut out = Vec::new();
    for db in tuner.connector.databases().await? {
        // A short connection: databases without the queue get none kept open.
        let Ok(client) = tuner.connector.connect(&db).await else { continue };
        if queue::exists(&client).await.unwrap_or(false) {
            out.push(db);
        }
    }
    Ok(out)
}

/// A task that wakes the loop on each `NOTIFY pgml_jobs_queued` in `db` (another pgmld
/// queued a job); it ends with its connection, and the loop then starts another.
async fn listen_for_jobs(tuner: &Arc<Tuner>, db: &str) -> Option<JoinHandle<()>> {
    let (client, mut rx) = match tuner.connector.listen(db).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(database = db, "cannot listen for queued jobs: {e}");
            return None;
        }
    };
    if let Err(e) = notify::listen(&client, notify::QUEUED).await {
        tracing::debug!(database = db, "cannot listen for queued jobs: {e}");
        return None;
    }
    let tuner = tuner.clone();
    Some(tokio::spawn(async move {
        let _client = client;
        while rx.recv().await.is_some() {
            tuner.jobs.wake.notify_one();
        }
    }))
}

/// Beats this worker's heartbeat in `db`'s pgml.workers, and puts back in the queue the
/// running jobs of `db` whose worker died.
async fn sweep(tuner: &Tuner, db: &str, lease: Duration) {
    let Ok(client) = tuner.connector.shared(db).await else { return };
    let (devices, kinds) = tuner.jobs.devices();
    if let Err(e) = pgmld_jobs::registry::beat(&client, &this_worker(), &devices, &kinds).await {
        tracing::debug!(database = db, "recording this worker in pgml.workers: {e}");
    }
    match pgmld_jobs::lease::sweep(&client, lease).await {
        Ok(s) if !s.requeued.is_empty() => {
            tracing::info!(database = db, jobs = ?s.requeued, "jobs whose worker died are queued again");
            tuner.jobs.wake.notify_one();
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(database = db, "sweeping the job queue: {e}"),
    }
}

/// Claims queued jobs of `db` for the free slots, each on a connection of its own that
/// then runs it.
async fn claim_for_free_slots(tuner: &Arc<Tuner>, db: &str) {
    for kind in tuner.jobs.free_kinds() {
        loop {
            let Ok(shared) = tuner.connector.shared(db).await else { return };
            let waiting = shared
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pgml.jobs WHERE status = 'queued' AND device = ANY($1))",
                    &[&kind.runnable()],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false);
            if !waiting {
                break;
            }
            let Some((slot, kind, label)) = tuner.jobs.take_slot(kind) else { break };
            let claimed = match tuner.connector.connect(db).await {
                Ok(mut client) => {
                    match queue::claim(&mut client, &this_worker(), kind, &label).await {
                        Ok(Some(c)) => Some((client, c)),
                        Ok(None) => None,
                        Err(e) => {
                            tracing::warn!(database = db, "claiming a job: {e}");
                            None
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(database = db, "claiming a job: {e}");
                    None
                }
            };
            let Some((client, claimed)) = claimed else {
                tuner.jobs.free_slot(slot);
                break;
            };
            start(tuner, client, db, claimed, slot);
        }
    }
}

/// Runs a claimed job on `slot` in the background; the slot is free again once it ends.
pub(crate) fn start(
    tuner: &Arc<Tuner>,
    client: tokio_postgres::Client,
    db: &str,
    claimed: Claimed,
    slot: usize,
) {
    tracing::info!(
        database = db,
        job_id = claimed.job_id,
        attempts = claimed.attempts,
        slot,
        "running a pgml.tune job"
    );
    let (tuner, db) = (tuner.clone(), db.to_string());
    tokio::spawn(async move {
        run_claimed(&tuner, client, &db, claimed, slot).await;
        tuner.jobs.free_slot(slot);
    });
}

/// What goes to a job's channel: a notice, or its end (after its row says how it ended).
/// A message longer than NOTIFY's payload allows is cut (at a character boundary, with
/// an ellipsis) so that the payload stays whole JSON.
fn notice_payload(severity: &str, message: &str) -> String {
    let payload = json!({"severity": severity, "message": message}).to_string();
    if payload.len() <= notify::MAX_PAYLOAD {
        return payload;
    }
    // JSON escaping makes a byte at most six (a control character); 64 for the rest.
    let mut end = ((notify::MAX_PAYLOAD - 64) / 6).min(message.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    json!({"severity": severity, "message": format!("{}…", &message[..end])}).to_string()
}

/// The payload that ends a job's channel.
pub(crate) const END: &str = "{\"end\":true}";

/// Ends a job's relay task without a payload (never sent to the channel).
const STOP: &str = "";

/// Runs one claimed job on `slot`, acting as the job's owner, with its notices sent to
/// the job's channel; records its result or error, then sends the end.
async fn run_claimed(
    tuner: &Arc<Tuner>,
    client: tokio_postgres::Client,
    db: &str,
    claimed: Claimed,
    slot: usize,
) {
    let job_id = claimed.job_id;
    let cancel = Arc::new(AtomicBool::new(false));
    if let Ok(mut r) = tuner.jobs.running.lock() {
        r.insert((db.to_string(), job_id), cancel.clone());
    }
    // Notices leave in order through one task, on the shared connection (NOTIFY outside a
    // transaction is delivered at once; the job's own connection opens transactions).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let relay = {
        let (tuner, db) = (tuner.clone(), db.to_string());
        tokio::spawn(async move {
            let channel = notify::job_channel(job_id);
            while let Some(payload) = rx.recv().await {
                if payload == STOP {
                    return;
                }
                let end = payload == END;
                match tuner.connector.shared(&db).await {
                    Ok(c) => {
                        if let Err(e) = notify::notify(&c, &channel, &payload).await {
                            tracing::debug!(job_id, "cannot send a job notice: {e}");
                        }
                    }
                    Err(e) => tracing::debug!(job_id, "cannot send a job notice: {e}"),
                }
                if end {
                    return;
                }
            }
        })
    };
    let notices = tx.clone();
    let mut ctx = CallContext::detached(db, &claimed.owner);
    ctx.notices = Arc::new(move |n| {
        let _ = notices.send(notice_payload(n.severity, &n.message));
    });
    ctx.cancelled = cancel;
    match pgmld_models::access::caller_of(&client, &claimed.owner).await {
        Ok(caller) => ctx.caller = caller,
        Err(e) => {
            tracing::warn!(database = db, role = %claimed.owner, "reading the job owner's privileges: {e}")
        }
    }
    let token = tuner.jobs.take_token(db, job_id);
    let (model_id, project_id) = (claimed.model_id, claimed.project_id);
    let last = match tuner.run_job(client, &ctx, claimed, token, slot).await {
        Err(e @ (TuneError::Released | TuneError::RankLost(_))) => {
            tracing::info!(database = db, job_id, "released the job to the queue: {e}");
            // The waiting session keeps listening: the next worker sends the end.
            STOP
        }
        done => {
            record_end(tuner, db, (job_id, model_id, project_id), done).await;
            END
        }
    };
    let _ = tx.send(last.to_string());
    let _ = relay.await;
    if let Ok(mut r) = tuner.jobs.running.lock() {
        r.remove(&(db.to_string(), job_id));
    }
}

/// Records how a job ended (its result, or its error's SQLSTATE, message and hint) for the
/// session that waits for it, and logs it.
async fn record_end(
    tuner: &Tuner,
    db: &str,
    (job_id, model_id, project_id): (i64, Option<i64>, i64),
    done: crate::error::Result<crate::tuner::Tuned>,
) {
    let done = done.map_err(|e| (e.reason(), SqlError::from(e)));
    let recorded = match tuner.connector.shared(db).await {
        Ok(c) => match &done {
            Ok(t) => {
                let result = json!({"status": "successful", "task": t.task.name(), "algorithm": t.algorithm, "deployed": t.deployed, "model_id": t.model_id});
                records::job_result(&c, job_id, &result).await
            }
            Err((reason, sql)) => record_error(&c, job_id, reason, sql).await,
        },
        Err(e) => Err(e.into()),
    };
    if let Err(e) = recorded {
        tracing::warn!(database = db, job_id, "cannot record how the job ended: {e}");
    }
    match &done {
        Ok(t) => {
            tracing::info!(
                database = db,
                job_id,
                model_id = t.model_id,
                deployed = t.deployed,
                "pgml.tune job finished"
            )
        }
        Err((_, e)) => {
            tracing::info!(
                database = db,
                job_id,
                ?model_id,
                project_id,
                code = e.code,
                "pgml.tune job failed: {}",
                e.message
            )
        }
    }
}

/// Records the SQLSTATE, message, detail and hint of a failed job's error (`error_code`,
/// `error_hint`, and the whole error in `result`), and ends a job left running (one that
/// failed before its model's failure was recorded).
async fn record_error(
    client: &tokio_postgres::Client,
    job_id: i64,
    reason: &str,
    sql: &SqlError,
) -> crate::error::Result<()> {
    let result = json!({"error": {"code": sql.code, "message": sql.message, "detail": sql.detail, "hint": sql.hint}});
    let cancelled = sql.code == pgmld_sql::codes::QUERY_CANCELED;
    // One statement: a reader sees the job ended with its error, or not ended at all.
    client
        .execute(
            "UPDATE pgml.jobs SET error_code = $4, error_hint = $5, result = $6, \
             status = CASE WHEN status IN ('queued', 'running') \
                 THEN CASE WHEN $2 THEN 'cancelled' ELSE 'failed' END ELSE status END, \
             error = CASE WHEN status IN ('queued', 'running') THEN coalesce(error, $3) ELSE error END, \
             finished_at = coalesce(finished_at, clock_timestamp()) \
             WHERE id = $1",
            &[&job_id, &cancelled, &reason, &sql.code, &sql.hint, &result],
        )
        .await
        .map_err(|e| TuneError::pg("recording the job's error and ending it", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notices_stay_whole_json_within_notify_s_limit() {
        let short = notice_payload("INFO", "hello \"you\"");
        let v: serde_json::Value = serde_json::from_str(&short).unwrap();
        assert_eq!(v["message"], "hello \"you\"");
        for message in ["é".repeat(6000), "\u{1}".repeat(9000), "x".repeat(20_000)] {
            let p = notice_payload("WARNING", &message);
            assert!(p.len() <= notify::MAX_PAYLOAD, "{}", p.len());
            let v: serde_json::Value = serde_json::from_str(&p).unwrap();
            assert!(v["message"].as_str().unwrap().ends_with('…'));
            assert_ne!(p, END);
        }
    }
}
