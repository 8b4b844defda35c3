//! Leases: the running worker's heartbeat, and the sweep that gives a job whose worker
//! died or hung to the next worker.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{pg, Result};
use crate::queue::{back_in_queue, lock_key, unlock, JOB_LOCK_CLASS};

/// Beats job `job_id`'s heartbeat and records its progress (0-1) and estimated seconds
/// left when known. Returns whether a cancel was requested: the worker polls with it.
pub async fn heartbeat(
    client: &Client,
    job_id: i64,
    progress: Option<f64>,
    eta_seconds: Option<f64>,
) -> Result<bool> {
    let row = client
        .query_opt(
            "UPDATE pgml.jobs SET heartbeat_at = clock_timestamp(), \
             progress = coalesce($2::float8::real, progress), eta_seconds = coalesce($3::float8::real, eta_seconds) \
             WHERE id = $1 RETURNING cancel_requested_at IS NOT NULL",
            &[&job_id, &progress, &eta_seconds],
        )
        .await
        .map_err(pg("beating the job's heartbeat"))?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// What one [`sweep`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Running jobs whose lock was free (their worker is gone), now queued again.
    pub requeued: Vec<i64>,
    /// Running jobs whose heartbeat was older than the lease: their worker's connection
    /// was terminated (which frees the lock; the next sweep queues them again).
    pub expired: Vec<i64>,
}

/// Looks at every running job of the database: one whose advisory lock can be taken has
/// lost its worker (killed, connection lost) and goes back to the queue, to be resumed
/// from its last checkpoint; one whose lock is held but whose heartbeat is older than
/// `lease` has a hung worker, whose connection is terminated (advisory locks belong to a
/// database: only this database's holder is). Safe to run from any number of pgmld at
/// once: the lock decides.
pub async fn sweep(client: &Client, lease: Duration) -> Result<Swept> {
    let rows = client
        .query(
            "SELECT id, heartbeat_at IS NULL OR heartbeat_at < clock_timestamp() - make_interval(secs => $1) \
             FROM pgml.jobs WHERE status = 'running' ORDER BY id",
            &[&lease.as_secs_f64()],
        )
        .await
        .map_err(pg("looking for running jobs"))?;
    let mut swept = Swept::default();
    for row in rows {
        let (job_id, stale): (i64, bool) = (row.get(0), row.get(1));
        if crate::queue::try_lock(client, job_id).await? {
            let requeued = back_in_queue(client, job_id).await;
            unlock(client, job_id).await?;
            if requeued? {
                swept.requeued.push(job_id);
            }
        } else if stale {
            let ended = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                     AND classid = $1::int4::oid AND objid = $2::int4::oid AND objsubid = 2 AND granted \
                     AND pid <> pg_backend_pid()",
                    &[&JOB_LOCK_CLASS, &lock_key(job_id)],
                )
                .await
                .map_err(pg("ending a hung worker's connection"))?;
            if ended.get::<_, i64>(0) > 0 {
                tracing::warn!(job_id, "job's heartbeat is older than the lease ({lease:?}): its worker's connection was ended");
                swept.expired.push(job_id);
            }
        }
    }
    Ok(swept)
}
