//! Claiming, releasing and cancelling jobs.

use serde_json::Value as Json;
use tokio_postgres::{Client, GenericClient};

use crate::device::DeviceKind;
use crate::error::{pg, Result};

/// First key of the session-level advisory lock that the connection running a job holds,
/// (this, job id): a `running` job whose lock can be taken has lost its worker.
pub const JOB_LOCK_CLASS: i32 = 0x7067_6d6c;

/// The second key of a job's lock.
pub fn lock_key(job_id: i64) -> i32 {
    (job_id & 0x7fff_ffff) as i32
}

/// Takes the lock of `job_id` on `client` (a connection, or a transaction of one: the lock
/// is the session's either way) unless another session holds it.
pub async fn try_lock(client: &impl GenericClient, job_id: i64) -> Result<bool> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&JOB_LOCK_CLASS, &lock_key(job_id)])
        .await
        .map_err(pg("locking the job"))?;
    Ok(row.get(0))
}

/// Releases the lock of `job_id` that [`try_lock`] or [`claim`] took on `client`.
pub async fn unlock(client: &impl GenericClient, job_id: i64) -> Result<()> {
    client
        .query_one("SELECT pg_advisory_unlock($1, $2)", &[&JOB_LOCK_CLASS, &lock_key(job_id)])
        .await
        .map_err(pg("unlocking the job"))?;
    Ok(())
}

/// Who runs jobs: recorded in `pgml.jobs` (worker, worker_host, worker_pid) so that an
/// operator sees where each job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// The machine's host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
}

impl Worker {
    /// This process on this machine.
    pub fn this_process() -> Self {
        Worker { host: host_name(), pid: std::process::id() }
    }

    /// `pgmld-<pid>@<host>`: the `worker` column.
    pub fn name(&self) -> String {
        format!("pgmld-{}@{}", self.pid, self.host)
    }
}

/// The machine's host name (`localhost` if it cannot be read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer it is given.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match rc {
        0 if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "localhost".into(),
    }
}

/// A job a worker claimed: it now holds the job's lock on the claiming connection.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// `pgml.jobs.id`.
    pub job_id: i64,
    /// What the job is (`tune`).
    pub kind: String,
    /// Its model row, when it has one.
    pub model_id: Option<i64>,
    /// Its project.
    pub project_id: i64,
    /// The role that queued it: the job acts as this role.
    pub owner: String,
    /// How many workers started it before, this one included (more than one: a takeover).
    pub attempts: i32,
    /// The optimizer step of its latest stored checkpoint, if any: where it resumes.
    pub checkpoint_step: Option<i64>,
    /// The call that queued it, as stored (never a secret).
    pub request: Option<Json>,
}

/// Claims the first queued job (highest priority, then oldest) that a worker with a
/// `device_kind` device may run, for `worker`, recording `device_label` (e.g. `cuda:1`):
/// the row becomes `running` with a fresh heartbeat, and `client` holds its lock until
/// [`unlock`] or the connection ends. `None` when no job is waiting.
///
/// Rows locked by another claim are skipped (`FOR UPDATE SKIP LOCKED`), so concurrent
/// workers never wait for each other and never get the same job. A queued row whose
/// advisory lock another session holds (its previous worker still releasing it) is skipped
/// too.
pub async fn claim(
    client: &mut Client,
    worker: &Worker,
    device_kind: DeviceKind,
    device_label: &str,
) -> Result<Option<Claimed>> {
    let runnable = device_kind.runnable();
    let mut skipped: Vec<i64> = Vec::new();
    loop {
        let tx = client.transaction().await.map_err(pg("starting a claim"))?;
        let row = tx
            .query_opt(
                "SELECT id FROM pgml.jobs WHERE status = 'queued' AND device = ANY($1) AND id <> ALL($2) \
                 ORDER BY priority DESC, id FOR UPDATE SKIP LOCKED LIMIT 1",
                &[&runnable, &skipped],
            )
            .await
            .map_err(pg("looking for a queued job"))?;
        let Some(row) = row else { return Ok(None) };
        let job_id: i64 = row.get(0);
        if !try_lock(&tx, job_id).await? {
            skipped.push(job_id);
            continue;
        }
        let claimed = mark_claimed(&tx, job_id, worker, device_label).await;
        let committed = match claimed {
            Ok(r) => tx.commit().await.map(|_| r),
            Err(e) => {
                drop(tx);
                Err(e)
            }
        };
        match committed {
            Ok(Some(r)) => return Ok(Some(claimed_row(&r))),
            Ok(None) => {
                let _ = unlock(client, job_id).await;
                skipped.push(job_id);
            }
            Err(e) => {
                // The session-level lock outlives the failed transaction: give it back.
                let _ = unlock(client, job_id).await;
                return Err(pg("claiming the job")(e));
            }
        }
    }
}

/// The columns of a job that [`claimed_row`] reads, in its order.
macro_rules! claimed_columns {
    () => {
        "id, kind, model_id, project_id, owner::text, attempts, checkpoint_step, request"
    };
}

/// [`claimed_columns`] for queries built at run time.
pub(crate) const CLAIMED_COLUMNS: &str = claimed_columns!();

/// Marks a job running for a worker: the update of [`claim`] and [`claim_locked`].
const CLAIM: &str = concat!(
    "UPDATE pgml.jobs SET status = 'running', worker = $2, worker_host = $3, worker_pid = $4, \
     worker_device = $5, started_at = coalesce(started_at, clock_timestamp()), \
     heartbeat_at = clock_timestamp(), attempts = attempts + 1 WHERE id = $1 AND status = 'queued' \
     RETURNING ",
    claimed_columns!()
);

/// Runs [`CLAIM`] for `job_id`: the claimed row, or none when it is no longer queued.
async fn mark_claimed(
    client: &impl GenericClient,
    job_id: i64,
    worker: &Worker,
    device_label: &str,
) -> std::result::Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let pid = worker.pid as i32;
    client.query_opt(CLAIM, &[&job_id, &worker.name(), &worker.host, &pid, &device_label]).await
}

/// A [`Claimed`] from a row whose first columns are [`CLAIMED_COLUMNS`].
pub(crate) fn claimed_row(r: &tokio_postgres::Row) -> Claimed {
    Claimed {
        job_id: r.get(0),
        kind: r.get(1),
        model_id: r.get(2),
        project_id: r.get(3),
        owner: r.get(4),
        attempts: r.get(5),
        checkpoint_step: r.get(6),
        request: r.get(7),
    }
}

/// Claims queued job `job_id`, whose lock `client` holds already (the session that queued
/// it, when its own process has a free training thread), for `worker` on `device_label`.
/// `None` when the job is no longer queued (cancelled meanwhile).
pub async fn claim_locked(
    client: &Client,
    worker: &Worker,
    job_id: i64,
    device_label: &str,
) -> Result<Option<Claimed>> {
    let row =
        mark_claimed(client, job_id, worker, device_label).await.map_err(pg("claiming the job"))?;
    Ok(row.as_ref().map(claimed_row))
}

/// Marks job `job_id` as entering the queue now (`queued_at`): the time it waited before
/// was its own preparation (reading and storing its training data).
pub async fn mark_queued(client: &Client, job_id: i64) -> Result<()> {
    client
        .execute("UPDATE pgml.jobs SET queued_at = clock_timestamp() WHERE id = $1", &[&job_id])
        .await
        .map_err(pg("queueing the job"))?;
    Ok(())
}

/// Releases queued job `job_id`, recorded and locked on `client`, to the workers: its lock
/// is released, and `NOTIFY pgml_jobs_queued` wakes idle workers.
pub async fn release(client: &Client, job_id: i64) -> Result<()> {
    unlock(client, job_id).await?;
    crate::notify::notify(client, crate::notify::QUEUED, &job_id.to_string()).await
}

/// Whether the database `client` is connected to has the job queue (its pgml schema is
/// migrated to 0008 or later).
pub async fn exists(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'pgml' \
             AND table_name = 'jobs' AND column_name = 'priority')",
            &[],
        )
        .await
        .map_err(pg("looking for pgml.jobs"))?;
    Ok(row.get(0))
}

/// How many queued jobs a worker would claim before queued job `job_id` (higher priority,
/// or the same priority and queued earlier), whatever their device.
pub async fn ahead(client: &Client, job_id: i64) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pgml.jobs j, pgml.jobs me WHERE me.id = $1 AND j.status = 'queued' \
             AND j.id <> me.id AND (j.priority > me.priority OR (j.priority = me.priority AND j.id < me.id))",
            &[&job_id],
        )
        .await
        .map_err(pg("counting the jobs ahead"))?;
    Ok(row.get(0))
}

/// Puts running job `job_id`, whose lock `client` holds, back in the queue (a worker that
/// drains on SIGTERM after its last checkpoint), then releases the lock: the next worker
/// resumes it.
pub async fn requeue(client: &Client, job_id: i64) -> Result<()> {
    back_in_queue(client, job_id).await?;
    unlock(client, job_id).await
}

/// Marks running job `job_id` queued again, without a worker; returns whether it was
/// running.
pub(crate) async fn back_in_queue(client: &Client, job_id: i64) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE pgml.jobs SET status = 'queued', queued_at = clock_timestamp(), worker = NULL, \
             worker_host = NULL, worker_pid = NULL, worker_device = NULL, eta_seconds = NULL \
             WHERE id = $1 AND status = 'running'",
            &[&job_id],
        )
        .await
        .map_err(pg("putting the job back in the queue"))?;
    Ok(n > 0)
}

/// What [`request_cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued: it is cancelled now.
    Cancelled,
    /// The job is running: its worker stops it at its next poll.
    Requested,
    /// The job had ended already (or does not exist).
    NotActive,
}

/// Cancels job `job_id`: at once when queued (its model, still `in_progress`, fails with
/// `cancelled` in the same statement, so no reader sees one without the other), at its
/// worker's next poll when running.
pub async fn request_cancel(client: &Client, job_id: i64) -> Result<CancelOutcome> {
    let row = client
        .query_opt(
            "WITH job AS (UPDATE pgml.jobs SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp()), \
             status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
             error = CASE WHEN status = 'queued' THEN 'cancelled' ELSE error END, \
             finished_at = CASE WHEN status = 'queued' THEN clock_timestamp() ELSE finished_at END \
             WHERE id = $1 AND status IN ('queued', 'running') RETURNING status, model_id), \
             model AS (UPDATE pgml.models SET status = 'failed', error = 'cancelled' \
             WHERE id = (SELECT model_id FROM job WHERE status = 'cancelled') AND status = 'in_progress') \
             SELECT status FROM job",
            &[&job_id],
        )
        .await
        .map_err(pg("cancelling the job"))?;
    Ok(match row.map(|r| r.get::<_, String>(0)).as_deref() {
        Some("cancelled") => CancelOutcome::Cancelled,
        Some(_) => CancelOutcome::Requested,
        None => CancelOutcome::NotActive,
    })
}
