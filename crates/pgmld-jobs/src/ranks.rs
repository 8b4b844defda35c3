//! Data-parallel jobs (`world_size` > 1): the rendezvous through the job row (migration
//! 0010). The worker that claimed the job is rank 0: it publishes its c10d store's address
//! ([`publish`]), other workers join that generation as ranks 1.. ([`join`]), and rank 0
//! closes the rendezvous ([`close`]) once the job has all its ranks or at the rendezvous
//! timeout; the ranks that joined then meet in the store. Ranks are numbered under the job
//! row's lock, so two workers never get the same rank and none joins a closed generation.

use tokio_postgres::{Client, GenericClient};

use crate::device::DeviceKind;
use crate::error::{pg, Result};
use crate::queue::{claimed_row, Claimed, Worker, CLAIMED_COLUMNS};

/// Opens a new generation of running job `job_id` (whose lock the caller holds) with rank
/// 0's store at `address` (`host:port`), and wakes idle workers to join it. Returns the
/// generation, or `None` when the job is no longer running.
pub async fn publish(client: &Client, job_id: i64, address: &str) -> Result<Option<i32>> {
    let row = client
        .query_opt(
            "UPDATE pgml.jobs SET generation = generation + 1, rendezvous = $2, ranks = NULL \
             WHERE id = $1 AND status = 'running' RETURNING generation",
            &[&job_id, &address],
        )
        .await
        .map_err(pg("publishing the job's rendezvous"))?;
    let Some(row) = row else { return Ok(None) };
    crate::notify::notify(client, crate::notify::QUEUED, &job_id.to_string()).await?;
    Ok(Some(row.get(0)))
}

/// How many ranks besides rank 0 joined generation `generation` of job `job_id`.
pub async fn joined(client: &impl GenericClient, job_id: i64, generation: i32) -> Result<usize> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pgml.job_ranks WHERE job_id = $1 AND generation = $2",
            &[&job_id, &generation],
        )
        .await
        .map_err(pg("counting the job's ranks"))?;
    Ok(row.get::<_, i64>(0) as usize)
}

/// Closes generation `generation` of job `job_id`: no rank joins it any more, and `ranks`
/// records how many train (rank 0 and those that joined). Returns that number.
pub async fn close(client: &mut Client, job_id: i64, generation: i32) -> Result<usize> {
    let tx = client.transaction().await.map_err(pg("closing the rendezvous"))?;
    tx.execute("SELECT 1 FROM pgml.jobs WHERE id = $1 FOR UPDATE", &[&job_id])
        .await
        .map_err(pg("closing the rendezvous"))?;
    let n = 1 + joined(&tx, job_id, generation).await?;
    tx.execute(
        "UPDATE pgml.jobs SET rendezvous = NULL, ranks = $3 WHERE id = $1 AND generation = $2",
        &[&job_id, &generation, &(n as i32)],
    )
    .await
    .map_err(pg("closing the rendezvous"))?;
    tx.commit().await.map_err(pg("closing the rendezvous"))?;
    Ok(n)
}

/// A rank a worker took in a data-parallel job.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The job, as a claim reads it (its request, owner, checkpoint step).
    pub job: Claimed,
    /// The generation joined.
    pub generation: i32,
    /// This worker's rank (1 or more).
    pub rank: usize,
    /// Rank 0's store, `host:port`.
    pub address: String,
}

/// The jobs with an open rendezvous that a device of kind `$2` (`DeviceKind::name`) may
/// join: the job asks for a kind in `$1` (`DeviceKind::runnable`) and its rank 0 trains on
/// a `$2` device too (every rank of a job computes alike). [`open_exists`] and [`join`].
const JOINABLE: &str = "rendezvous IS NOT NULL AND status = 'running' AND device = ANY($1) \
     AND split_part(worker_device, ':', 1) = $2";

/// Whether `db` has an open rendezvous a `device_kind` device may join (a cheap look
/// before [`join`] takes a connection).
pub async fn open_exists(client: &Client, device_kind: DeviceKind) -> Result<bool> {
    let row = client
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM pgml.jobs WHERE {JOINABLE})"),
            &[&device_kind.runnable(), &device_kind.name()],
        )
        .await
        .map_err(pg("looking for a rendezvous"))?;
    Ok(row.get(0))
}

/// Joins the first open rendezvous (by priority, then age) that a `device_kind` device may
/// join ([`JOINABLE`]) and that still wants ranks, as `worker` on `device_label`. `None`
/// when there is none.
pub async fn join(
    client: &mut Client,
    worker: &Worker,
    device_kind: DeviceKind,
    device_label: &str,
) -> Result<Option<Joined>> {
    let tx = client.transaction().await.map_err(pg("joining a job"))?;
    let rows = tx
        .query(
            &format!(
                "SELECT {CLAIMED_COLUMNS}, generation, rendezvous, world_size FROM pgml.jobs \
                 WHERE {JOINABLE} ORDER BY priority DESC, id FOR UPDATE SKIP LOCKED"
            ),
            &[&device_kind.runnable(), &device_kind.name()],
        )
        .await
        .map_err(pg("looking for a rendezvous"))?;
    for row in rows {
        let job = claimed_row(&row);
        let (generation, address, world): (i32, String, i32) =
            (row.get(8), row.get(9), row.get(10));
        let rank = 1 + joined(&tx, job.job_id, generation).await?;
        if rank >= world as usize {
            continue;
        }
        tx.execute(
            "INSERT INTO pgml.job_ranks (job_id, generation, rank, worker, worker_host, worker_pid, worker_device) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &job.job_id,
                &generation,
                &(rank as i32),
                &worker.name(),
                &worker.host,
                &(worker.pid as i32),
                &device_label,
            ],
        )
        .await
        .map_err(pg("joining a job"))?;
        tx.commit().await.map_err(pg("joining a job"))?;
        return Ok(Some(Joined { job, generation, rank, address }));
    }
    Ok(None)
}

/// Where a generation a rank joined stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Ranks may still join.
    Open,
    /// Closed: this many ranks train.
    Closed(usize),
    /// Over: the job ended, was cancelled, or went on to another generation.
    Over,
}

/// Where generation `generation` of job `job_id` stands.
pub async fn generation(client: &Client, job_id: i64, generation: i32) -> Result<Generation> {
    let row = client
        .query_opt(
            "SELECT status = 'running' AND generation = $2 AND cancel_requested_at IS NULL, \
             rendezvous IS NOT NULL, ranks FROM pgml.jobs WHERE id = $1",
            &[&job_id, &generation],
        )
        .await
        .map_err(pg("reading the job's rendezvous"))?;
    Ok(match row {
        Some(r) if r.get::<_, bool>(0) => match (r.get::<_, bool>(1), r.get::<_, Option<i32>>(2)) {
            (true, _) => Generation::Open,
            (false, Some(n)) if n > 0 => Generation::Closed(n as usize),
            _ => Generation::Over,
        },
        _ => Generation::Over,
    })
}
