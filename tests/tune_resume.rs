//! Resumable `pgml.tune`: checkpoints in pgml.files, a pgmld killed with SIGKILL and
//! restarted resumes the job on its own and ends as the uninterrupted run does (CPU resume
//! is bitwise), and `resume_from_checkpoint` after a client-side cancel.

mod support;

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use support::models::{create_table, imdb_balanced, tiny_bert};
use support::tuning::{direct, loss_rows, rows, tune_sql, CHECKPOINTED};
use support::{expect_err, sqlstate, Pgmld, Start, TestDb};

/// A pgmld starting up resumes orphaned jobs of every database: the tests of this file
/// run one at a time so one's restart never picks up the other's job.
static SERIAL: Mutex<()> = Mutex::const_new(());

const HP: &str = CHECKPOINTED;
const MAX_STEPS: i64 = 60;

const JOB: &str = "SELECT j.status, j.checkpoint_step, m.status, m.id, j.id FROM pgml.jobs j \
    JOIN pgml.models m ON m.id = j.model_id JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = $1";

/// Waits until the project's job has stored a checkpoint of at least `step`.
async fn wait_for_checkpoint(
    c: &tokio_postgres::Client,
    project: &str,
    step: i64,
    p: &Pgmld,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(r) = c.query_opt(JOB, &[&project]).await.unwrap() {
            let at: Option<i64> = r.get(1);
            if at.is_some_and(|s| s >= step) {
                return at.unwrap();
            }
            let status: String = r.get(0);
            assert!(
                status == "queued" || status == "running",
                "the job ended ({status}) before a checkpoint of step {step}: {}",
                p.log_text()
            );
        }
        assert!(Instant::now() < deadline, "no checkpoint of step {step}: {}", p.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(c: &tokio_postgres::Client, model_id: i64) -> serde_json::Value {
    c.query_one("SELECT metrics FROM pgml.models WHERE id = $1", &[&model_id]).await.unwrap().get(0)
}

/// Every logged step once, in order, ending at the last step.
fn assert_steps(rows: &[(i64, f64)]) {
    let steps: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let expected: Vec<i64> = (1..=MAX_STEPS / 2).map(|i| i * 2).collect();
    assert_eq!(steps, expected, "log steps");
}

/// The resumed model's results are the uninterrupted run's.
fn assert_same_run(
    resumed: &serde_json::Value,
    straight: &serde_json::Value,
    r_rows: &[(i64, f64)],
    s_rows: &[(i64, f64)],
) {
    for key in ["train_loss", "eval_loss", "eval_accuracy", "eval_f1"] {
        let (a, b) = (resumed[key].as_f64().unwrap(), straight[key].as_f64().unwrap());
        assert!(
            (a - b).abs() < 1e-6,
            "{key}: resumed {a} vs uninterrupted {b}\n{resumed}\n{straight}"
        );
    }
    assert_eq!(r_rows.last(), s_rows.last(), "final log row");
    assert_eq!(r_rows, s_rows, "every logged loss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pgmld_resumes_on_restart_and_ends_as_the_uninterrupted_run() {
    let _one_at_a_time = support::serial::model_test().await;
    let _serial = SERIAL.lock().await;
    let data = imdb_balanced(0, 240);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows(&data)).await;
    let watch = direct(&db.name).await;

    // The uninterrupted run, for comparison.
    let p1 = Pgmld::start();
    let c = p1.connect(&db.name).await;
    let t = Instant::now();
    let row = c
        .query_one(tune_sql("straight", &m, HP).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p1.log_text()));
    let straight_secs = t.elapsed();
    println!("uninterrupted tune: {straight_secs:?}");
    assert_eq!(row.get::<_, String>(0), "successful");
    let straight_id: i64 = watch.query_one(JOB, &[&"straight"]).await.unwrap().get(3);
    let no_ck: i64 = watch
        .query_one("SELECT count(*) FROM pgml.files WHERE starts_with(path, 'checkpoint/')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(no_ck, 0, "a finished model keeps no checkpoint");

    // The same tune, killed with SIGKILL after a checkpoint.
    let sql = tune_sql("killed", &m, HP);
    let tune = tokio::spawn(async move { c.query_one(sql.as_str(), &[]).await.map(|_| ()) });
    let at = wait_for_checkpoint(&watch, "killed", 20, &p1).await;
    p1.signal("KILL");
    let killed_at = Instant::now();
    let err = tune.await.unwrap().unwrap_err();
    println!("killed after the checkpoint of step {at}: {err}");
    let r = watch.query_one(JOB, &[&"killed"]).await.unwrap();
    let (killed_id, job_id): (i64, i64) = (r.get(3), r.get(4));
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(2)),
        ("running".into(), "in_progress".into())
    );
    let at: i64 = r.get::<_, Option<i64>>(1).unwrap();
    assert!(at < MAX_STEPS);
    let names: Vec<String> = watch
        .query("SELECT DISTINCT path FROM pgml.files WHERE model_id = $1 ORDER BY 1", &[&killed_id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        [
            "checkpoint/dataset.jsonl",
            "checkpoint/model.safetensors",
            "checkpoint/optimizer.safetensors",
            "checkpoint/trainer_state.json",
            "checkpoint/training_args.json"
        ]
    );
    let request: serde_json::Value = watch
        .query_one("SELECT request FROM pgml.jobs WHERE id = $1", &[&job_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (request["relation_name"].as_str(), request["project_name"].as_str()),
        (Some("reviews"), Some("killed")),
        "{request}"
    );
    // The resume trains on the stored rows, not on what the relation holds now.
    watch.batch_execute("TRUNCATE reviews").await.unwrap();
    drop(p1);

    // The restarted pgmld resumes orphaned jobs (tests/support turns it off by default).
    let p2 = Pgmld::start_with(Start {
        env: vec![("PGMLD_RESUME_JOBS".into(), "true".into())],
        ..Start::default()
    });
    // About 2 s of training left on idle cores; generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = watch.query_one(JOB, &[&"killed"]).await.unwrap();
        match r.get::<_, String>(2).as_str() {
            "successful" => break,
            "failed" => panic!("the resumed model failed: {}", p2.log_text()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not resumed within 120 s: {}", p2.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("restart to resumed model: {:?}", killed_at.elapsed());
    assert!(p2.log_text().contains("resuming an interrupted pgml.tune job"), "{}", p2.log_text());
    let r = watch.query_one(JOB, &[&"killed"]).await.unwrap();
    assert_eq!((r.get::<_, String>(0), r.get::<_, Option<i64>>(1)), ("succeeded".into(), None));
    let resumed = watch
        .query_one(
            "SELECT logs FROM pgml.logs WHERE model_id = $1 AND logs->>'status' = 'resuming'",
            &[&killed_id],
        )
        .await
        .unwrap()
        .get::<_, serde_json::Value>(0);
    assert_eq!(resumed["from_step"].as_i64(), Some(at), "{resumed}");

    let (k_rows, s_rows) =
        (loss_rows(&watch, killed_id).await, loss_rows(&watch, straight_id).await);
    assert_steps(&k_rows);
    assert_steps(&s_rows);
    assert_same_run(
        &metrics(&watch, killed_id).await,
        &metrics(&watch, straight_id).await,
        &k_rows,
        &s_rows,
    );
    let files: Vec<String> = watch
        .query("SELECT DISTINCT path FROM pgml.files WHERE model_id = $1 ORDER BY 1", &[&killed_id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        files.iter().any(|f| f == "model.safetensors")
            && files.iter().all(|f| !f.starts_with("checkpoint/")),
        "{files:?}"
    );
    // The resumed model serves like any other.
    let c2 = p2.connect(&db.name).await;
    let sql = format!("SELECT pgml.transform(task => '{{\"task\": \"text-classification\", \"model\": \"pgml:{killed_id}\"}}'::jsonb, inputs => ARRAY['fine'])");
    c2.query_one(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{e}\n{}", p2.log_text()));
    let _ = std::fs::remove_dir_all(&model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_checkpoint_after_a_cancel() {
    let _one_at_a_time = support::serial::model_test().await;
    let _serial = SERIAL.lock().await;
    let data = imdb_balanced(0, 240);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows(&data)).await;
    let p = Pgmld::start();
    let watch = p.connect(&db.name).await;

    // Nothing to resume: no project, a project without an interrupted model, a bad value.
    let resume = r#"{"training_args": {"resume_from_checkpoint": true}}"#;
    let text =
        expect_err(&watch, &tune_sql("nobody", &m, resume), "22023", "no interrupted model").await;
    assert!(text.contains("save_steps"), "hint: {text}");
    let quick = r#"{"training_args": {"max_steps": 2}}"#;
    watch.query_one(tune_sql("cancel_me", &m, quick).as_str(), &[]).await.unwrap();
    expect_err(&watch, &tune_sql("cancel_me", &m, resume), "22023", "no interrupted model").await;
    let path = r#"{"training_args": {"resume_from_checkpoint": "checkpoint-10"}}"#;
    expect_err(&watch, &tune_sql("cancel_me", &m, path), "22023", "resume_from_checkpoint").await;

    // The uninterrupted run.
    let row = watch.query_one(tune_sql("straight", &m, HP).as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let straight_id: i64 = watch.query_one(JOB, &[&"straight"]).await.unwrap().get(3);

    // Cancelled by the client after a checkpoint (its latest model; the quick one succeeded).
    let client = p.connect(&db.name).await;
    let token = client.cancel_token();
    let sql = tune_sql("cancel_me", &m, HP);
    let tune = tokio::spawn(async move { client.query(sql.as_str(), &[]).await.map(|_| ()) });
    let cancel_job = "SELECT j.status, j.checkpoint_step, m.status, m.id, j.id FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id \
        JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = 'cancel_me' ORDER BY j.id DESC LIMIT 1";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = watch.query_one(cancel_job, &[]).await.unwrap();
        if r.get::<_, String>(2) == "in_progress"
            && r.get::<_, Option<i64>>(1).is_some_and(|s| s >= 20)
        {
            break;
        }
        assert!(
            Instant::now() < deadline && !tune.is_finished(),
            "no checkpoint: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tune.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let r = watch.query_one(cancel_job, &[]).await.unwrap();
    let (model_id, job_id): (i64, i64) = (r.get(3), r.get(4));
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(2)),
        ("cancelled".into(), "failed".into())
    );
    let at: i64 = r.get::<_, Option<i64>>(1).unwrap();

    // Resumed by SQL: the same model and job go on and return as a normal tune.
    let t = Instant::now();
    let row = watch
        .query_one(tune_sql("cancel_me", &m, resume).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    println!("resumed from step {at} in {:?}", t.elapsed());
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(2)),
        ("successful".into(), "transformers".into())
    );
    let r = watch.query_one(cancel_job, &[]).await.unwrap();
    assert_eq!((r.get::<_, i64>(3), r.get::<_, i64>(4)), (model_id, job_id), "no new model or job");
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(2)),
        ("succeeded".into(), "successful".into())
    );
    let models: i64 =
        watch.query_one("SELECT count(*) FROM pgml.models", &[]).await.unwrap().get(0);
    assert_eq!(models, 3);
    let (c_rows, s_rows) =
        (loss_rows(&watch, model_id).await, loss_rows(&watch, straight_id).await);
    assert_steps(&c_rows);
    assert_same_run(
        &metrics(&watch, model_id).await,
        &metrics(&watch, straight_id).await,
        &c_rows,
        &s_rows,
    );
    // Nothing left to resume.
    expect_err(&watch, &tune_sql("cancel_me", &m, resume), "22023", "no interrupted model").await;
    let _ = std::fs::remove_dir_all(&model);
}
