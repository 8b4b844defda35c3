//! The job queue of pgml.jobs (`crates/pgmld-jobs`, issue #16) against the real Postgres,
//! in a fresh database migrated as pgmld migrates it: claim order (priority, then age),
//! device kinds, concurrent claims that never share a job, a killed worker's job queued
//! again by the sweep, a hung worker's lease ended, and cancels.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use pgmld_jobs::lease::{heartbeat, sweep};
use pgmld_jobs::queue::{claim, request_cancel, requeue, CancelOutcome};
use pgmld_jobs::{DeviceKind, Worker};
use support::TestDb;
use tokio_postgres::{Client, NoTls};

async fn connect(db: &TestDb) -> Client {
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// A fresh database with pgmld's schema and one project.
async fn queue_db() -> (TestDb, Client) {
    let db = TestDb::create();
    let upstream = pgmld_upstream::Upstream::from_url(support::UPSTREAM).unwrap();
    pgmld_schema::Migrator::new(upstream).ensure(&db.name).await.unwrap();
    let c = connect(&db).await;
    c.batch_execute("INSERT INTO pgml.projects (name, task) VALUES ('p', 'text-classification')")
        .await
        .unwrap();
    (db, c)
}

/// Queues a tune job; returns its id.
async fn enqueue(c: &Client, priority: i32, device: &str) -> i64 {
    c.query_one(
        "INSERT INTO pgml.jobs (project_id, kind, priority, device) \
         SELECT id, 'tune', $1, $2 FROM pgml.projects WHERE name = 'p' RETURNING id",
        &[&priority, &device],
    )
    .await
    .unwrap()
    .get(0)
}

async fn status(c: &Client, job: i64) -> (String, i32, Option<String>) {
    let r = c
        .query_one("SELECT status, attempts, worker FROM pgml.jobs WHERE id = $1", &[&job])
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn worker(pid: u32) -> Worker {
    Worker { host: "test-host".into(), pid }
}

#[tokio::test]
async fn claims_follow_priority_then_age_and_the_device_kind() {
    let (db, c) = queue_db().await;
    let j1 = enqueue(&c, 0, "any").await;
    let j2 = enqueue(&c, 5, "cuda").await;
    let j3 = enqueue(&c, 5, "cpu").await;
    let j4 = enqueue(&c, 0, "cpu").await;
    let j5 = enqueue(&c, 5, "any").await;

    let mut cpu = connect(&db).await;
    let mut got = Vec::new();
    while let Some(job) = claim(&mut cpu, &worker(1), DeviceKind::Cpu, "cpu").await.unwrap() {
        assert_eq!(job.attempts, 1);
        assert_eq!(job.kind, "tune");
        got.push(job.job_id);
    }
    // Priority 5 first (oldest first within it), then priority 0; never the cuda job.
    assert_eq!(got, [j3, j5, j1, j4]);
    let mut gpu = connect(&db).await;
    let job = claim(&mut gpu, &worker(2), DeviceKind::Cuda, "cuda:0").await.unwrap().unwrap();
    assert_eq!(job.job_id, j2);
    assert!(claim(&mut gpu, &worker(2), DeviceKind::Cuda, "cuda:0").await.unwrap().is_none());

    let r = c
        .query_one(
            "SELECT status, worker, worker_host, worker_pid, worker_device, started_at IS NOT NULL, \
             heartbeat_at IS NOT NULL FROM pgml.jobs WHERE id = $1",
            &[&j2],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "running");
    assert_eq!(r.get::<_, String>(1), "pgmld-2@test-host");
    assert_eq!(r.get::<_, String>(2), "test-host");
    assert_eq!(r.get::<_, i32>(3), 2);
    assert_eq!(r.get::<_, String>(4), "cuda:0");
    assert!(r.get::<_, bool>(5) && r.get::<_, bool>(6));
    // A bad device kind never reaches the table.
    let e = c
        .execute(
            "INSERT INTO pgml.jobs (project_id, kind, device) SELECT id, 'tune', 'tpu' FROM pgml.projects",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(support::sqlstate(&e), "23514");
}

#[tokio::test]
async fn concurrent_workers_never_get_the_same_job() {
    let (db, c) = queue_db().await;
    let mut all = HashSet::new();
    for i in 0..60 {
        all.insert(enqueue(&c, i % 3, "any").await);
    }
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let mut client = connect(&db).await;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) =
                claim(&mut client, &worker(w), DeviceKind::Cpu, "cpu").await.unwrap()
            {
                mine.push(job.job_id);
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut per_worker = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_worker.push(mine.len());
        for id in mine {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(seen, all, "every job claimed once");
    eprintln!("jobs per worker: {per_worker:?}");
    let running: i64 = c
        .query_one("SELECT count(*) FROM pgml.jobs WHERE status = 'running' AND attempts = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 60);
}

#[tokio::test]
async fn a_dead_workers_job_goes_back_to_the_queue_and_is_taken_over() {
    let (db, c) = queue_db().await;
    let job = enqueue(&c, 0, "any").await;
    let mut first = connect(&db).await;
    assert_eq!(
        claim(&mut first, &worker(1), DeviceKind::Cpu, "cpu").await.unwrap().unwrap().job_id,
        job
    );

    // While its worker's connection lives, the sweep leaves the job alone.
    let swept = sweep(&c, Duration::from_secs(60)).await.unwrap();
    assert!(swept.requeued.is_empty() && swept.expired.is_empty(), "{swept:?}");
    assert_eq!(status(&c, job).await.0, "running");

    // The worker dies: its connection, and with it the lock, goes away.
    drop(first);
    let mut swept = sweep(&c, Duration::from_secs(60)).await.unwrap();
    for _ in 0..50 {
        if !swept.requeued.is_empty() {
            break;
        }
        // The backend may take a moment to notice the closed socket.
        tokio::time::sleep(Duration::from_millis(100)).await;
        swept = sweep(&c, Duration::from_secs(60)).await.unwrap();
    }
    assert_eq!(swept.requeued, [job]);
    assert_eq!(status(&c, job).await, ("queued".into(), 1, None));

    let mut second = connect(&db).await;
    let taken = claim(&mut second, &worker(2), DeviceKind::Cpu, "cpu").await.unwrap().unwrap();
    assert_eq!((taken.job_id, taken.attempts), (job, 2), "a takeover counts a second attempt");

    // A draining worker puts its job back itself; the next claim gets it at once.
    requeue(&second, job).await.unwrap();
    assert_eq!(status(&c, job).await.0, "queued");
    let mut third = connect(&db).await;
    let again = claim(&mut third, &worker(3), DeviceKind::Cpu, "cpu").await.unwrap().unwrap();
    assert_eq!((again.job_id, again.attempts), (job, 3));
}

#[tokio::test]
async fn a_hung_workers_lease_expires() {
    let (db, c) = queue_db().await;
    let job = enqueue(&c, 0, "any").await;
    let mut hung = connect(&db).await;
    claim(&mut hung, &worker(1), DeviceKind::Cpu, "cpu").await.unwrap().unwrap();
    assert!(!heartbeat(&hung, job, Some(0.25), Some(90.0)).await.unwrap());
    // A fresh heartbeat: within the lease.
    assert!(sweep(&c, Duration::from_secs(30)).await.unwrap().expired.is_empty());
    // No heartbeat for an hour: the lease is over and the hung connection is ended.
    c.execute(
        "UPDATE pgml.jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = $1",
        &[&job],
    )
    .await
    .unwrap();
    let swept = sweep(&c, Duration::from_secs(30)).await.unwrap();
    assert_eq!(swept.expired, [job]);
    assert!(hung.simple_query("SELECT 1").await.is_err(), "the hung worker's connection ended");
    let mut requeued = Vec::new();
    for _ in 0..50 {
        requeued = sweep(&c, Duration::from_secs(30)).await.unwrap().requeued;
        if !requeued.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(requeued, [job]);
    let r = c
        .query_one("SELECT status, progress, eta_seconds FROM pgml.jobs WHERE id = $1", &[&job])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "queued");
    assert_eq!(r.get::<_, Option<f32>>(1), Some(0.25), "progress stays for the next worker");
    assert_eq!(r.get::<_, Option<f32>>(2), None);
}

#[tokio::test]
async fn cancels_end_queued_jobs_at_once_and_reach_running_ones() {
    let (db, c) = queue_db().await;
    let queued = enqueue(&c, 0, "any").await;
    let running = enqueue(&c, 0, "any").await;
    let mut w = connect(&db).await;
    // Claim both, then put the first back: one queued job, one running.
    let first = claim(&mut w, &worker(1), DeviceKind::Cpu, "cpu").await.unwrap().unwrap();
    assert_eq!(first.job_id, queued);
    let second = claim(&mut w, &worker(1), DeviceKind::Cpu, "cpu").await.unwrap().unwrap();
    assert_eq!(second.job_id, running);
    requeue(&w, queued).await.unwrap();
    // The queued job's model, still in progress, ends with it.
    let model: i64 = c
        .query_one(
            "WITH m AS (INSERT INTO pgml.models (project_id, algorithm) \
             SELECT project_id, 'transformers' FROM pgml.jobs WHERE id = $1 RETURNING id) \
             UPDATE pgml.jobs SET model_id = (SELECT id FROM m) WHERE id = $1 RETURNING model_id",
            &[&queued],
        )
        .await
        .unwrap()
        .get(0);

    assert_eq!(request_cancel(&c, queued).await.unwrap(), CancelOutcome::Cancelled);
    let r = c
        .query_one(
            "SELECT j.status, j.error, j.finished_at IS NOT NULL, m.status, m.error \
             FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id WHERE j.id = $1",
            &[&queued],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, bool>(2)),
        ("cancelled".into(), "cancelled".into(), true)
    );
    assert_eq!(
        (r.get::<_, String>(3), r.get::<_, String>(4)),
        ("failed".into(), "cancelled".into()),
        "model {model} ends with its job, in the same statement"
    );
    assert!(
        claim(&mut w, &worker(1), DeviceKind::Cpu, "cpu").await.unwrap().is_none(),
        "a cancelled job is never claimed"
    );

    assert!(!heartbeat(&w, running, None, None).await.unwrap());
    assert_eq!(request_cancel(&c, running).await.unwrap(), CancelOutcome::Requested);
    assert_eq!(status(&c, running).await.0, "running", "its worker ends it");
    assert!(heartbeat(&w, running, None, None).await.unwrap(), "the worker's poll sees the cancel");
    assert_eq!(request_cancel(&c, queued).await.unwrap(), CancelOutcome::NotActive);
    assert_eq!(request_cancel(&c, 999_999).await.unwrap(), CancelOutcome::NotActive);
}
