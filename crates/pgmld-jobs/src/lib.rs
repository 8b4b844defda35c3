//! The job queue every pgmld on one upstream shares, kept in each database's `pgml.jobs`
//! (see `migrations/0008_job_queue.sql`), built on what Postgres already does well, as
//! pgmq, graphile-worker and Oban are:
//!
//! - **Claim** ([`queue::claim`]): the first queued job by priority, then age, among those
//!   the worker's device can run, picked with `FOR UPDATE SKIP LOCKED` so that concurrent
//!   workers never wait on each other nor take the same row.
//! - **Lease** ([`lease`]): the claiming connection holds the job's session-level advisory
//!   lock for as long as it runs the job and beats `heartbeat_at`; the lock goes away with
//!   the connection, so a killed worker releases its job at once. A sweep puts a job whose
//!   lock is free back in the queue (its next worker resumes it from the last checkpoint)
//!   and ends the connection of a worker whose heartbeat is older than the lease.
//! - **Cancel** ([`queue::request_cancel`]): a queued job is cancelled at once; a running
//!   one is marked, and its worker stops it at its next poll.
//! - **Workers** ([`registry`]): each pgmld that serves the queue records its devices and
//!   a heartbeat in `pgml.workers`, so a job no live worker can run is reported.
//! - **Data-parallel jobs** ([`ranks`]): the worker that claims a job with `world_size` > 1
//!   publishes its c10d store in the job row and other workers join it as ranks.
//! - **Channels** ([`notify`]): NOTIFY wakes idle workers when a job is queued, carries a
//!   job's progress to whichever session waits for it, and a cancel to its worker.

#![warn(missing_docs)]

pub mod device;
pub mod error;
pub mod lease;
pub mod notify;
pub mod queue;
pub mod ranks;
pub mod registry;

pub use device::DeviceKind;
pub use error::{JobError, Result};
pub use queue::{Claimed, Worker, JOB_LOCK_CLASS};
