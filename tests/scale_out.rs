//! Scale-out (#16): every tune is a `pgml.jobs` row first; a front-end with
//! `train_workers = 0` trains nothing and `pgmld worker` processes claim the jobs. The
//! calling session keeps today's experience: a blocking `pgml.tune` streams the notices
//! of whichever worker runs it, `pgml.cancel_job` from another session stops it, and a
//! worker killed with SIGKILL hands its job to another worker, which resumes it from its
//! checkpoint and ends exactly as the uninterrupted run.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::models::{connect_with_notices, create_table, imdb_balanced, tiny_bert};
use support::tuning::{direct, loss_rows, resumed_from, rows, tune_sql, CHECKPOINTED};
use support::{sqlstate, Pgmld, Start, TestDb, Worker};

/// What every test here starts from: a tiny model, a fresh database whose table `reviews`
/// holds `n` balanced IMDB reviews, and a front-end that trains nothing (the database
/// already migrated through it, so workers can serve its queue).
struct Setup {
    model: String,
    db: TestDb,
    front: Pgmld,
}

async fn setup(n: usize) -> Setup {
    let data = imdb_balanced(0, n);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts).display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows(&data)).await;
    let front = Pgmld::start_with(Start {
        env: vec![("PGMLD_TRAIN_WORKERS".into(), "0".into())],
        ..Start::default()
    });
    front.connect(&db.name).await.query_one("SELECT pgml.version()", &[]).await.unwrap();
    Setup { model, db, front }
}

/// A short tune: 12 optimizer steps.
const SHORT: &str = r#"{"training_args": {"max_steps": 12, "per_device_train_batch_size": 8, "logging_steps": 2, "seed": 3}, "tokenizer_args": {"max_length": 32}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_without_training_threads_runs_tunes_on_two_workers() {
    let _one_at_a_time = support::serial::model_test().await;
    let Setup { model: m, db, front } = setup(160).await;
    let admin = front.connect(&db.name).await;
    let w1 = Worker::start("cpu", &[&db.name], &[]);
    let w2 = Worker::start("cpu", &[&db.name], &[]);
    let workers: BTreeSet<i32> = [w1.pid() as i32, w2.pid() as i32].into();

    // A blocking tune through the front-end streams the worker's notices.
    let (client, notices) = connect_with_notices(&front.url(&db.name)).await;
    let row = client
        .query_one(tune_sql("first", &m, SHORT).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", front.log_text(), w1.log_text()));
    assert_eq!(row.get::<_, String>(0), "successful");
    assert_eq!(row.get::<_, String>(1), "text-classification");
    let notes = notices.lock().unwrap().clone();
    for needle in ["\"status\": \"training\"", "\"loss\"", "\"train_runtime\"", "\"eval_f1\""] {
        assert!(notes.iter().any(|n| n.contains(needle)), "no {needle} notice: {notes:#?}");
    }
    let ran_on: i32 = admin
        .query_one("SELECT worker_pid FROM pgml.jobs WHERE status = 'succeeded'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(workers.contains(&ran_on), "ran on {ran_on}, workers {workers:?}");
    assert_ne!(ran_on as u32, front.child.id(), "the front-end trains nothing");

    // Four tunes submitted with wait => false: all succeed, on both workers.
    let mut ids = Vec::new();
    for i in 0..4 {
        let sql = tune_sql(&format!("many_{i}"), &m, SHORT)
            .replace("hyperparams => '", "wait => false, hyperparams => '");
        let row = admin.query_one(sql.as_str(), &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "queued");
        let id: i64 = admin.query_one("SELECT max(id) FROM pgml.jobs", &[]).await.unwrap().get(0);
        ids.push(id);
    }
    for id in ids {
        let row = admin
            .query_one("SELECT status FROM pgml.wait_job($1)", &[&id])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", front.log_text()));
        assert_eq!(row.get::<_, String>(0), "successful");
    }
    let used: Vec<i32> = admin
        .query(
            "SELECT DISTINCT j.worker_pid FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id \
             WHERE p.name LIKE 'many_%' AND j.status = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(used.iter().copied().collect::<BTreeSet<_>>(), workers, "both workers ran jobs");
    let once: i64 = admin
        .query_one("SELECT count(*) FROM pgml.jobs WHERE attempts <> 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(once, 0, "every job ran once");

    // pgml.cancel_job from a third session stops a running job within 10 s.
    let (client, notices) = connect_with_notices(&front.url(&db.name)).await;
    let long = r#"{"training_args": {"num_train_epochs": 500, "logging_steps": 2}, "tokenizer_args": {"max_length": 32}}"#;
    let sql = tune_sql("long", &m, long);
    let tune = tokio::spawn(async move { client.query(sql.as_str(), &[]).await.map(|_| ()) });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !notices.lock().unwrap().iter().any(|n| n.contains("\"loss\"")) {
        assert!(
            Instant::now() < deadline && !tune.is_finished(),
            "no progress: {}",
            front.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job_id: i64 = admin
        .query_one("SELECT id FROM pgml.jobs WHERE status = 'running'", &[])
        .await
        .unwrap()
        .get(0);
    let third = front.connect(&db.name).await;
    let asked = Instant::now();
    let status: String =
        third.query_one("SELECT pgml.cancel_job($1)", &[&job_id]).await.unwrap().get(0);
    assert_eq!(status, "cancelling");
    let err = tokio::time::timeout(Duration::from_secs(10), tune)
        .await
        .expect("the cancelled tune returns within 10 s")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    println!("cancel_job to the caller's 57014: {:?}", asked.elapsed());
    let ended: (String, String) = admin
        .query_one(
            "SELECT j.status, m.status FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id WHERE j.id = $1",
            &[&job_id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(ended, ("cancelled".into(), "failed".into()));
    assert!(front.log_text().contains("trains nothing"), "{}", front.log_text());
}

const HP: &str = CHECKPOINTED;

const JOB: &str = "SELECT j.id, j.model_id, j.status, j.checkpoint_step, j.worker_pid, j.attempts, m.metrics \
    FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = $1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_goes_on_at_another_worker_as_the_uninterrupted_run() {
    let _one_at_a_time = support::serial::model_test().await;
    let Setup { model: m, db, front } = setup(240).await;
    let watch = direct(&db.name).await;
    let c = front.connect(&db.name).await;
    let mut w1 = Worker::start("cpu", &[&db.name], &[]);

    // The uninterrupted run, for comparison.
    c.query_one(tune_sql("straight", &m, HP).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", front.log_text(), w1.log_text()));
    let straight = watch.query_one(JOB, &[&"straight"]).await.unwrap();
    let straight_rows = loss_rows(&watch, straight.get(1)).await;

    // The same tune, its worker killed after a checkpoint; a second worker takes it over.
    let sql = tune_sql("killed", &m, HP);
    let tune = tokio::spawn(async move { c.query_one(sql.as_str(), &[]).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(r) = watch.query_opt(JOB, &[&"killed"]).await.unwrap() {
            if r.get::<_, Option<i64>>(3).is_some_and(|s| s >= 20) {
                assert_eq!(r.get::<_, i32>(4) as u32, w1.pid());
                break;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint: {}", w1.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w1.child.kill().unwrap();
    w1.child.wait().unwrap();
    let w2 = Worker::start("cpu", &[&db.name], &[]);
    let row = tokio::time::timeout(Duration::from_secs(120), tune)
        .await
        .expect("the tune ends on the second worker")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", w2.log_text()));
    assert_eq!(row.get::<_, String>(0), "successful");
    let killed = watch.query_one(JOB, &[&"killed"]).await.unwrap();
    assert_eq!(killed.get::<_, String>(2), "succeeded");
    assert_eq!(killed.get::<_, i32>(4) as u32, w2.pid(), "finished by the second worker");
    assert_eq!(killed.get::<_, i32>(5), 2, "two attempts");
    assert!(w2.log_text().contains("resuming an interrupted pgml.tune job"), "{}", w2.log_text());
    let (a, b): (serde_json::Value, serde_json::Value) = (killed.get(6), straight.get(6));
    for key in ["train_loss", "eval_loss", "eval_accuracy", "eval_f1"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!((x - y).abs() < 1e-6, "{key}: taken over {x} vs uninterrupted {y}\n{a}\n{b}");
    }
    assert_eq!(loss_rows(&watch, killed.get(1)).await, straight_rows, "every logged loss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_tunes_are_waited_for_later_and_a_job_no_worker_can_run_says_why() {
    let _one_at_a_time = support::serial::model_test().await;
    let Setup { model: m, db, front } = setup(160).await;
    let (c, notices) = connect_with_notices(&front.url(&db.name)).await;
    let w1 = Worker::start("cpu", &[&db.name], &[]);
    let queued = |project: &str, hp: &str| {
        tune_sql(project, &m, hp).replace("hyperparams => '", "wait => false, hyperparams => '")
    };

    // wait => false returns at once with status queued; the notice names the job.
    let row = c.query_one(queued("later", SHORT).as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "queued");
    assert_eq!(row.get::<_, String>(1), "text-classification");
    assert!(!row.get::<_, bool>(3));
    let job_id: i64 = c
        .query_one(
            "SELECT j.id FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = 'later'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let said = notices.lock().unwrap().clone();
    assert!(
        said.iter().any(|n| n.contains(&format!("pgml.wait_job({job_id})"))),
        "the notice names the job: {said:#?}"
    );
    // pgml.wait_job attaches: the tune's row (again at once once it ended).
    for _ in 0..2 {
        let row = c
            .query_one("SELECT status, task, deployed FROM pgml.wait_job($1)", &[&job_id])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", w1.log_text()));
        assert_eq!(row.get::<_, String>(0), "successful");
        assert!(row.get::<_, bool>(2), "the first model deploys");
    }
    support::expect_err(&c, "SELECT * FROM pgml.wait_job(424242)", "22023", "does not exist").await;
    support::expect_err(&c, "SELECT * FROM pgml.wait_job(NULL)", "22004", "job_id").await;

    // pgml.workers lists the live worker and its device.
    let workers = c
        .query("SELECT pid, devices FROM pgml.workers WHERE heartbeat_at > now() - interval '10 seconds'", &[])
        .await
        .unwrap();
    let listed: Vec<(i32, Vec<String>)> = workers.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(listed, vec![(w1.pid() as i32, vec!["cpu".to_string()])]);

    // A job asking for a GPU, where no worker has one: queued, and the caller is told why.
    notices.lock().unwrap().clear();
    let gpu = SHORT.replacen('{', r#"{"device": "cuda", "#, 1);
    let row = c.query_one(queued("gpu", &gpu).as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "queued");
    let said = notices.lock().unwrap().clone();
    assert!(
        said.iter().any(
            |n| n.starts_with("NOTICE") && n.contains("no live pgmld worker has a CUDA device")
        ),
        "{said:#?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (gpu_job, status): (i64, String) = c
        .query_one(
            "SELECT j.id, j.status FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = 'gpu'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(status, "queued", "the CPU worker leaves it");
    let cancelled: String =
        c.query_one("SELECT pgml.cancel_job($1)", &[&gpu_job]).await.unwrap().get(0);
    assert_eq!(cancelled, "cancelled");
    let err = c.query_one("SELECT * FROM pgml.wait_job($1)", &[&gpu_job]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let bad = SHORT.replacen('{', r#"{"device": "tpu", "#, 1);
    support::expect_err(&c, &queued("bad", &bad), "22023", "\"tpu\"").await;
    let bad = SHORT.replacen('{', r#"{"priority": "high", "#, 1);
    support::expect_err(&c, &queued("bad", &bad), "22023", "priority").await;
    let bad = SHORT.replacen("\"max_steps\"", r#""world_size": 0, "max_steps""#, 1);
    support::expect_err(
        &c,
        &queued("bad", &bad),
        "22023",
        "world_size must be between 1 and 256, got 0",
    )
    .await;
    // A value of the wrong type is named by its key, not only by the type serde expected.
    let bad = SHORT.replacen("\"max_steps\"", r#""learning_rate": "fast", "max_steps""#, 1);
    support::expect_err(
        &c,
        &queued("bad", &bad),
        "22023",
        "learning_rate: invalid type: string \"fast\", expected f64",
    )
    .await;

    // Ctrl-C on pgml.wait_job stops the wait; the job goes on until pgml.cancel_job.
    let long = r#"{"training_args": {"num_train_epochs": 500, "logging_steps": 2}, "tokenizer_args": {"max_length": 32}}"#;
    c.query_one(queued("long", long).as_str(), &[]).await.unwrap();
    let long_job: i64 = c
        .query_one(
            "SELECT j.id FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = 'long'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (waiter, wait_notices) = connect_with_notices(&front.url(&db.name)).await;
    let cancel = waiter.cancel_token();
    let wait = tokio::spawn(async move {
        waiter.query_one("SELECT * FROM pgml.wait_job($1)", &[&long_job]).await
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !wait_notices.lock().unwrap().iter().any(|n| n.contains("\"loss\"")) {
        assert!(
            Instant::now() < deadline && !wait.is_finished(),
            "no relayed progress: {}",
            w1.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = wait.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(
        err.to_string().contains("which goes on") || format!("{err:?}").contains("which goes on"),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status: String = c
        .query_one("SELECT status FROM pgml.jobs WHERE id = $1", &[&long_job])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "running", "the job goes on");
    let cancelled: String =
        c.query_one("SELECT pgml.cancel_job($1)", &[&long_job]).await.unwrap().get(0);
    assert_eq!(cancelled, "cancelling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_releases_its_job_after_a_checkpoint() {
    let _one_at_a_time = support::serial::model_test().await;
    let Setup { model: m, db, front } = setup(240).await;
    let watch = direct(&db.name).await;
    let c = front.connect(&db.name).await;
    let mut w1 = Worker::start("cpu", &[&db.name], &[]);
    // 600 steps, a checkpoint every 10: the drain ends within a few steps.
    let hp = HP.replace("\"max_steps\": 60", "\"max_steps\": 600");
    let sql = tune_sql("drained", &m, &hp);
    let tune = tokio::spawn(async move { c.query_one(sql.as_str(), &[]).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = watch.query_opt(JOB, &[&"drained"]).await.unwrap();
        if row.is_some_and(|r| r.get::<_, Option<i64>>(3).is_some_and(|s| s >= 20)) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint: {}", w1.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &w1.pid().to_string()]).status().unwrap();
    let exit = w1.child.wait().unwrap();
    assert!(exit.success(), "a drained worker exits cleanly: {exit:?}\n{}", w1.log_text());
    println!("SIGTERM to exit: {:?}", stopped.elapsed());
    let r = watch.query_one(JOB, &[&"drained"]).await.unwrap();
    assert_eq!(r.get::<_, String>(2), "queued", "released to the queue: {}", w1.log_text());
    assert!(w1.log_text().contains("releasing the job"), "{}", w1.log_text());
    let at = r.get::<_, Option<i64>>(3).unwrap();
    let w2 = Worker::start("cpu", &[&db.name], &[]);
    let row = tokio::time::timeout(Duration::from_secs(180), tune)
        .await
        .expect("the tune ends on the second worker")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", w2.log_text()));
    assert_eq!(row.get::<_, String>(0), "successful");
    let r = watch.query_one(JOB, &[&"drained"]).await.unwrap();
    assert_eq!((r.get::<_, i32>(4) as u32, r.get::<_, i32>(5)), (w2.pid(), 2));
    let from = resumed_from(&watch, r.get(1)).await;
    assert_eq!(from, at, "the second worker went on from the released checkpoint");
}
