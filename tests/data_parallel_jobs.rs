//! Data-parallel tunes (#16): `"training_args": {"world_size": 2}` makes two `pgmld worker`
//! processes train one job over c10d Gloo, meeting through the job row. With dropout off the
//! result equals a single process with the same global batch; a rank killed mid-run sends
//! the job back to the queue and it resumes from its checkpoint with the workers left.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::models::{connect_with_notices, create_table, imdb_balanced, tiny_bert_with_dropout};
use support::tuning::{direct, loss_rows, resumed_from, rows, tune_sql};
use support::{Pgmld, Start, TestDb, Worker};

/// A fresh database with `n` balanced IMDB reviews, a dropout-free tiny BERT, and a
/// front-end that trains nothing.
async fn setup(n: usize) -> (String, TestDb, Pgmld) {
    let data = imdb_balanced(0, n);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert_with_dropout(&texts, 0.0).display().to_string();
    let (db, front) = reviews_and_front_end(&data).await;
    (model, db, front)
}

/// A fresh database whose table `reviews` holds `data`, migrated through a front-end that
/// trains nothing.
async fn reviews_and_front_end(data: &[(String, &str)]) -> (TestDb, Pgmld) {
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows(data)).await;
    let front = Pgmld::start_with(Start {
        env: vec![("PGMLD_TRAIN_WORKERS".into(), "0".into())],
        ..Start::default()
    });
    front.connect(&db.name).await.query_one("SELECT pgml.version()", &[]).await.unwrap();
    (db, front)
}

/// Training arguments: the global batch is 8 either way (8 × 1 or 4 × 2).
fn hp(batch: usize, world_size: usize, steps: usize, save_steps: usize) -> String {
    format!(
        r#"{{"training_args": {{"learning_rate": 1e-3, "max_steps": {steps}, "per_device_train_batch_size": {batch},
            "world_size": {world_size}, "logging_steps": 1, "save_steps": {save_steps}, "seed": 11,
            "warmup_ratio": 0.1}}, "tokenizer_args": {{"max_length": 64}}}}"#
    )
}

const JOB: &str =
    "SELECT j.id, j.model_id, j.status, j.checkpoint_step, j.worker_pid, j.attempts, m.metrics, \
    j.generation, j.ranks, j.world_size FROM pgml.jobs j JOIN pgml.models m ON m.id = j.model_id \
    JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = $1";

/// The stored model.safetensors of `model_id`, by tensor name.
async fn weights(c: &tokio_postgres::Client, model_id: i64) -> HashMap<String, tch::Tensor> {
    let parts = c
        .query(
            "SELECT data FROM pgml.files WHERE model_id = $1 AND path = 'model.safetensors' ORDER BY part",
            &[&model_id],
        )
        .await
        .unwrap();
    let bytes: Vec<u8> = parts.iter().flat_map(|r| r.get::<_, Vec<u8>>(0)).collect();
    assert!(!bytes.is_empty(), "model {model_id} has no model.safetensors");
    let file = support::temp_dir("pgmld-dp-weights").join("model.safetensors");
    std::fs::write(&file, bytes).unwrap();
    tch::Tensor::read_safetensors(&file).unwrap().into_iter().collect()
}

fn max_diff(a: &HashMap<String, tch::Tensor>, b: &HashMap<String, tch::Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().map(|(k, t)| (t - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

/// Logged losses, which pgml.logs keeps rounded to 4 digits as HF does: two runs within
/// 1e-5 of each other log values one unit (1e-4) apart where they straddle a rounding
/// boundary (CI once saw 0.6945 vs 0.6944), so one unit is allowed and no more.
fn close(a: &[(i64, f64)], b: &[(i64, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for ((s1, l1), (s2, l2)) in a.iter().zip(b) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1.5e-4, "{what}, step {s1}: loss {l1} vs {l2}");
    }
}

fn same_metrics(a: &serde_json::Value, b: &serde_json::Value) {
    for key in ["train_loss", "eval_loss", "eval_accuracy", "eval_f1"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!((x - y).abs() < 1e-5, "{key}: {x} vs {y}\n{a}\n{b}");
    }
}

fn workers(db: &str, rendezvous_secs: u64) -> [Worker; 2] {
    let env = [
        ("PGMLD_RENDEZVOUS_TIMEOUT_SECS", rendezvous_secs.to_string()),
        ("PGMLD_DIST_HOST", "127.0.0.1".to_string()),
        ("PGMLD_TORCH_THREADS", "1".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    [Worker::start("cpu", &[db], &env), Worker::start("cpu", &[db], &env)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_size_two_across_two_workers_equals_one_process() {
    let _one_at_a_time = support::serial::model_test().await;
    let (m, db, front) = setup(200).await;
    let watch = direct(&db.name).await;
    let [w1, w2] = workers(&db.name, 30);
    let logs = || format!("{}\n{}\n{}", front.log_text(), w1.log_text(), w2.log_text());
    let c = front.connect(&db.name).await;
    c.query_one(tune_sql("single", &m, &hp(8, 1, 10, 100)).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let (dp, notices) = connect_with_notices(&front.url(&db.name)).await;
    let started = Instant::now();
    let row = dp
        .query_one(tune_sql("two-ranks", &m, &hp(4, 2, 10, 100)).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    println!("world_size 2 tune: {:?}", started.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");

    let single = watch.query_one(JOB, &[&"single"]).await.unwrap();
    let two = watch.query_one(JOB, &[&"two-ranks"]).await.unwrap();
    assert_eq!(
        (two.get::<_, i32>(7), two.get::<_, Option<i32>>(8)),
        (1, Some(2)),
        "one generation of two ranks"
    );
    assert_eq!(two.get::<_, i32>(9), 2);
    let rank1 = watch
        .query_one(
            "SELECT worker_pid, rank FROM pgml.job_ranks WHERE job_id = $1",
            &[&two.get::<_, i64>(0)],
        )
        .await
        .unwrap();
    let pids = [w1.pid(), w2.pid()];
    let (rank0_pid, rank1_pid) = (two.get::<_, i32>(4) as u32, rank1.get::<_, i32>(0) as u32);
    assert!(
        pids.contains(&rank0_pid) && pids.contains(&rank1_pid) && rank0_pid != rank1_pid,
        "{pids:?}: rank 0 {rank0_pid}, rank 1 {rank1_pid}"
    );
    assert_eq!(rank1.get::<_, i32>(1), 1);
    let seen = notices.lock().unwrap().join("\n");
    assert!(seen.contains("\"status\": \"rendezvous\""), "{seen}");
    assert!(seen.contains("\"ranks\": 2"), "{seen}");
    assert!(!seen.contains("alone"), "the group formed: {seen}");
    let rank1_log = if w1.pid() == rank1_pid { w1.log_text() } else { w2.log_text() };
    assert!(
        rank1_log.contains("data-parallel rank done"),
        "rank 1 trained to the end:\n{rank1_log}"
    );

    let (a, b) = (weights(&watch, two.get(1)).await, weights(&watch, single.get(1)).await);
    let d = max_diff(&a, &b);
    println!("world_size 2 vs one process after 10 steps: max |w - w_single| = {d:e}");
    assert!(d < 1e-5, "weights differ by {d}");
    same_metrics(&two.get(6), &single.get(6));
    close(
        &loss_rows(&watch, two.get(1)).await,
        &loss_rows(&watch, single.get(1)).await,
        "logged losses",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rank_sends_the_job_back_and_it_resumes_from_its_checkpoint() {
    let _one_at_a_time = support::serial::model_test().await;
    let (m, db, front) = setup(240).await;
    let watch = direct(&db.name).await;
    let [mut w1, mut w2] = workers(&db.name, 3);
    let logs = |w1: &Worker, w2: &Worker| {
        format!("{}\n{}\n{}", front.log_text(), w1.log_text(), w2.log_text())
    };
    let c = front.connect(&db.name).await;
    c.query_one(tune_sql("single", &m, &hp(8, 1, 60, 10)).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&w1, &w2)));
    let single = watch.query_one(JOB, &[&"single"]).await.unwrap();

    let (dp, notices) = connect_with_notices(&front.url(&db.name)).await;
    let sql = tune_sql("killed-rank", &m, &hp(4, 2, 60, 10));
    let tune = tokio::spawn(async move { dp.query_one(sql.as_str(), &[]).await });
    // Once both ranks train and a checkpoint past step 20 is stored, kill rank 1.
    let deadline = Instant::now() + Duration::from_secs(120);
    let job_id = loop {
        if let Some(r) = watch.query_opt(JOB, &[&"killed-rank"]).await.unwrap() {
            let at = r.get::<_, Option<i64>>(3);
            if r.get::<_, Option<i32>>(8) == Some(2) && at.is_some_and(|s| s >= 20) {
                assert!(at.unwrap() < 60, "the job ended before the kill");
                break r.get::<_, i64>(0);
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint with two ranks:\n{}", logs(&w1, &w2));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let rank1: i32 = watch
        .query_one(
            "SELECT worker_pid FROM pgml.job_ranks WHERE job_id = $1 AND generation = 1",
            &[&job_id],
        )
        .await
        .unwrap()
        .get(0);
    let victim = if w1.pid() == rank1 as u32 { &mut w1 } else { &mut w2 };
    assert_eq!(victim.pid(), rank1 as u32);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed_at = Instant::now();

    let row = tokio::time::timeout(Duration::from_secs(180), tune)
        .await
        .expect("the tune ends on the worker left")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&w1, &w2)));
    println!("ended {:?} after the kill", killed_at.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");
    let job = watch.query_one(JOB, &[&"killed-rank"]).await.unwrap();
    assert_eq!(job.get::<_, String>(2), "succeeded");
    assert_eq!(job.get::<_, i32>(5), 2, "a second attempt");
    assert_eq!(
        (job.get::<_, i32>(7), job.get::<_, Option<i32>>(8)),
        (2, Some(1)),
        "generation 2 ran with the one rank left"
    );
    let seen = notices.lock().unwrap().join("\n");
    assert!(seen.contains(&format!("a rank of data-parallel job {job_id} was lost")), "{seen}");
    assert!(!seen.contains("alone"), "the first generation's group formed: {seen}");
    let resumed = resumed_from(&watch, job.get(1)).await;
    assert!(resumed >= 20, "resumed from step {resumed}");
    // The same global batch on one rank or two: the run ends as the single process's.
    same_metrics(&job.get(6), &single.get(6));
    close(
        &loss_rows(&watch, job.get(1)).await,
        &loss_rows(&watch, single.get(1)).await,
        "logged losses",
    );
    let d = max_diff(&weights(&watch, job.get(1)).await, &weights(&watch, single.get(1)).await);
    println!("resumed after a lost rank vs one process: max |w - w_single| = {d:e}");
    // Two ranks sum each step's gradient in another order than one process does; over the
    // 20-59 steps that ran on two ranks here that drifted a weight by 4e-7 to 3e-6 on an
    // idle machine and by 1.6e-5 once in CI on a loaded one. A resume that drops the checkpoint's optimizer state ends 1.9e-2 away (tried), and one that
    // skips or repeats batches moves weights by the order of the learning rate (1e-3) per
    // step. The 10-step comparison above keeps 1e-5.
    assert!(d < 1e-4, "weights differ by {d}");
}

/// The real thing: pretrained MiniLM (dropout on) fine-tuned on IMDB reviews by two workers
/// as one world_size 2 job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretrained_minilm_trains_on_two_workers() {
    let _one_at_a_time = support::serial::model_test().await;
    let (db, front) = reviews_and_front_end(&imdb_balanced(0, 600)).await;
    let watch = direct(&db.name).await;
    let [w1, w2] = workers(&db.name, 30);
    let hp = r#"{"training_args": {"learning_rate": 1e-4, "per_device_train_batch_size": 8, "world_size": 2,
        "per_device_eval_batch_size": 32, "num_train_epochs": 1, "warmup_ratio": 0.1, "logging_steps": 5, "seed": 42},
        "tokenizer_args": {"max_length": 64}}"#;
    let sql = format!(
        "SELECT status FROM pgml.tune('minilm-dp', task => 'text-classification', relation_name => 'reviews', \
         model_name => '{}', test_size => 200, hyperparams => '{hp}')",
        support::models::minilm_dir().display()
    );
    let started = Instant::now();
    let c = front.connect(&db.name).await;
    let row = c.query_one(sql.as_str(), &[]).await.unwrap_or_else(|e| {
        panic!("{e}\n{}\n{}\n{}", front.log_text(), w1.log_text(), w2.log_text())
    });
    println!("MiniLM, world_size 2 on two workers: {:?}", started.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");
    let job = watch.query_one(JOB, &[&"minilm-dp"]).await.unwrap();
    assert_eq!(job.get::<_, Option<i32>>(8), Some(2), "two ranks trained");
    let m: serde_json::Value = job.get(6);
    println!("metrics {m}");
    let losses = loss_rows(&watch, job.get(1)).await;
    assert_eq!(losses.len(), 5, "400 rows, a global batch of 16: 25 steps, a log every 5");
    let acc = m["eval_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.6, "eval_accuracy {acc} on 200 held-out reviews: {m}");
}
