//! Data-parallel jobs (`"training_args": {"world_size": N}`): one tune trained by several
//! workers at once over a c10d process group ([`pgmld_train::train_data_parallel`]): Gloo
//! on CPUs, NCCL on CUDA devices (from the plugin `libpgmld_nccl.so`, [`configure_nccl`]).
//!
//! The worker that claims the job is rank 0 ([`Tuner::rendezvous`]): it serves a c10d
//! TCPStore on a free port, publishes its address in the job row (a new `generation`) and
//! waits up to `rendezvous_timeout_secs` for N-1 other workers to join
//! ([`pgmld_jobs::ranks`]), then closes the rendezvous with the ranks that came. Joining
//! workers ([`join_for_free_slots`], [`run_rank`]) read the job's stored request, training
//! rows and checkpoint as any claim does, meet rank 0 in the store and train their part of
//! each global batch; rank 0 alone reports, evaluates, checkpoints and records. The global
//! batch is `per_device_train_batch_size` × N whatever the number of ranks, so a job that
//! goes on with fewer ranks trains exactly as with N.
//!
//! When a rank dies, the others' next collective fails; rank 0 then puts the job back in
//! the queue ([`TuneError::RankLost`]) and the next generation resumes it from its last
//! checkpoint with the workers then available. When rank 0 dies, its lock frees the job
//! (the usual takeover) and the other ranks' collectives fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgmld_jobs::ranks::{self, Generation, Joined};
use pgmld_sql::CallContext;
use pgmld_train::{ProcessGroup, Store};
use serde_json::json;
use tch::Device;
use tokio_postgres::Client;

use crate::error::{Result, TuneError};
use crate::job::RunDirs;
use crate::tuner::{info, this_worker, warning, Tuner};
use crate::{progress, records};

/// Where the CUDA graph plugin is (`cuda_graph_plugin`), for runs with `cuda_graphs`.
pub use pgmld_train::cuda_graph::configure as configure_cuda_graphs;
/// Prepares NCCL groups (data-parallel jobs on CUDA): the plugin's path and c10d's NCCL
/// error handling, under which a lost peer fails the step instead of ending the process.
/// Call at start-up, before any other thread exists.
pub use pgmld_train::nccl::configure as configure_nccl;

/// How this process takes part in data-parallel jobs (`rendezvous_timeout_secs`,
/// `dist_host`).
#[derive(Debug, Clone)]
pub struct DistOptions {
    /// The address other workers reach this one at; `None`: the host name.
    pub host: Option<String>,
    /// How long rank 0 waits for the other ranks to join.
    pub rendezvous_timeout: Duration,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions { host: None, rendezvous_timeout: Duration::from_secs(10) }
    }
}

impl DistOptions {
    /// The address this worker publishes and binds its Gloo connections to.
    fn host(&self) -> String {
        self.host.clone().unwrap_or_else(|| this_worker().host)
    }
}

/// Bounds every collective, as PyTorch's default: a rank that dies is noticed at once (its
/// connections close), this bounds a hung one (or rank 0's evaluation between two steps).
const COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Time the ranks have to meet in the store after the rendezvous closes (a joining worker
/// reads the job's files first).
const MEET_TIMEOUT: Duration = Duration::from_secs(120);

/// After this many generations a job trains on rank 0 alone instead of opening another
/// rendezvous, so that a group that can never form (an unreachable `dist_host`) cannot
/// requeue it forever.
const MAX_GENERATIONS: i32 = 20;

/// How one rank meets the others on its training thread ([`GroupSpec::join`]).
pub struct GroupSpec {
    /// Rank 0 serves the store; the others connect to its address.
    store: StoreSpec,
    rank: usize,
    world: usize,
    bind_host: String,
}

enum StoreSpec {
    Served(Store),
    At { host: String, port: u16 },
}

/// The store's key prefix (each generation has a store of its own).
const PREFIX: &str = "pgmld/";

impl GroupSpec {
    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Meets the other ranks (blocks: on the training thread, whose `device` picks the
    /// backend: NCCL on CUDA, Gloo on the CPU). The store is returned with the group: rank
    /// 0's serves the others for as long as it lives.
    pub fn join(self, device: Device) -> Result<(Store, ProcessGroup)> {
        fn failed(e: impl std::fmt::Display) -> TuneError {
            TuneError::RankLost(format!("the ranks could not meet: {e}"))
        }
        let store = match self.store {
            StoreSpec::Served(s) => s,
            StoreSpec::At { host, port } => {
                Store::connect(&host, port, self.world, MEET_TIMEOUT, PREFIX).map_err(failed)?
            }
        };
        let group = match device {
            Device::Cuda(index) => {
                ProcessGroup::nccl(&store, self.rank, self.world, index, COLLECTIVE_TIMEOUT)
            }
            _ => ProcessGroup::gloo(
                &store,
                self.rank,
                self.world,
                &self.bind_host,
                COLLECTIVE_TIMEOUT,
            ),
        }
        .map_err(failed)?;
        Ok((store, group))
    }
}

/// What a training thread does with its run's group (`None`: one process): meets the other
/// ranks. When they cannot meet, rank 0 trains alone (the same global batch gives the same
/// result) after a warning on `tx`; another rank fails.
pub fn join_group(
    spec: Option<GroupSpec>,
    device: Device,
    tx: &tokio::sync::mpsc::UnboundedSender<crate::job::Progress>,
) -> Result<Option<(Store, ProcessGroup)>> {
    let Some(spec) = spec else { return Ok(None) };
    let rank = spec.rank;
    match spec.join(device) {
        Ok(g) => Ok(Some(g)),
        Err(e) if rank == 0 => {
            let message = format!("{e}: training on this worker alone");
            let _ = tx.send(crate::job::Progress::Warning { message });
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `host:port` split at its last colon.
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
}

impl Tuner {
    /// Rank 0 of data-parallel job `job_id` (whose lock `client` holds): opens a
    /// rendezvous, waits for up to `world_size` - 1 ranks to join (or the rendezvous
    /// timeout), closes it. `None`: no other rank came, the job trains on this worker alone
    /// (with the same global batch).
    pub(crate) async fn rendezvous(
        &self,
        client: &mut Client,
        ctx: &CallContext,
        (project_id, model_id, job_id): (i64, i64, i64),
        world_size: usize,
    ) -> Result<Option<GroupSpec>> {
        let host = self.dist.host();
        let timeout = self.dist.rendezvous_timeout;
        let store =
            Store::serve(&host, 0, world_size, timeout + MEET_TIMEOUT, PREFIX).map_err(|e| {
                TuneError::Internal(format!(
                    "serving the data-parallel rendezvous at {host} (dist_host): {e}"
                ))
            })?;
        let address = format!("{host}:{}", store.port());
        let Some(generation) = ranks::publish(client, job_id, &address).await? else {
            return Err(TuneError::Internal(format!("job {job_id} is no longer running")));
        };
        if generation > MAX_GENERATIONS {
            warning(
                ctx,
                format!(
                    "job {job_id} lost a rank {} times: it goes on on this worker alone (the same global batch)",
                    generation - 1
                ),
            );
            ranks::close(client, job_id, generation).await?;
            return Ok(None);
        }
        let logs = json!({"status": "rendezvous", "model_id": model_id, "world_size": world_size, "generation": generation, "address": address, "timeout_seconds": timeout.as_secs_f64()});
        info(ctx, progress::notice_text(&logs));
        records::log(client, model_id, project_id, &logs).await?;
        let deadline = Instant::now() + timeout;
        let mut beat = Instant::now();
        loop {
            let joined = ranks::joined(client, job_id, generation).await?;
            if joined + 1 >= world_size || Instant::now() >= deadline {
                break;
            }
            if beat.elapsed() >= Duration::from_secs(2) {
                beat = Instant::now();
                crate::lifecycle::heartbeat(client, ctx, (model_id, job_id), None, None).await;
            }
            if ctx.cancelled.load(Ordering::Relaxed) {
                ranks::close(client, job_id, generation).await?;
                return Err(TuneError::Cancelled);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = ranks::close(client, job_id, generation).await?;
        let logs = json!({"status": "ranks", "model_id": model_id, "ranks": n, "world_size": world_size, "generation": generation});
        info(ctx, progress::notice_text(&logs));
        records::log(client, model_id, project_id, &logs).await?;
        if n == 1 {
            return Ok(None);
        }
        Ok(Some(GroupSpec { store: StoreSpec::Served(store), rank: 0, world: n, bind_host: host }))
    }
}

/// Joins open rendezvous of `db` with the free slots, each rank on a connection of its own.
pub(crate) async fn join_for_free_slots(tuner: &Arc<Tuner>, db: &str) {
    for kind in tuner.jobs.free_kinds() {
        let Ok(shared) = tuner.connector.shared(db).await else { return };
        if !ranks::open_exists(&shared, kind).await.unwrap_or(false) {
            continue;
        }
        let Some((slot, kind, label)) = tuner.jobs.take_slot(kind) else { continue };
        let joined = match tuner.connector.connect(db).await {
            Ok(mut client) => match ranks::join(&mut client, &this_worker(), kind, &label).await {
                Ok(Some(j)) => Some((client, j)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(database = db, "joining a data-parallel job: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(database = db, "joining a data-parallel job: {e}");
                None
            }
        };
        let Some((client, joined)) = joined else {
            tuner.jobs.free_slot(slot);
            continue;
        };
        tracing::info!(
            database = db,
            job_id = joined.job.job_id,
            generation = joined.generation,
            rank = joined.rank,
            slot,
            "joined a data-parallel pgml.tune job"
        );
        let (tuner, db) = (tuner.clone(), db.to_string());
        tokio::spawn(async move {
            let (job_id, rank) = (joined.job.job_id, joined.rank);
            match run_rank(&tuner, client, &db, joined, slot).await {
                Ok(()) => tracing::info!(database = %db, job_id, rank, "data-parallel rank done"),
                Err(e) => {
                    tracing::info!(database = %db, job_id, rank, "data-parallel rank ended: {e}")
                }
            }
            tuner.jobs.free_slot(slot);
        });
    }
}

/// Runs rank `joined.rank` of a data-parallel job on `slot`: reads what the job trains on
/// (as the job's owner), waits for the rendezvous to close, then trains its part of each
/// step until the job ends, is cancelled, or moves to another generation.
pub(crate) async fn run_rank(
    tuner: &Arc<Tuner>,
    client: Client,
    db: &str,
    joined: Joined,
    slot: usize,
) -> Result<()> {
    let Joined { job, generation, rank, address } = joined;
    let job_id = job.job_id;
    let model_id =
        job.model_id.ok_or_else(|| TuneError::Internal(format!("job {job_id} has no model")))?;
    let (host, port) = split_address(&address)
        .ok_or_else(|| TuneError::Internal(format!("job {job_id}: bad rendezvous {address:?}")))?;
    let mut ctx = CallContext::detached(db, &job.owner);
    ctx.caller = pgmld_models::access::caller_of(&client, &job.owner).await?;
    let tag = format!("{}-model-{model_id}-rank-{rank}", db.replace('/', "_"));
    let from = tuner.work_dir.join(format!("resume-{tag}"));
    let out = tuner.work_dir.join(format!("out-{tag}"));
    let result = async {
        let prepared = tuner.prepare_job(&client, &job, model_id, None, &from, &ctx.caller).await?;
        let world = loop {
            match ranks::generation(&client, job_id, generation).await? {
                Generation::Open => tokio::time::sleep(Duration::from_millis(100)).await,
                Generation::Closed(n) if rank < n => break n,
                _ => return Ok(()),
            }
        };
        let dirs = RunDirs {
            out_dir: out.clone(),
            checkpoint_dir: None,
            resume_dir: None,
            resume_from: prepared.steps.map(|_| from.clone()),
        };
        let bind_host = tuner.dist.host();
        let spec = GroupSpec { store: StoreSpec::At { host, port }, rank, world, bind_host };
        let work = prepared.data.work(&prepared.req, &prepared.source.dir, dirs).with_group(spec);
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = cancel.clone();
        let mut result = tuner.pool.submit_on(slot, move |device| work.run(device, stop, tx));
        // Rank 0 reports; this rank only stops when the job or its generation is over.
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        let outcome = loop {
            tokio::select! {
                r = &mut result => break r,
                _ = rx.recv() => {}
                _ = watch.tick() => {
                    if !matches!(ranks::generation(&client, job_id, generation).await, Ok(Generation::Closed(_))) {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        drop(prepared.source);
        match outcome {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(TuneError::Internal("the training worker stopped without a result".into())),
        }
    }
    .await;
    let _ = std::fs::remove_dir_all(&from);
    let _ = std::fs::remove_dir_all(&out);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_at_the_last_colon() {
        assert_eq!(split_address("vm:4242"), Some(("vm".into(), 4242)));
        assert_eq!(split_address("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_address("vm"), None);
        assert_eq!(split_address("vm:port"), None);
    }
}
