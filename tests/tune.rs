//! `pgml.tune` through real clients against pgmld: a tiny BERT on IMDB with live logs seen
//! from a second session, files, deployment and restart from the project; bad inputs;
//! cancel and disconnect; 9 classes and text pairs; the guide's walkthrough in psql, through
//! its §6 inference queries.

mod support;

use std::time::{Duration, Instant};

use support::models::{connect_with_notices, create_table, imdb_balanced, tiny_bert};
use support::{expect_err, psql_script, sqlstate, Pgmld, Start, TestDb};

fn rows2(v: &[(String, &str)]) -> Vec<Vec<String>> {
    v.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect()
}

fn tune_sql(project: &str, relation: &str, model: &str, hyperparams: &str, extra: &str) -> String {
    format!(
        "SELECT status, task, algorithm, deployed FROM pgml.tune('{project}', task => 'text-classification', \
         relation_name => '{relation}', model_name => '{model}', hyperparams => '{hyperparams}'{extra})"
    )
}

fn losses(rows: &[tokio_postgres::Row]) -> Vec<f64> {
    rows.iter().map(|r| r.get::<_, f64>(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_bert_tunes_with_live_logs_files_and_deployment() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 480);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows2(&data)).await;
    let p = Pgmld::start_with(Start {
        env: vec![("PGMLD_FILE_PART_BYTES".into(), "65536".into())],
        ..Start::default()
    });
    let (client, notices) = connect_with_notices(&p.url(&db.name)).await;
    let watcher = p.connect(&db.name).await;
    let hp = r#"{"training_args": {"learning_rate": 1e-3, "num_train_epochs": 6, "per_device_train_batch_size": 16,
        "logging_steps": 5, "hub_token": "hf_SECRET123", "seed": 7, "warmup_ratio": 0.1},
        "dataset_args": {"text_column": "text", "class_column": "class"}}"#;
    let sql =
        tune_sql("tiny_imdb", "reviews", &model.display().to_string(), hp, ", test_size => 0.25");
    let started = Instant::now();
    let tune =
        tokio::spawn(async move { client.query_one(sql.as_str(), &[]).await.map(|r| (r, client)) });
    // A second session sees log rows while the first is still training.
    // Proxied queries stay fast meanwhile: training runs on its own thread.
    let mut seen_live = 0i64;
    let mut latencies = Vec::new();
    while !tune.is_finished() {
        let t = Instant::now();
        let n: i64 = watcher.query_one("SELECT count(*) FROM pgml.logs", &[]).await.unwrap().get(0);
        if !tune.is_finished() {
            seen_live = seen_live.max(n);
            latencies.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    println!(
        "proxied query latency while training: median {median:?}, max {:?}",
        latencies.last().unwrap()
    );
    assert!(median < Duration::from_millis(100), "median proxied latency {median:?}");
    let (row, client) = tune.await.unwrap().unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    println!("tune took {:?}", started.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");
    assert_eq!(row.get::<_, String>(1), "text-classification");
    assert_eq!(row.get::<_, String>(2), "transformers", "PostgresML's algorithm");
    assert!(row.get::<_, bool>(3), "first model deploys");
    assert!(seen_live >= 2, "log rows visible during training: {seen_live}");

    let notes = notices.lock().unwrap().clone();
    let joined = notes.join("\n");
    for key in [
        "\"loss\"",
        "\"grad_norm\"",
        "\"learning_rate\"",
        "\"max_steps\"",
        "\"timestamp\"",
        "\"eta_seconds\"",
        "\"train_runtime\"",
        "\"eval_f1\"",
        "\"eval_accuracy\"",
    ] {
        assert!(joined.contains(key), "{key} missing in notices:\n{joined}");
    }
    assert!(notes.iter().all(|n| !n.contains("SECRET123")));

    let model_id: i64 = watcher.query_one("SELECT id FROM pgml.models", &[]).await.unwrap().get(0);
    let l = losses(
        &watcher
            .query("SELECT (logs->>'loss')::float8 FROM pgml.logs WHERE model_id = $1 AND logs ? 'loss' ORDER BY id", &[&model_id])
            .await
            .unwrap(),
    );
    // 360 training rows / 16 = 23 steps per epoch, 6 epochs = 138 steps, a log every 5.
    assert_eq!(l.len(), 27, "{l:?}");
    let (first, last) =
        (l[..3].iter().sum::<f64>() / 3.0, l[l.len() - 3..].iter().sum::<f64>() / 3.0);
    assert!(last < first * 0.7, "loss falls: {first} -> {last} ({l:?})");
    let m = watcher
        .query_one("SELECT status, metrics, hyperparams::text, error, snapshot_id IS NOT NULL FROM pgml.models WHERE id = $1", &[&model_id])
        .await
        .unwrap();
    assert_eq!(m.get::<_, String>(0), "successful");
    let metrics: serde_json::Value = m.get(1);
    let acc = metrics["eval_accuracy"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&acc)
            && metrics["eval_f1"].is_number()
            && metrics["train_loss"].is_number(),
        "{metrics}"
    );
    assert!(
        !m.get::<_, String>(2).contains("SECRET123")
            && m.get::<_, String>(2).contains("learning_rate")
    );
    assert!(m.get::<_, bool>(4));
    // Created_at is the real time of each row: increasing over the run.
    let spread: f64 = watcher
        .query_one("SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 FROM pgml.logs WHERE model_id = $1", &[&model_id])
        .await
        .unwrap()
        .get(0);
    assert!(spread > 0.0);

    let files = watcher
        .query("SELECT path, count(*), sum(length(data))::int8 FROM pgml.files WHERE model_id = $1 GROUP BY path ORDER BY path", &[&model_id])
        .await
        .unwrap();
    let names: Vec<String> = files.iter().map(|r| r.get(0)).collect();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "training_args.json"] {
        assert!(names.iter().any(|n| n == f), "{f} not stored: {names:?}");
    }
    let weights = files.iter().find(|r| r.get::<_, String>(0) == "model.safetensors").unwrap();
    assert!(weights.get::<_, i64>(1) > 1, "stored in 64 KiB parts");
    let leaked: i64 = watcher
        .query_one("SELECT count(*) FROM pgml.files WHERE position(convert_to('SECRET123', 'UTF8') IN data) > 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "the token is in a stored file");
    let cfg: String = watcher
        .query_one("SELECT convert_from(string_agg(data, ''::bytea ORDER BY part), 'UTF8') FROM pgml.files WHERE model_id = $1 AND path = 'config.json'", &[&model_id])
        .await
        .unwrap()
        .get(0);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["id2label"], serde_json::json!({"0": "negative", "1": "positive"}));
    assert_eq!(cfg["label2id"]["positive"], 1);
    let deployed: i64 =
        watcher.query_one("SELECT model_id FROM pgml.deployments", &[]).await.unwrap().get(0);
    assert_eq!(deployed, model_id);
    let job = watcher
        .query_one(
            "SELECT status, progress::float8 FROM pgml.jobs WHERE model_id = $1",
            &[&model_id],
        )
        .await
        .unwrap();
    assert_eq!((job.get::<_, String>(0), job.get::<_, f64>(1)), ("succeeded".to_string(), 1.0));

    // Restart from the previous model: model_name names the project; files come back from
    // pgml.files, and the new model records its parent.
    let hp2 = r#"{"training_args": {"learning_rate": 1e-4, "max_steps": 3, "logging_steps": 1},
        "dataset_args": {"text_column": "text", "class_column": "class"}}"#;
    let row = client
        .query_one(tune_sql("tiny_imdb", "reviews", "tiny_imdb", hp2, "").as_str(), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let parent: Option<i64> = watcher
        .query_one("SELECT parent_id FROM pgml.models ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parent, Some(model_id));
    client.query_one("SELECT 1", &[]).await.unwrap();
    let _ = std::fs::remove_dir_all(&model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_sqlstates_and_the_session_stays_usable() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 40);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows2(&data)).await;
    create_table(
        &db.name,
        "one_class",
        &["text", "class"],
        &[vec!["a".into(), "x".into()], vec!["b".into(), "x".into()], vec!["c".into(), "x".into()]],
    )
    .await;
    create_table(&db.name, "empty", &["text", "class"], &[]).await;
    support::psql_direct(&db.name, "CREATE TABLE with_null (text text, class text); INSERT INTO with_null VALUES ('good', 'a'), (NULL, 'b')");
    let p = Pgmld::start_with(Start {
        env: vec![("HF_HUB_OFFLINE".into(), "1".into())],
        ..Start::default()
    });
    let c = p.connect(&db.name).await;
    let ok_hp = r#"{"training_args": {"max_steps": 1}}"#;
    expect_err(&c, "SELECT * FROM pgml.tune('p', task => 'regression', relation_name => 'reviews', model_name => 'x')", "22023", "regression").await;
    expect_err(&c, &tune_sql("p", "no_such_table", &m, ok_hp, ""), "42P01", "no_such_table").await;
    expect_err(
        &c,
        &tune_sql("p", "reviews", &m, r#"{"dataset_args": {"text_column": "body"}}"#, ""),
        "42703",
        "body",
    )
    .await;
    expect_err(&c, &tune_sql("p", "with_null", &m, ok_hp, ""), "22004", "NULL in row 2").await;
    expect_err(
        &c,
        &tune_sql("p", "one_class", &m, ok_hp, ", test_size => 0.3"),
        "22023",
        "single class",
    )
    .await;
    expect_err(&c, &tune_sql("p", "empty", &m, ok_hp, ""), "22023", "no rows").await;
    expect_err(
        &c,
        &tune_sql("p", "reviews", &m, ok_hp, ", test_size => 1.5"),
        "22023",
        "test_size",
    )
    .await;
    expect_err(&c, &tune_sql("p", "reviews", &m, ok_hp, ", test_size => -1"), "22023", "test_size")
        .await;
    expect_err(
        &c,
        &tune_sql("p", "reviews", &m, ok_hp, ", test_size => 40"),
        "22023",
        "no training rows",
    )
    .await;
    expect_err(&c, &tune_sql("p", "reviews", &m, r#"{"training_args": "#, ""), "22P02", "json")
        .await;
    expect_err(
        &c,
        &tune_sql("p", "reviews", &m, r#"{"training_args": {"num_epochs": 2}}"#, ""),
        "22023",
        "num_epochs",
    )
    .await;
    expect_err(
        &c,
        &tune_sql("p", "reviews", &m, r#"{"training_args": {"learning_rate": -1}}"#, ""),
        "22023",
        "learning_rate",
    )
    .await;
    expect_err(
        &c,
        &tune_sql("p", "reviews", "no-such-org/no-such-model", ok_hp, ""),
        "58P01",
        "no-such-org/no-such-model",
    )
    .await;
    expect_err(
        &c,
        &tune_sql("p", "reviews", "/nonexistent/model", ok_hp, ""),
        "58P01",
        "/nonexistent/model",
    )
    .await;
    expect_err(
        &c,
        "SELECT * FROM pgml.tune('fresh', relation_name => 'reviews', model_name => 'x')",
        "22023",
        "no task",
    )
    .await;
    // A project keeps its task.
    support::psql_direct(
        &db.name,
        "INSERT INTO pgml.projects (name, task) VALUES ('pairs', 'text-pair-classification')",
    );
    expect_err(
        &c,
        &tune_sql("pairs", "reviews", &m, ok_hp, ""),
        "22023",
        "text-pair-classification",
    )
    .await;
    // A loss that blows up fails the job clearly and records it.
    let nan =
        r#"{"training_args": {"learning_rate": 1e30, "max_grad_norm": 0, "num_train_epochs": 3}}"#;
    expect_err(&c, &tune_sql("nan", "reviews", &m, nan, ""), "XX000", "not finite").await;
    let failed = c
        .query_one("SELECT status, error FROM pgml.models ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap();
    assert_eq!(failed.get::<_, String>(0), "failed");
    assert!(failed.get::<_, String>(1).contains("not finite"));
    let _ = std::fs::remove_dir_all(&model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_disconnect_stop_training_and_free_the_worker() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 400);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows2(&data)).await;
    let p = Pgmld::start();
    let watcher = p.connect(&db.name).await;
    let long = r#"{"training_args": {"num_train_epochs": 200, "logging_steps": 1}}"#;

    // Cancel (psql's Ctrl-C sends a CancelRequest).
    let (client, notices) = connect_with_notices(&p.url(&db.name)).await;
    let token = client.cancel_token();
    let sql = tune_sql("cancel_me", "reviews", &m, long, "");
    let tune = tokio::spawn(async move { client.query(sql.as_str(), &[]).await.map(|_| ()) });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !notices.lock().unwrap().iter().any(|n| n.contains("\"loss\"")) {
        assert!(
            Instant::now() < deadline && !tune.is_finished(),
            "no training progress: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tune.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopped within a step: {:?}",
        asked.elapsed()
    );
    let r = watcher.query_one("SELECT m.status, m.error, j.status FROM pgml.models m JOIN pgml.jobs j ON j.model_id = m.id", &[]).await.unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)),
        ("failed".into(), "cancelled".into(), "cancelled".into())
    );

    // A dropped connection (psql killed) stops its job too.
    let mut child = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p.addr.port().to_string(),
            "-U",
            "postgres",
            "-d",
            &db.name,
            "-X",
            "-c",
        ])
        .arg(tune_sql("dropped", "reviews", &m, long, ""))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let logged = "SELECT count(*) FROM pgml.logs l JOIN pgml.projects p ON p.id = l.project_id WHERE p.name = 'dropped' AND l.logs ? 'loss'";
    let deadline = Instant::now() + Duration::from_secs(120);
    while watcher.query_one(logged, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(Instant::now() < deadline, "no progress: {}", p.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    let status = "SELECT m.status, m.error FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = 'dropped'";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = watcher.query_one(status, &[]).await.unwrap();
        if r.get::<_, String>(0) == "failed" {
            assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("cancelled"));
            break;
        }
        assert!(Instant::now() < deadline, "dropped client's job still {}", r.get::<_, String>(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The single worker is free again: a short run completes.
    let quick = r#"{"training_args": {"max_steps": 2}}"#;
    let c = p.connect(&db.name).await;
    let row = tokio::time::timeout(
        Duration::from_secs(60),
        c.query_one(tune_sql("after", "reviews", &m, quick, "").as_str(), &[]),
    )
    .await
    .expect("worker freed")
    .unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let _ = std::fs::remove_dir_all(&model);
}

/// Synthetic texts whose class is given by a keyword among filler words.
fn keyword_rows(n: usize, classes: &[&str]) -> Vec<Vec<String>> {
    let fillers = [
        "the", "market", "said", "today", "shares", "company", "report", "quarter", "growth",
        "price",
    ];
    (0..n)
        .map(|i| {
            let c = i % classes.len();
            let mut words: Vec<String> =
                (0..8).map(|k| fillers[(i * 7 + k * 3) % fillers.len()].to_string()).collect();
            words.insert((i / classes.len()) % 8, format!("signal{c}"));
            vec![words.join(" "), classes[c].to_string()]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_classes_integer_classes_and_text_pairs() {
    let _one_at_a_time = support::serial::model_test().await;
    let classes = [
        "mildly negative",
        "mildly positive",
        "moderately negative",
        "moderately positive",
        "negative",
        "neutral",
        "positive",
        "strong negative",
        "strong positive",
    ];
    let rows = keyword_rows(540, &classes);
    let pairs: Vec<Vec<String>> = (0..300)
        .map(|i| {
            let a = format!("signal{} market report", i % 9);
            let (b, label) = if i % 2 == 0 {
                (format!("report signal{} market", i % 9), "same")
            } else {
                (format!("signal{} market report", (i + 4) % 9), "different")
            };
            vec![a, b, label.to_string()]
        })
        .collect();
    let mut texts: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    texts.extend(pairs.iter().map(|r| r[1].clone()));
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "fin", &["input", "output"], &rows).await;
    create_table(&db.name, "pairs", &["premise", "hypothesis", "label"], &pairs).await;
    support::psql_direct(&db.name, "CREATE TABLE fin_int AS SELECT input, (substring(input from 'signal([0-9])'))::int * 10 AS y FROM fin");
    let p = Pgmld::start();
    let c = p.connect(&db.name).await;
    let hp = r#"{"training_args": {"learning_rate": 2e-3, "num_train_epochs": 8, "per_device_train_batch_size": 16, "logging_steps": 10},
        "dataset_args": {"text_column": "input", "class_column": "output"}}"#;
    let row = c
        .query_one(
            tune_sql("fingpt", "fin", &m, hp, ", test_size => 0.2, test_sampling => 'stratified'")
                .as_str(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let r = c
        .query_one("SELECT metrics, id FROM pgml.models ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap();
    let metrics: serde_json::Value = r.get(0);
    let acc = metrics["eval_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "9-class accuracy {acc} (chance 0.11): {metrics}");
    let model_id: i64 = r.get(1);
    let cfg: String = c
        .query_one("SELECT convert_from(data, 'UTF8') FROM pgml.files WHERE model_id = $1 AND path = 'config.json'", &[&model_id])
        .await
        .unwrap()
        .get(0);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let mut sorted = classes.to_vec();
    sorted.sort();
    for (i, name) in sorted.iter().enumerate() {
        assert_eq!(cfg["id2label"][i.to_string()], *name, "{cfg}");
    }
    // Stratified: every class is in the test split (108 rows, 12 per class).
    let analysis: serde_json::Value = c
        .query_one("SELECT analysis FROM pgml.snapshots ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(analysis["test_rows"], 108, "{analysis}");

    // Integer classes sort numerically (0, 10, ..., 80), not as text.
    let hp_int = r#"{"training_args": {"max_steps": 2}, "dataset_args": {"text_column": "input"}}"#;
    let row = c
        .query_one(tune_sql("ints", "fin_int", &m, hp_int, ", y_column_name => 'y'").as_str(), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let cfg: String = c
        .query_one("SELECT convert_from(f.data, 'UTF8') FROM pgml.files f WHERE f.path = 'config.json' ORDER BY f.model_id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["id2label"]["1"], "10");
    assert_eq!(cfg["id2label"]["8"], "80");

    // A test class never seen in training is reported and left out, not a crash.
    support::psql_direct(&db.name, "CREATE TABLE fin_unseen AS SELECT * FROM fin UNION ALL SELECT 'signal9 brand new', 'brand new' FROM generate_series(1, 3)");
    let (cn, notices) = connect_with_notices(&p.url(&db.name)).await;
    let hp_unseen = r#"{"training_args": {"max_steps": 2}, "dataset_args": {"text_column": "input", "class_column": "output"}}"#;
    let row = cn
        .query_one(
            tune_sql(
                "unseen",
                "(SELECT * FROM fin_unseen) AS x",
                &m,
                hp_unseen,
                ", test_size => 30, test_sampling => 'last'",
            )
            .as_str(),
            &[],
        )
        .await;
    assert!(row.is_err(), "a subquery is not a relation name");
    let row = cn
        .query_one(
            tune_sql(
                "unseen",
                "fin_unseen",
                &m,
                hp_unseen,
                ", test_size => 30, test_sampling => 'last'",
            )
            .as_str(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let analysis: serde_json::Value = c
        .query_one("SELECT analysis FROM pgml.snapshots ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (analysis["test_rows"].as_u64(), analysis["test_rows_with_unseen_class"].as_u64()),
        (Some(27), Some(3)),
        "{analysis}"
    );
    assert!(
        notices.lock().unwrap().iter().any(|n| n.starts_with("WARNING") && n.contains("brand new")),
        "{:?}",
        notices.lock().unwrap()
    );

    // Text pairs.
    let hp_pairs = r#"{"training_args": {"learning_rate": 2e-3, "num_train_epochs": 6, "logging_steps": 10},
        "dataset_args": {"text1_column": "premise", "text2_column": "hypothesis", "class_column": "label"}}"#;
    let sql = format!(
        "SELECT status FROM pgml.tune('pairs', task => 'text-pair-classification', relation_name => 'pairs', model_name => '{m}', hyperparams => '{hp_pairs}', test_size => 60)"
    );
    let row = c.query_one(sql.as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let metrics: serde_json::Value = c
        .query_one("SELECT metrics FROM pgml.models ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(metrics["eval_accuracy"].as_f64().unwrap() >= 0.0, "{metrics}");
    assert!(metrics["train_loss"].as_f64().unwrap().is_finite());
    let _ = std::fs::remove_dir_all(&model);
}

/// The guide's IMDB walkthrough in psql: load, views, and the tune call verbatim except
/// model_name and the epoch count.
#[test]
fn guide_walkthrough_through_psql() {
    let _one_at_a_time = support::serial::model_test_blocking();
    let data = imdb_balanced(1000, 1000);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let dir = support::temp_dir("pgmld-tune-guide");
    let file = dir.join("imdb.csv");
    let mut w = csv::Writer::from_path(&file).unwrap();
    w.write_record(["text", "label"]).unwrap();
    for (t, c) in &data {
        w.write_record([t.as_str(), if *c == "positive" { "1" } else { "0" }]).unwrap();
    }
    w.flush().unwrap();
    // Offline: the guide's push_to_hub with "YOUR_HUB_TOKEN" must not reach huggingface.co.
    let p = Pgmld::start_with(Start {
        env: vec![("HF_HUB_OFFLINE".into(), "1".into())],
        ..Start::default()
    });
    let db = TestDb::create();
    let script = format!(
        r#"\set ON_ERROR_STOP 1
SELECT pgml.load_dataset('{file}');
CREATE VIEW pgml.imdb_shuffled_view AS
SELECT
label,
CASE WHEN label = 0 THEN 'negative'
WHEN label = 1 THEN 'positive'
ELSE 'neutral'
END AS class,
text
FROM pgml.imdb
WHERE label != -1
ORDER BY RANDOM();
CREATE VIEW pgml.imdb_train_view AS
SELECT *
FROM pgml.imdb_shuffled_view
LIMIT (SELECT COUNT(*) * 0.8 FROM pgml.imdb_shuffled_view);
CREATE VIEW pgml.imdb_test_view AS
SELECT *
FROM pgml.imdb_shuffled_view
OFFSET (SELECT COUNT(*) * 0.8 FROM pgml.imdb_shuffled_view);
SELECT pgml.tune(
'imdb_review_sentiment',
task => 'text-classification',
relation_name => 'pgml.imdb_train_view',
model_name => '{model}',
test_size => 0.2,
test_sampling => 'last',
hyperparams => '{{
"training_args" : {{
"learning_rate": 2e-5,
"per_device_train_batch_size": 16,
"per_device_eval_batch_size": 16,
"num_train_epochs": 1,
"weight_decay": 0.01,
"hub_token" : "YOUR_HUB_TOKEN",
"push_to_hub" : true
}},
"dataset_args" : {{ "text_column" : "text", "class_column" : "class" }}
}}'
);
SELECT pgml.transform(
task => '{{
"task": "text-classification",
"model": "imdb_review_sentiment"
}}'::JSONB,
inputs => ARRAY[
'I would not give this movie a rating, its not worthy. I watched it only because I am a Pfieffer fan. ',
'This movie was sooooooo good! It was hilarious! There are so many jokes that you can just watch the'
]
);
SELECT
LEFT(text, 100) AS truncated_text,
class,
predicted_class[0]->>'label' AS predicted_class,
(predicted_class[0]->>'score')::float AS score
FROM (
SELECT
LEFT(text, 100) AS text,
class,
pgml.transform(
task => '{{
"task": "text-classification",
"model": "imdb_review_sentiment"
}}'::JSONB,
inputs => ARRAY[text]
) AS predicted_class
FROM pgml.imdb_test_view
LIMIT 2
) AS subquery;
SELECT logs->>'epoch' AS epoch, logs->>'step' AS step, logs->>'train_loss' AS loss FROM pgml.logs WHERE model_id = (SELECT max(id) FROM pgml.models) AND jsonb_exists(logs, 'train_loss');
SELECT count(*) AS files FROM pgml.files;
"#,
        file = file.display(),
        model = model.display()
    );
    let (ok, out, err) = psql_script(&p, &db.name, &script, &[]);
    assert!(ok, "stdout: {out}\nstderr: {err}\nlog: {}", p.log_text());
    assert!(out.contains("(successful,text-classification,"), "{out}");
    assert!(out.contains(",t)"), "deployed: {out}");
    // 800 train-view rows, 20% held out: 640 / 16 = 40 steps.
    assert!(out.contains(" 1.0   | 40   |") || out.contains(" 1     | 40   |"), "{out}");
    assert!(
        err.contains("INFO:")
            && err.contains("\"train_runtime\"")
            && err.contains("\"eval_accuracy\""),
        "{err}"
    );
    assert!(err.contains("push_to_hub"), "push_to_hub is reported: {err}");
    // §6 of the guide: the tuned model by its project name, real time and per row.
    assert!(out.lines().any(|l| l.trim() == "transform"), "{out}");
    let realtime = out
        .lines()
        .find(|l| l.trim_start().starts_with("[{\"label\": "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(realtime.matches("\"score\": ").count(), 2, "{realtime}");
    let header =
        out.lines().find(|l| l.contains("truncated_text")).unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = header.split('|').map(str::trim).collect();
    assert_eq!(cols, ["truncated_text", "class", "predicted_class", "score"]);
    let after: Vec<&str> = out.split(header).nth(1).unwrap().lines().skip(2).take(3).collect();
    assert_eq!(after[2], "(2 rows)", "{out}");
    for row in &after[..2] {
        let f: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(
            ["negative", "positive"].contains(&f[1]) && ["negative", "positive"].contains(&f[2]),
            "{row}"
        );
        assert!(f[3].parse::<f64>().is_ok_and(|s| (0.5..=1.0).contains(&s)), "{row}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&model);
}

/// `model_name` as a Hub repo id (served by a local hub-compatible server into a fresh
/// cache) and as `pgml:<model id>` (a stored model, restored from pgml.files); the same
/// repo id in `pgml.transform`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_from_the_hub_and_by_stored_id() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 120);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let root = support::temp_dir("pgmld-tune-hub");
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        support::hub::FakeHub::put_model(
            &root,
            "pgmld-test/tiny-bert",
            "main",
            f,
            std::fs::read(model.join(f)).unwrap(),
        );
    }
    let hub = support::hub::FakeHub::start(root.clone());
    let cache = support::temp_dir("pgmld-tune-hub-cache");
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows2(&data)).await;
    let p = Pgmld::start_with(Start {
        env: vec![
            ("HF_ENDPOINT".into(), hub.url.clone()),
            ("HF_HUB_CACHE".into(), cache.display().to_string()),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN".into(), "1".into()),
        ],
        ..Start::default()
    });
    let c = p.connect(&db.name).await;
    let hp = r#"{"training_args": {"max_steps": 3, "logging_steps": 1}}"#;
    let row = c
        .query_one(tune_sql("hub", "reviews", "pgmld-test/tiny-bert", hp, "").as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(2)),
        ("successful".into(), "transformers".into())
    );
    assert!(
        cache.join("models--pgmld-test--tiny-bert").is_dir(),
        "downloaded into the hub cache layout"
    );
    let first: i64 = c.query_one("SELECT id FROM pgml.models", &[]).await.unwrap().get(0);
    let row = c
        .query_one(tune_sql("again", "reviews", &format!("pgml:{first}"), hp, "").as_str(), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let parent: Option<i64> = c
        .query_one("SELECT parent_id FROM pgml.models ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parent, Some(first));
    expect_err(&c, &tune_sql("again", "reviews", "pgml:999999", hp, ""), "58P01", "999999").await;
    // pgml.transform takes the same Hub repo id, and a revision.
    for task in [
        r#"{"task": "text-classification", "model": "pgmld-test/tiny-bert"}"#,
        r#"{"task": "text-classification", "model": "pgmld-test/tiny-bert", "revision": "main"}"#,
    ] {
        let sql = format!(
            "SELECT pgml.transform(task => '{task}'::jsonb, inputs => ARRAY['fine', 'awful'])"
        );
        let r: serde_json::Value = c
            .query_one(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()))
            .get(0);
        assert_eq!(r.as_array().map(Vec::len), Some(2), "{r}");
        assert!(r[0]["label"].as_str().unwrap().starts_with("LABEL_"), "{r}");
    }
    hub.stop();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_dir_all(&model);
}
