//! `pgml.transform` (text classification) through real clients: real-time calls and their
//! shapes, bad inputs, per-row use inside queries (simple and extended protocol), stored
//! models by id and project name, and 8 concurrent sessions sharing one loaded model.

mod support;

use serde_json::Value as Json;
use support::models::{connect_with_notices, create_table, imdb_balanced, tiny_bert};
use support::{expect_err, sqlstate, Pgmld, Start, TestDb};

/// A text-classification task in float32, whose scores these tests compare exactly (the
/// default, `auto`, runs bfloat16 on CPUs with AVX512-BF16 or AMX).
fn task(model: &str) -> String {
    serde_json::json!({"task": "text-classification", "model": model, "torch_dtype": "float32"})
        .to_string()
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One real-time call: `inputs` as a literal array.
async fn classify(
    c: &tokio_postgres::Client,
    model: &str,
    args: &str,
    inputs: &[&str],
) -> Result<Json, tokio_postgres::Error> {
    let arr: Vec<String> = inputs.iter().map(|s| lit(s)).collect();
    let sql = format!(
        "SELECT pgml.transform(task => {}::JSONB, args => {}::JSONB, inputs => ARRAY[{}])",
        lit(&task(model)),
        lit(args),
        arr.join(", ")
    );
    c.query_one(sql.as_str(), &[]).await.map(|r| r.get(0))
}

fn rows2(v: &[(String, &str)]) -> Vec<Vec<String>> {
    v.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect()
}

/// Reviews with ids, for per-row queries.
async fn reviews_table(db: &str, n: usize) -> Vec<(String, &'static str)> {
    let data = imdb_balanced(3000, n);
    let rows: Vec<Vec<String>> = data
        .iter()
        .enumerate()
        .map(|(i, (t, c))| vec![(i + 1).to_string(), t.clone(), c.to_string()])
        .collect();
    create_table(db, "reviews", &["id", "text", "class"], &rows).await;
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_calls_return_the_pipeline_shapes_and_check_inputs() {
    let data = imdb_balanced(0, 200);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    let p = Pgmld::start_with(Start {
        env: vec![("HF_HUB_OFFLINE".into(), "1".into())],
        ..Start::default()
    });
    let (c, notices) = connect_with_notices(&p.url(&db.name)).await;

    let got = classify(&c, &m, "{}", &["I loved it", "Awful, boring film", "ok"]).await.unwrap();
    let arr = got.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{got}");
    for r in arr {
        assert!(["LABEL_0", "LABEL_1"].contains(&r["label"].as_str().unwrap()), "{got}");
        let s = r["score"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&s), "softmax of the best class: {got}");
    }
    // top_k null: every class per input, best first, summing to 1; the first is the default answer.
    let all = classify(&c, &m, r#"{"top_k": null}"#, &["I loved it", "Awful, boring film", "ok"])
        .await
        .unwrap();
    for (ranked, best) in all.as_array().unwrap().iter().zip(arr) {
        let ranked = ranked.as_array().unwrap();
        assert_eq!(ranked.len(), 2);
        assert_eq!(&ranked[0], best);
        let (a, b) = (ranked[0]["score"].as_f64().unwrap(), ranked[1]["score"].as_f64().unwrap());
        assert!(a >= b && (a + b - 1.0).abs() < 1e-5, "{all}");
    }
    // Extended protocol with bind parameters, as drivers and the SDK send it.
    let params = c
        .query_one(
            "SELECT pgml.transform(task => $1, inputs => $2, args => $3)",
            &[&task(&m), &vec!["I loved it", "Awful, boring film", "ok"], &serde_json::json!({})],
        )
        .await
        .unwrap()
        .get::<_, Json>(0);
    assert_eq!(&params, &got);
    let top1 = classify(&c, &m, r#"{"top_k": 1}"#, &["ok"]).await.unwrap();
    assert_eq!(top1[0].as_array().unwrap().len(), 1);
    // Batching pads; scores must not depend on what else is in the batch.
    let alone = classify(&c, &m, "{}", &["ok"]).await.unwrap();
    assert!(
        (alone[0]["score"].as_f64().unwrap() - arr[2]["score"].as_f64().unwrap()).abs() < 1e-5,
        "{alone} vs {got}"
    );
    // Text pairs, positional arguments and a text task.
    let pair = c
        .query_one(
            &format!(
                "SELECT pgml.transform({}, '{{}}', ARRAY['{{\"text\": \"a great film\", \"text_pair\": \"I agree\"}}'])",
                lit(&task(&m))
            ),
            &[],
        )
        .await
        .unwrap()
        .get::<_, Json>(0);
    assert_eq!(pair.as_array().unwrap().len(), 1, "{pair}");
    let text_task = c
        .query_one("SELECT pgml.transform('text-classification', inputs => ARRAY['x'])::text", &[])
        .await
        .map_err(|e| e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default())
        .unwrap_err();
    // A text task parses as {"task": ...}; with no model it uses the task's documented
    // default, which is not in this offline cache: 58P01 naming it.
    assert!(
        text_task.contains("distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
        "the default model is named: {text_task}"
    );
    // A task object with only a model: the task comes from the model's config.json.
    let inferred = c
        .query_one(
            &format!(
                "SELECT pgml.transform('{{\"model\": \"{m}\"}}'::jsonb, inputs => ARRAY['a great film'])"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("task inferred from config.json: {e}"))
        .get::<_, Json>(0);
    assert!(inferred[0]["label"].is_string(), "{inferred}");

    // Longer than the model's 128 positions: truncated, and a NOTICE says so.
    let long = "great ".repeat(400);
    let r = classify(&c, &m, "{}", &["short", &long]).await.unwrap();
    assert_eq!(r.as_array().unwrap().len(), 2);
    let seen = notices.lock().unwrap().join("\n");
    assert!(
        seen.contains("NOTICE: 1 of 2 inputs exceed")
            && seen.contains("maximum of 128 tokens")
            && seen.contains("input 2: 402 tokens"),
        "{seen}"
    );

    // Bad inputs: SQLSTATE, a message naming the value, a usable session.
    let call = |t: &str, a: &str, i: &str| {
        format!("SELECT pgml.transform(task => {t}, args => {a}, inputs => {i})")
    };
    let tj = lit(&task(&m)) + "::JSONB";
    expect_err(&c, &call(&tj, "'{}'", "ARRAY['a', NULL]"), "22004", "inputs[2] is NULL").await;
    expect_err(&c, &call(&tj, "'{}'", "ARRAY[]::text[]"), "22023", "inputs is empty").await;
    expect_err(
        &c,
        &call("'{\"task\": \"text-classification\", \"model\": }'::JSONB", "'{}'", "ARRAY['a']"),
        "22P02",
        "jsonb",
    )
    .await;
    expect_err(
        &c,
        &call("'{\"task\": \"text-classification\", \"model\": '", "'{}'", "ARRAY['a']"),
        "22P02",
        "not valid JSON",
    )
    .await;
    expect_err(
        &c,
        &call(
            &lit(&serde_json::json!({"task": "sentiment", "model": m}).to_string()),
            "'{}'",
            "ARRAY['a']",
        ),
        "22023",
        "unknown task \"sentiment\"",
    )
    .await;
    expect_err(
        &c,
        &call(
            &lit(&serde_json::json!({"task": "summarization", "model": m}).to_string()),
            "'{}'",
            "ARRAY['a']",
        ),
        "0A000",
        "summarization",
    )
    .await;
    expect_err(
        &c,
        &call(&tj, "'{\"topk\": 2}'", "ARRAY['a']"),
        "22023",
        "unknown args key \"topk\"",
    )
    .await;
    let dtype = |d: &str| {
        lit(&serde_json::json!({"task": "text-classification", "model": m, "dtype": d}).to_string())
    };
    expect_err(&c, &call(&dtype("int3"), "'{}'", "ARRAY['a']"), "22023", "unknown dtype \"int3\"")
        .await;
    expect_err(&c, &call(&dtype("float16"), "'{}'", "ARRAY['a']"), "0A000", "bfloat16").await;
    // bfloat16 autocast answers the same shapes, its scores within bfloat16's precision.
    let exact = classify(&c, &m, "{}", &["I loved it", "ok"]).await.unwrap();
    let sql = call(&dtype("bfloat16"), "'{}'", "ARRAY['I loved it', 'ok']");
    let low: Json = c.query_one(sql.as_str(), &[]).await.unwrap().get(0);
    for (a, b) in exact.as_array().unwrap().iter().zip(low.as_array().unwrap()) {
        let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!((x - y).abs() < 0.05, "{exact} vs {low}");
    }
    let missing = expect_err(
        &c,
        &call(&lit(&task("nobody/no-such-model")), "'{}'", "ARRAY['a']"),
        "58P01",
        "nobody/no-such-model",
    )
    .await;
    assert!(
        missing.contains("Hugging Face Hub") && missing.contains("project"),
        "says where it looked: {missing}"
    );
    expect_err(&c, &call(&lit(&task("pgml:424242")), "'{}'", "ARRAY['a']"), "58P01", "424242")
        .await;
    expect_err(
        &c,
        &call(&lit(&task("/no/such/dir")), "'{}'", "ARRAY['a']"),
        "58P01",
        "/no/such/dir",
    )
    .await;
    let base = support::models::minilm_dir().display().to_string();
    expect_err(
        &c,
        &call(&lit(&task(&base)), "'{}'", "ARRAY['a']"),
        "22023",
        "not a text-classification model",
    )
    .await;
    // A stored model of another task (a conversation project) is refused by name.
    c.batch_execute(
        "WITH p AS (INSERT INTO pgml.projects (name, task) VALUES ('chatty', 'conversation') RETURNING id) \
         INSERT INTO pgml.models (project_id, algorithm, status) SELECT id, 'llama', 'successful' FROM p",
    )
    .await
    .unwrap();
    let other = expect_err(
        &c,
        &call(&lit(&task("chatty")), "'{}'", "ARRAY['a']"),
        "22023",
        "trained for conversation",
    )
    .await;
    assert!(other.contains("project chatty"), "{other}");
    // Inside a transaction an error aborts it, as in Postgres.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.query(&call(&tj, "'{}'", "ARRAY[NULL::text]"), &[]).await.is_err());
    let e = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();

    // One load per dtype for all of the above, whatever the calls did (a bfloat16 model
    // is a cache entry of its own: requests of one entry share forward passes).
    assert_eq!(p.metric("pgmld_model_loads_total"), 2.0, "{}", p.metrics_text());
    let _ = std::fs::remove_dir_all(&model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_row_calls_are_batched_and_keep_postgres_semantics() {
    let data = imdb_balanced(0, 200);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    let reviews = reviews_table(&db.name, 80).await;
    let p = Pgmld::start();
    let c = p.connect(&db.name).await;
    let tj = lit(&task(&m)) + "::JSONB";

    // Reference: each review alone, real time.
    let mut expected = Vec::new();
    for (t, _) in &reviews {
        expected.push(classify(&c, &m, "{}", &[t]).await.unwrap()[0].clone());
    }
    let batches_before = p.metric("pgmld_inference_batches_total");
    let inputs_before = p.metric("pgmld_inference_inputs_total");

    // Simple protocol (batch_execute is simple; query() is extended): through psql-like text.
    let sql = format!(
        "SELECT id::int AS id, class, pgml.transform(task => {tj}, inputs => ARRAY[text]) AS p \
         FROM reviews WHERE id::int <= 60 ORDER BY id::int DESC"
    );
    let rows = c.simple_query(&sql).await.unwrap();
    let data_rows: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(data_rows.len(), 60);
    for (k, r) in data_rows.iter().enumerate() {
        let id: usize = r.get(0).unwrap().parse().unwrap();
        assert_eq!(id, 60 - k, "ORDER BY id DESC is kept");
        let got: Json = serde_json::from_str(r.get(2).unwrap()).unwrap();
        assert_eq!(got.as_array().unwrap().len(), 1);
        assert_eq!(got[0]["label"], expected[id - 1]["label"], "row {id}");
        assert!(
            (got[0]["score"].as_f64().unwrap() - expected[id - 1]["score"].as_f64().unwrap()).abs()
                < 1e-5
        );
    }
    let batches = p.metric("pgmld_inference_batches_total") - batches_before;
    let inputs = p.metric("pgmld_inference_inputs_total") - inputs_before;
    assert_eq!(inputs, 60.0);
    assert!(
        batches <= 4.0,
        "60 rows in {batches} forward passes: batched across rows, not one per row"
    );

    // Extended protocol with parameters in the call and around it; the guide's shape with
    // predicted_class[0]->>'label' outside; a CTE, a join and LIMIT around the call.
    let rows = c
        .query(
            "WITH scored AS ( \
               SELECT id::int AS id, pgml.transform(task => $1::jsonb, inputs => ARRAY[text]) AS predicted_class \
               FROM reviews WHERE id::int % 2 = $2 ) \
             SELECT r.id::int, s.predicted_class[0]->>'label' AS label, (s.predicted_class[0]->>'score')::float8 AS score \
             FROM reviews r JOIN scored s ON s.id = r.id::int ORDER BY r.id::int LIMIT 5",
            &[
                &serde_json::json!({"task": "text-classification", "model": m, "torch_dtype": "float32"}),
                &0i32,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![2, 4, 6, 8, 10]);
    for r in &rows {
        let id: i32 = r.get(0);
        assert_eq!(r.get::<_, String>(1), expected[id as usize - 1]["label"].as_str().unwrap());
    }
    // Nested in a column-free expression; INSERT … SELECT; zero rows.
    let labels: Vec<String> = c
        .query(&format!("SELECT pgml.transform({tj}, inputs => ARRAY[text])->0->>'label' AS label FROM reviews ORDER BY id::int LIMIT 3"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        labels,
        (0..3).map(|i| expected[i]["label"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    );
    c.batch_execute("CREATE TABLE preds (id int, p jsonb)").await.unwrap();
    let n = c.execute(&format!("INSERT INTO preds SELECT id::int, pgml.transform({tj}, inputs => ARRAY[text]) FROM reviews"), &[]).await.unwrap();
    assert_eq!(n, 80);
    let none = c
        .query(
            &format!("SELECT pgml.transform({tj}, inputs => ARRAY[text]) FROM reviews WHERE false"),
            &[],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    // Uncommitted and temporary data of the session is visible to the row source.
    c.batch_execute(&format!(
        "BEGIN; CREATE TEMP TABLE tmp_reviews AS SELECT * FROM reviews WHERE id::int <= 3; \
         CREATE TABLE tx_preds AS SELECT id, pgml.transform({tj}, inputs => ARRAY[text]) AS p FROM tmp_reviews; COMMIT"
    ))
    .await
    .unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM tx_preds", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);

    // Where a per-row call cannot be served: 0A000 with a rewrite in the hint.
    let hint = expect_err(
        &c,
        &format!("SELECT id FROM reviews WHERE pgml.transform({tj}, inputs => ARRAY[text])->0->>'label' = 'LABEL_1'"),
        "0A000",
        "SELECT",
    )
    .await;
    println!("unsupported-form hint: {hint}");
    // A NULL text in some row names that row.
    c.batch_execute("INSERT INTO reviews VALUES ('81', NULL, 'negative')").await.unwrap();
    expect_err(
        &c,
        &format!(
            "SELECT pgml.transform({tj}, inputs => ARRAY[text]) FROM reviews ORDER BY id::int"
        ),
        "22004",
        "row 81",
    )
    .await;
    // An error in the row source is Postgres' own.
    expect_err(
        &c,
        &format!("SELECT pgml.transform({tj}, inputs => ARRAY[text]) FROM no_such_table"),
        "42P01",
        "no_such_table",
    )
    .await;
    let _ = std::fs::remove_dir_all(&model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_models_by_id_and_project_serve_8_sessions_with_one_load() {
    let data = imdb_balanced(0, 160);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let db = TestDb::create();
    create_table(&db.name, "train", &["text", "class"], &rows2(&data)).await;
    // Requests wait up to 20 ms for company, so concurrent sessions share passes.
    let p = Pgmld::start_with(Start {
        env: vec![("PGMLD_TRANSFORM_MAX_WAIT_MS".into(), "20".into())],
        ..Start::default()
    });
    let c = p.connect(&db.name).await;
    let tune = format!(
        "SELECT status FROM pgml.tune('tiny_sentiment', task => 'text-classification', relation_name => 'train', \
         model_name => '{}', test_size => 0.25, hyperparams => '{{\"training_args\": {{\"num_train_epochs\": 2, \"learning_rate\": 1e-3}}}}')",
        model.display()
    );
    let status: String = c
        .query_one(tune.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()))
        .get(0);
    assert_eq!(status, "successful");
    let id: i64 = c.query_one("SELECT id FROM pgml.models", &[]).await.unwrap().get(0);
    // The local checkpoint is gone: what serves now comes from pgml.files.
    std::fs::remove_dir_all(&model).unwrap();

    let probe = ["A wonderful, moving film.", "Terrible acting and a dull plot."];
    let by_id = classify(&c, &format!("pgml:{id}"), "{}", &probe)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    let by_project = classify(&c, "tiny_sentiment", "{}", &probe).await.unwrap();
    assert_eq!(by_id, by_project, "pgml:{id} and the project's deployed model are the same model");
    for r in by_id.as_array().unwrap() {
        assert!(
            ["negative", "positive"].contains(&r["label"].as_str().unwrap()),
            "labels from id2label: {by_id}"
        );
    }
    let loads = p.metric("pgmld_model_loads_total");

    // 8 sessions at once, different inputs each; every answer equals the one-at-a-time one.
    let reviews = imdb_balanced(2000, 40);
    let mut expected = Vec::new();
    for (t, _) in &reviews {
        expected.push(classify(&c, "tiny_sentiment", "{}", &[t]).await.unwrap()[0].clone());
    }
    let batches_before = p.metric("pgmld_inference_batches_total");
    let mut handles = Vec::new();
    for s in 0..8 {
        let client = p.connect(&db.name).await;
        let mine: Vec<(usize, String)> =
            (0..reviews.len()).filter(|i| i % 8 == s).map(|i| (i, reviews[i].0.clone())).collect();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for round in 0..3 {
                for (i, t) in &mine {
                    let name = if round % 2 == 0 {
                        "tiny_sentiment".to_string()
                    } else {
                        format!("pgml:{id}")
                    };
                    let r = classify(&client, &name, "{}", &[t]).await.unwrap();
                    out.push((*i, r[0].clone()));
                }
            }
            out
        }));
    }
    let mut answered = 0;
    for h in handles {
        for (i, r) in h.await.unwrap() {
            assert_eq!(r["label"], expected[i]["label"], "review {i}");
            assert!(
                (r["score"].as_f64().unwrap() - expected[i]["score"].as_f64().unwrap()).abs()
                    < 1e-5,
                "review {i}: {r} vs {}",
                expected[i]
            );
            answered += 1;
        }
    }
    assert_eq!(answered, 3 * 40);
    let passes = p.metric("pgmld_inference_batches_total") - batches_before;
    println!("120 concurrent one-input calls ran in {passes} forward passes");
    assert!(passes <= 60.0, "concurrent requests share forward passes: {passes} for 120 calls");
    assert_eq!(p.metric("pgmld_model_loads_total"), loads, "no reload across sessions");
    assert_eq!(loads, 1.0, "pgml:{id} and the project name share one cached model");
    assert_eq!(p.metric("pgmld_models_cached"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_evicts_least_recently_used_models_past_its_budget() {
    let data = imdb_balanced(0, 100);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let (a, b) = (tiny_bert(&texts), tiny_bert(&texts));
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let db = TestDb::create();
    // Room for one tiny model (~0.6 MB of weights) but not two.
    let p = Pgmld::start_with(Start {
        env: vec![("PGMLD_TRANSFORM_CACHE_BYTES".into(), "1000000".into())],
        ..Start::default()
    });
    let c = p.connect(&db.name).await;
    for (model, loads, cached) in [(&a, 1.0, 1.0), (&a, 1.0, 1.0), (&b, 2.0, 1.0), (&a, 3.0, 1.0)] {
        classify(&c, model, "{}", &["fine"]).await.unwrap();
        assert_eq!(
            (p.metric("pgmld_model_loads_total"), p.metric("pgmld_models_cached")),
            (loads, cached),
            "after {model}"
        );
    }
    let bytes = p.metric("pgmld_model_cache_bytes");
    assert!(bytes > 100_000.0 && bytes < 1_000_000.0, "{bytes}");
    // A bigger budget keeps both.
    let p2 = Pgmld::start();
    let c2 = p2.connect(&db.name).await;
    for m in [&a, &b, &a, &b] {
        classify(&c2, m, "{}", &["fine"]).await.unwrap();
    }
    assert_eq!(
        (p2.metric("pgmld_model_loads_total"), p2.metric("pgmld_models_cached")),
        (2.0, 2.0)
    );
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}
