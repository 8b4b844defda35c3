//! `pgml.workers`: the pgmld processes that serve a database's queue, with their devices
//! and a heartbeat, so that a job no live worker can run is reported when it is queued
//! instead of waiting in silence.

use std::time::Duration;

use tokio_postgres::Client;

use crate::device::DeviceKind;
use crate::error::{pg, Result};
use crate::queue::Worker;

/// How recent a worker's heartbeat must be for it to count as live: a few of its beats
/// (every 2 s, with each sweep).
pub const LIVE: Duration = Duration::from_secs(10);

/// Rows of workers silent for longer than this are removed (they died without leaving).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Records (or refreshes) `worker` with its devices (`cpu`, `cuda:0`) and their kinds.
pub async fn beat(
    client: &Client,
    worker: &Worker,
    devices: &[String],
    kinds: &[DeviceKind],
) -> Result<()> {
    let mut kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    kind_names.sort_unstable();
    kind_names.dedup();
    client
        .execute(
            "INSERT INTO pgml.workers (name, host, pid, devices, device_kinds) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET devices = EXCLUDED.devices, device_kinds = EXCLUDED.device_kinds, \
             heartbeat_at = clock_timestamp()",
            &[&worker.name(), &worker.host, &(worker.pid as i32), &devices, &kind_names],
        )
        .await
        .map_err(pg("recording the worker"))?;
    client
        .execute(
            "DELETE FROM pgml.workers WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1)",
            &[&FORGET_AFTER.as_secs_f64()],
        )
        .await
        .map_err(pg("forgetting silent workers"))?;
    Ok(())
}

/// Removes `worker` (it stops serving the queue).
pub async fn leave(client: &Client, worker: &Worker) -> Result<()> {
    client
        .execute("DELETE FROM pgml.workers WHERE name = $1", &[&worker.name()])
        .await
        .map_err(pg("removing the worker"))?;
    Ok(())
}

/// The live workers of the database: (name, devices), by name.
pub async fn live(client: &Client) -> Result<Vec<(String, Vec<String>)>> {
    let rows = client
        .query(
            "SELECT name, devices FROM pgml.workers \
             WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1) ORDER BY name",
            &[&LIVE.as_secs_f64()],
        )
        .await
        .map_err(pg("reading the workers"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Whether a live worker has a device that may run a job asking for `wanted`.
pub async fn can_run(client: &Client, wanted: DeviceKind) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pgml.workers \
             WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1) \
             AND ($2 = 'any' OR $2 = ANY(device_kinds)))",
            &[&LIVE.as_secs_f64(), &wanted.name()],
        )
        .await
        .map_err(pg("reading the workers"))?;
    Ok(row.get(0))
}
